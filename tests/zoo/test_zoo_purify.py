"""PixelDefend: purified images stay within eps_defend, on the level grid, and follow the density."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robench.defenses.purify import PixelDefend, pixeldefend, purify
from robench.errors import RobenchError
from robench.registry import defenses
from robench.zoo.pixelcnn import PixelCNN


class PrefersLevel(nn.Module):
    """A stand-in density whose every conditional puts its mode on one grey level."""

    def __init__(self, level: int, levels: int = 17) -> None:
        super().__init__()
        self.level, self.levels, self.in_channels = level, levels, 1

    def discretize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.clamp(0, 1) * (self.levels - 1)).long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = -torch.abs(torch.arange(self.levels, dtype=x.dtype) - self.level)
        return logits.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[1:]).clone()


def test_purified_pixels_move_towards_the_mode_within_eps():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = 0.125
    out = purify(PrefersLevel(0), x, eps_defend=eps)
    assert ((out * 16) - torch.round(out * 16)).abs().max() < 1e-5  # on the 17-level grid
    assert (out - x).abs().max() <= eps + 0.5 / 16 + 1e-6  # within eps (plus the rounding of the input itself)
    assert (out <= torch.round(x * 16) / 16 + 1e-6).all()  # never above the input: the mode is black
    assert torch.equal(out, torch.clamp(torch.ceil((x - eps) * 16 - 1e-6), min=0).minimum(torch.round(x * 16)) / 16)
    assert torch.equal(purify(PrefersLevel(16), x, eps_defend=0.0), torch.round(x * 16) / 16)


def test_purify_with_a_real_pixelcnn_is_deterministic():
    torch.manual_seed(0)
    density = PixelCNN(1, channels=4, layers=2).eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a, b = purify(density, x, eps_defend=0.1), purify(density, x, eps_defend=0.1)
    assert torch.equal(a, b) and a.shape == x.shape


def test_defense_is_registered_non_differentiable_with_identity_bpda(tiny_digits):
    assert "pixeldefend" in defenses
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    target = pixeldefend(classifier, data=tiny_digits, eps_defend=0.125, steps=3)
    assert isinstance(target, PixelDefend) and target.differentiable is False and target.randomized is False
    x = tiny_digits.x_test[:2]
    assert torch.equal(target.bpda(x), x)
    assert target(x).shape == (2, 10)
    with pytest.raises(RobenchError, match="eps_defend"):
        pixeldefend(classifier, data=tiny_digits, eps_defend=2.0, steps=3)


def test_plain_gradients_through_pixeldefend_are_zero_not_an_error():
    """A naive evaluation (PGD without BPDA) must see the masking: zero gradient, not a crash."""
    import torch
    from torch import nn

    from robench.defenses.purify import PixelDefend
    from robench.target import loss_and_gradient
    from robench.zoo.pixelcnn import PixelCNN

    torch.manual_seed(0)
    density = PixelCNN(in_channels=1, levels=4, channels=4, layers=2).eval()
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    defended = PixelDefend(classifier, density, eps_defend=0.25).eval()
    x = torch.rand(2, 1, 4, 4)
    _, grad, _ = loss_and_gradient(defended, x, torch.zeros(2, dtype=torch.long), max_batch=8)
    assert torch.count_nonzero(grad) == 0
