"""Adaptive attacks (robench/attacks/adaptive.py): BPDA keeps predictions and restores gradients;
EOT averages randomized targets; PGD through them breaks what plain PGD could not."""
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench import rng
from robench.attacks.adaptive import AdaptiveTarget, adaptive_target, needs_adaptation
from robench.data import load_digits
from robench.defenses.jpeg import jpeg
from robench.defenses.noise import gaussian_noise
from robench.defenses.preprocessing import BitDepth, bit_depth
from robench.defenses.resize_pad import random_resize_pad
from robench.defenses.thermometer import Thermometer
from robench.errors import RobenchError
from robench.registry import attacks
from robench.tags import target_tags
from robench.target import QueryCounter, repeat_rows
from robench.threat import ThreatModel
from robench.verify import verify
from robench.zoo.cnn import SmallCNN
from robench.zoo.training import seeded_init, train_classifier


def _linear(classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes)).eval()


def _images(n=8, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _input_gradient(target: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.clone().requires_grad_(True)
    F.cross_entropy(target(x), y, reduction="sum").backward()
    return x.grad


@pytest.fixture(scope="module")
def digits_cnn():
    """A cnn trained briefly on digits (not the cached zoo model: tests stay self-contained)."""
    data = load_digits()
    model = seeded_init(0, lambda: SmallCNN(1, 8, 8, 10, width_mult=4))  # the zoo cnn, narrower: fast
    train_classifier(model, data.x_train, data.y_train, epochs=6, seed=0, lr=3e-3, batch_size=128)
    return model.eval(), data


def test_plain_models_are_returned_unchanged():
    model = _linear()
    assert not needs_adaptation(model)
    assert adaptive_target(model) is model
    assert adaptive_target(QueryCounter(model)).target is model  # still the same wrapper, unchanged


@pytest.mark.parametrize("make", [lambda m: bit_depth(m, bits=3), lambda m: jpeg(m, quality=50)])
def test_bpda_gives_gradients_where_the_raw_target_gives_none_and_keeps_the_forward(make):
    target = make(_linear())
    x, y = _images(), torch.arange(8) % 3
    assert needs_adaptation(target)
    adaptive = adaptive_target(target, eot_samples=5)
    assert isinstance(adaptive, AdaptiveTarget) and adaptive.queries_per_row == 1  # deterministic: no EOT
    assert _input_gradient(target, x, y).abs().max() == 0
    assert (_input_gradient(adaptive, x, y).flatten(1).abs().sum(1) > 0).all()
    with torch.no_grad():
        assert torch.equal(adaptive(x), target(x))
    x_grad = x.clone().requires_grad_(True)
    assert torch.equal(adaptive(x_grad).detach(), target(x))  # bit-identical with the BPDA path active too


def test_identity_bpda_gradient_is_the_models_gradient_at_the_transformed_input():
    model = _linear()
    target = bit_depth(model, bits=2)
    x, y = _images(), torch.arange(8) % 3
    expected = _input_gradient(model, target.transform(x), y)
    assert torch.allclose(_input_gradient(adaptive_target(target), x, y), expected, atol=1e-6)


def test_nested_wrappers_compose():
    model = _linear()
    inner = BitDepth(model, bits=3)
    outer = jpeg(inner, quality=60)  # jpeg(bit_depth(model)), both masked
    wrapped = QueryCounter(nn.Sequential(nn.Identity(), outer))
    x, y = _images(), torch.arange(8) % 3
    assert needs_adaptation(wrapped)
    adaptive = adaptive_target(wrapped)
    assert _input_gradient(wrapped, x, y).abs().max() == 0
    assert _input_gradient(adaptive, x, y).abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(adaptive(x), model(inner.transform(outer.transform(x))))


def test_a_card_can_mark_a_preprocessed_block_non_differentiable():
    block = bit_depth(_linear())
    block.differentiable = True  # as if the class forgot: the card's flag, in the tags, marks it
    assert not needs_adaptation(block)
    tags = target_tags(block, overrides={"differentiable": False})
    assert needs_adaptation(block, tags) and tags.non_differentiable == (block,)
    x, y = _images(), torch.arange(8) % 3
    assert _input_gradient(adaptive_target(block, tags=tags), x, y).abs().sum() > 0
    assert block.differentiable is True  # nothing written onto the module


class _SignModel(nn.Module):
    """Non-differentiable whole forward that declares its own stand-in."""

    differentiable = False

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.sign(self.model(x))

    def bpda_forward(self, x):
        return torch.tanh(self.model(x))


def test_bpda_forward_is_used_for_the_gradient_only():
    target = _SignModel(_linear())
    x, y = _images(), torch.arange(8) % 3
    adaptive = adaptive_target(target)
    assert torch.equal(adaptive(x.clone().requires_grad_(True)).detach(), target(x))
    # chain rule: the loss's gradient at the exact output, through the stand-in's Jacobian
    upstream = F.softmax(target(x), 1) - F.one_hot(y, 3)
    x_req = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(torch.tanh(target.model(x_req)), x_req, upstream)
    assert torch.allclose(_input_gradient(adaptive, x, y), expected, atol=1e-6)
    nested = adaptive_target(QueryCounter(target))  # found inside a wrapper too
    assert torch.allclose(_input_gradient(nested, x, y), expected, atol=1e-6)
    assert not target._forward_hooks  # hooks removed after each call


def test_thermometer_bpda_uses_the_soft_ramps():
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4, 3))
    target = Thermometer(classifier, levels=4)
    x, y = _images(), torch.arange(8) % 3
    assert _input_gradient(target, x, y).abs().max() == 0
    assert (_input_gradient(adaptive_target(target), x, y).flatten(1).abs().sum(1) > 0).all()


