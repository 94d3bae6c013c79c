"""PixelCNN: causal in raster order, a normalised distribution, and trainable."""
from __future__ import annotations

import itertools

import pytest
import torch

from robench.zoo.pixelcnn import PixelCNN


def make(levels: int = 17, **kwargs) -> PixelCNN:
    torch.manual_seed(0)
    return PixelCNN(1, levels=levels, **kwargs).eval()


@torch.no_grad()
def test_output_at_pixel_i_ignores_pixels_from_i_on():
    model = make(channels=8, layers=4)
    x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    base = model(x)
    for p in range(36):
        row, col = divmod(p, 6)
        changed = x.clone()
        changed[0, 0, row, col] = 1.0 - changed[0, 0, row, col]
        moved = (model(changed) - base).abs().amax(dim=(0, 1, 2)).flatten()  # per output pixel
        assert moved[: p + 1].max().item() == 0.0, f"output at or before pixel {p} depends on pixel {p}"
        if p < 35:  # and later pixels do see it
            assert moved[p + 1 :].max().item() > 0


@torch.no_grad()
def test_likelihood_sums_to_one_over_all_images():
    model = make(levels=3, channels=4, layers=2)
    images = torch.tensor(list(itertools.product(range(3), repeat=4)), dtype=torch.float32).view(-1, 1, 2, 2) / 2
    total = torch.logsumexp(model.log_likelihood(images), dim=0).exp().item()
    assert total == pytest.approx(1.0, abs=1e-4)


def test_discretize_rounds_to_levels():
    model = make(levels=17)
    x = torch.tensor([0.0, 1 / 16, 0.49, 1.0, 1.2]).view(1, 1, 1, 5)
    assert model.discretize(x).flatten().tolist() == [0, 1, 8, 16, 16]


def test_training_lowers_bits_per_dim(tiny_digits):
    from robench.zoo.encoders import fit

    model = make(channels=8, layers=3)
    x = tiny_digits.x_train
    before = model.bits_per_dim(x)
    fit("pixelcnn", model, lambda batch, _: -model.log_likelihood(batch).mean(), x, steps=40, batch_size=32, seed=0, lr=1e-2)
    with torch.no_grad():
        assert model.bits_per_dim(x) < before - 0.5
