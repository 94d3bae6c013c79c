"""Randomized blocks (resize_pad.py, noise.py): fresh draws per call, reproducible per seed."""
import pytest
import torch
from torch import nn

from robench.defenses.noise import GaussianNoiseVote, gaussian_noise
from robench.defenses.resize_pad import RandomResizePad, random_resize_pad
from robench.errors import RobenchError
from robench.target import is_differentiable, is_randomized


def _model(classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes)).eval()


def _images(n=16, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_resize_pad_flags_shapes_and_geometry():
    block = random_resize_pad(nn.Identity(), min_size=5)
    assert is_differentiable(block) and is_randomized(block)
    ones = torch.ones(200, 1, 8, 8)
    out = block.transform(ones)
    assert out.shape == ones.shape and out.min() >= 0 and out.max() <= 1 + 1e-6
    mass = out.flatten(1).sum(1)  # a resized all-ones image is a size x size square
    sizes = mass.sqrt().round()
    assert torch.allclose(mass, sizes**2, atol=1e-3)
    assert set(sizes.tolist()) == {5.0, 6.0, 7.0, 8.0}
    offsets = {tuple(image.nonzero().amin(0).tolist()) for image in out[:, 0]}  # top-left corners
    assert len(offsets) > 1
    assert random_resize_pad(nn.Identity(), min_size=8).transform(ones[:3]).equal(ones[:3])


def test_resize_pad_differs_across_draws_and_repeats_per_seed():
    x = _images()
    a, b = RandomResizePad(nn.Identity(), min_size=6, seed=3), RandomResizePad(nn.Identity(), min_size=6, seed=3)
    first, second = a(x), a(x)
    assert not torch.equal(first, second)
    assert torch.equal(first, b(x)) and torch.equal(second, b(x))


def test_resize_pad_gradient_flows():
    x = _images(4).requires_grad_(True)
    random_resize_pad(_model())(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_gaussian_noise_votes_are_log_frequencies_with_zero_gradient():
    block = gaussian_noise(_model(), sigma=0.5, votes=9)
    assert not is_differentiable(block) and is_randomized(block)
    x = _images(8).requires_grad_(True)
    logits = block(x)
    assert logits.shape == (8, 4)
    assert torch.allclose(logits.exp().sum(1), torch.ones(8), atol=1e-5)
    counts = logits.exp() * (9 + 4 * block.smoothing) - block.smoothing
    assert torch.allclose(counts, counts.round(), atol=1e-4) and torch.allclose(counts.sum(1), torch.full((8,), 9.0), atol=1e-4)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().max() == 0
    assert block.bpda_forward(x).shape == (8, 4)


def test_gaussian_noise_differs_across_draws_and_repeats_per_seed():
    x = _images(64)
    a = GaussianNoiseVote(_model(), sigma=1.0, votes=3, seed=1)
    b = GaussianNoiseVote(_model(), sigma=1.0, votes=3, seed=1)
    first, second = a(x), a(x)
    assert not torch.equal(first, second)
    assert torch.equal(first, b(x)) and torch.equal(second, b(x))


def test_gaussian_noise_with_tiny_sigma_agrees_with_the_model():
    model, x = _model(), _images(32)
    block = gaussian_noise(model, sigma=1e-6, votes=3)
    assert torch.equal(block(x).argmax(1), model(x).argmax(1))


@pytest.mark.parametrize(
    "factory, params, message",
    [
        (random_resize_pad, {"min_size": 0}, "min_size must be a positive integer"),
        (random_resize_pad, {"min_size": 7.0}, "min_size must be a positive integer"),
        (gaussian_noise, {"sigma": 0}, "sigma must be a number > 0"),
        (gaussian_noise, {"sigma": "0.1"}, "sigma must be a number > 0"),
        (gaussian_noise, {"votes": 0}, "votes must be a positive integer"),
    ],
)
def test_bad_parameters(factory, params, message):
    with pytest.raises(RobenchError, match=message):
        factory(nn.Identity(), **params)


def test_resize_pad_min_size_larger_than_the_image():
    with pytest.raises(RobenchError, match="exceeds the image size"):
        random_resize_pad(nn.Identity(), min_size=9)(torch.rand(1, 1, 8, 8))