def test_non_differentiable_target_without_a_stand_in_warns(caplog):
    target = _linear()
    target.differentiable = False
    with caplog.at_level(logging.WARNING, logger="robench.attacks.adaptive"):
        adaptive_target(target)
    assert "no Preprocessed block or bpda_forward" in caplog.text


def test_eot_averages_log_probabilities_over_draws():
    target = random_resize_pad(_linear(), min_size=5, seed=7)
    twin = random_resize_pad(_linear(), min_size=5, seed=7)  # same weights, same draws
    adaptive = adaptive_target(target, eot_samples=6)
    assert adaptive.randomized and adaptive.queries_per_row == 6
    assert adaptive.stacked  # random resizing draws per row: the six draws are one stacked forward
    x = _images(4)
    with torch.no_grad():
        out = adaptive(x)
        expected = twin(repeat_rows(x, 6)).log_softmax(1).view(6, 4, -1).mean(0)
    assert torch.allclose(out, expected, atol=1e-6)
    assert (torch.logsumexp(out, 1) <= 1e-5).all()  # a mean of log-probabilities (Hoelder: sums to <= 1)


class _SharedDraw(nn.Module):
    """A randomized block that draws one shift per call, shared by all of the call's rows."""

    randomized = True

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.model = _linear(classes)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + torch.randn((), generator=self.generator))


def test_eot_of_a_block_with_one_draw_per_call_makes_one_call_per_draw():
    """Stacking needs independent_rows: stacked copies of such a block would share a draw."""
    target, twin = _SharedDraw(seed=3), _SharedDraw(seed=3)
    adaptive = adaptive_target(target, eot_samples=5)
    assert not adaptive.stacked
    x = _images(4)
    with torch.no_grad():
        out = adaptive(x)
        expected = torch.stack([twin(x).log_softmax(1) for _ in range(5)]).mean(0)
    assert torch.allclose(out, expected, atol=1e-6)


def test_stacked_eot_splits_the_draws_over_calls_of_at_most_chunk_rows():
    from robench.batching import chunk_rows

    x = _images(3000)  # chunk_rows of 8 x 8 inputs is 4096: one draw per call
    calls = []
    target = random_resize_pad(_linear(), min_size=5, seed=1)
    target.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    with torch.no_grad():
        adaptive_target(target, eot_samples=3)(x)
        assert calls == [3000] * 3 and chunk_rows(x) == 4096
        calls.clear()
        adaptive_target(target, eot_samples=10)(x[:1000])  # 4 copies per call: 4 + 4 + 2
    assert calls == [4000, 4000, 2000]


def test_eot_gradient_variance_falls_with_samples():
    x, y = _images(4), torch.arange(4) % 3
    variances = []
    for samples in (1, 8):
        adaptive = adaptive_target(random_resize_pad(_linear(), min_size=4, seed=samples), eot_samples=samples)
        grads = torch.stack([_input_gradient(adaptive, x, y) for _ in range(10)])
        variances.append(grads.var(0).sum().item())
    assert variances[0] > 3 * variances[1] > 0  # about 8x: the variance of a mean of 8 draws


def test_gaussian_noise_gets_bpda_and_eot():
    target = gaussian_noise(_linear(), sigma=0.3, votes=5)
    x, y = _images(), torch.arange(8) % 3
    adaptive = adaptive_target(target, eot_samples=4)
    assert adaptive.uses_bpda and adaptive.randomized
    assert _input_gradient(target, x, y).abs().max() == 0
    assert (_input_gradient(adaptive, x, y).flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("samples", [0, -1, 2.5, True])
def test_bad_eot_samples(samples):
    with pytest.raises(RobenchError, match="eot_samples must be a positive integer"):
        adaptive_target(bit_depth(_linear()), eot_samples=samples)


def test_pgd_through_bpda_breaks_bit_depth_that_plain_pgd_does_not(digits_cnn):
    model, data = digits_cnn
    target = bit_depth(model, bits=3).eval()
    x, y = data.x_test[:60], data.y_test[:60]
    with torch.no_grad():
        correct = target(x).argmax(1) == y
    x, y = x[correct], y[correct]
    threat = ThreatModel("linf", 0.15)
    pgd = attacks.get("pgd")(steps=20, rel_stepsize=2.5 / 20)
    seeds = rng.example_seeds(0, "adaptive-test", torch.arange(len(x)))
    broken = {}
    for name, attacked in (("raw", target), ("bpda", adaptive_target(target))):
        result = pgd.run(attacked, x, y, threat, seeds=seeds)
        broken[name] = verify(target, x, result.x_adv, y, threat).broken.float().mean().item()
    assert broken["bpda"] >= 0.5
    assert broken["bpda"] >= broken["raw"] + 0.3
