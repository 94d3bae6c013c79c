"""Sequence purifiers: outputs stay in the eps_defend box and in [0, 1], follow the density, leave
clean signals nearly as they are, and declare the flags they have; images are refused."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from robench.cards import load_defense_card
from robench_testing import smooth_signals
from robench.data import Dataset, dataset_from_arrays, load_digits
from robench.errors import RobenchError
from robench.registry import defenses
from robench.resolve import build_defense, defense_cards
from robench.target import is_differentiable, is_randomized, reseed
from robench.zoo.encoders import fit
from robench.zoo.wavenet import IAFStudent, WaveNet
from robench.defenses.sequence_purify import (
    ParallelPurify, WaveNetPurify, parallel_purify, purify_sequence, wavenet_purify,
)

LEVELS = 16


class PrefersLevel(nn.Module):
    """A stand-in density whose every conditional puts its mode on one level."""

    def __init__(self, level: int, levels: int = LEVELS) -> None:
        super().__init__()
        self.level, self.levels, self.in_channels = level, levels, 1

    def stream(self, n: int, *, device: torch.device, dtype: torch.dtype) -> "PrefersLevel":
        self.n = n
        return self

    def step(self, previous: torch.Tensor | None) -> torch.Tensor:
        logits = -torch.abs(torch.arange(self.levels, dtype=torch.float32) - self.level)
        return logits.view(1, -1, 1).expand(self.n, -1, 1).clone()


class Classifier(nn.Module):
    def __init__(self, length: int = 24, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(length, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.fixture(scope="module")
def signals() -> Dataset:
    return smooth_signals()


@pytest.fixture(scope="module")
def trained_wavenet(signals) -> WaveNet:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = WaveNet(1, levels=32, channels=16, dilations=(1, 2, 4, 8))
    fit("wavenet", model, lambda batch, _: -model.log_likelihood(batch).mean() / batch[0].numel(), signals.x_train,
        steps=80, batch_size=32, seed=0, lr=1e-2)
    return model.eval()


def test_purified_values_move_towards_the_mode_within_the_box():
    x = torch.rand(5, 1, 30, generator=torch.Generator().manual_seed(0))
    eps = 0.15
    down = purify_sequence(PrefersLevel(0), x, eps_defend=eps)
    assert (down - x).abs().max() <= eps + 1e-6 and down.min() >= 0 and down.max() <= 1
    assert (down <= x + 1e-6).all()  # the mode is level 0: never upwards
    # the lowest level inside the box (values k / 15), or the box's floor when x - eps is already 0
    expected = torch.ceil((x - eps).clamp(min=0) * 15 - 1e-4) / 15
    assert torch.allclose(down, expected.clamp(max=x + eps), atol=1e-6)
    up = purify_sequence(PrefersLevel(LEVELS - 1), x, eps_defend=eps)
    assert (up >= x - 1e-6).all() and (up - x).abs().max() <= eps + 1e-6
    assert torch.equal(purify_sequence(PrefersLevel(0), x, eps_defend=0.0), x)  # no room: unchanged


def test_a_box_narrower_than_a_level_still_holds():
    x = torch.full((2, 1, 8), 0.52)
    out = purify_sequence(PrefersLevel(0), x, eps_defend=0.01)  # no level k / 15 within 0.01 of 0.52
    # the only candidate is the nearest level, 8 / 15 = 0.533, clipped into the box: 0.53, not the mode's side
    assert torch.allclose(out, torch.full_like(x, 0.53))


def test_several_passes_stay_in_the_box(trained_wavenet, signals):
    x = (signals.x_test[:8] + 0.06 * torch.randn(8, 1, 24, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    for passes in (1, 3):
        out = purify_sequence(trained_wavenet, x, eps_defend=0.1, passes=passes)
        assert (out - x).abs().max() <= 0.1 + 1e-6 and out.min() >= 0 and out.max() <= 1
    assert torch.equal(purify_sequence(trained_wavenet, x, eps_defend=0.1), purify_sequence(trained_wavenet, x, eps_defend=0.1))


def jump_signals(n: int = 240, length: int = 24, seed: int = 0) -> Dataset:
    """Two-valued signals (4/15 or 11/15) that flip at most once: a density a small WaveNet learns sharply."""
    rng = np.random.default_rng(seed)
    flip_at = rng.integers(1, length + 6, n)  # about a fifth never flip
    start_high = rng.integers(0, 2, n).astype(bool)
    high = (np.arange(length)[None] >= flip_at[:, None]) ^ start_high[:, None]
    return dataset_from_arrays("jumps", np.where(high, 11 / 15, 4 / 15).astype(np.float32)[:, None], start_high.astype(int))


def test_clean_signals_of_a_sharp_density_are_fixed_and_noise_is_removed():
    data = jump_signals()
    torch.manual_seed(0)
    model = WaveNet(1, levels=LEVELS, channels=16, dilations=(1, 2, 4, 8))
    fit("wavenet", model, lambda batch, _: -model.log_likelihood(batch).mean() / batch[0].numel(), data.x_train,
        steps=40, batch_size=32, seed=0, lr=1e-2)
    model.eval()
    eps, x = 2 / 15, data.x_train[:64]
    unchanged = (purify_sequence(model, x, eps_defend=eps) - x).abs() < 1e-6
    assert unchanged.float().mean() >= 0.95, unchanged.float().mean()
    noisy = (x + eps / 2 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    restored = (purify_sequence(model, noisy, eps_defend=eps) - x).abs() < 1e-6
    assert restored.float().mean() >= 0.9, restored.float().mean()


def test_noisy_smooth_signals_are_pulled_back_towards_the_clean_ones(trained_wavenet, signals):
    # On noisy smooth signals a small WaveNet is not sharp: clean signals themselves move (about half of
    # eps_defend on average, measured), but noise of size eps_defend is largely undone.
    eps = 3 / 31  # three of the 32 levels
    x = signals.x_train[:64]
    noise = eps * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    noisy = (x + noise).clamp(0, 1)
    purified = purify_sequence(trained_wavenet, noisy, eps_defend=eps)
    assert (purified - x).abs().mean() < 0.75 * (noisy - x).abs().mean()


def test_wavenet_purify_is_non_differentiable_with_identity_bpda(signals):
    assert "wavenet_purify" in defenses
    target = wavenet_purify(Classifier(), data=signals, eps_defend=0.05, steps=3)
    assert isinstance(target, WaveNetPurify) and is_differentiable(target) is False and is_randomized(target) is False
    x = signals.x_test[:4].clone().requires_grad_(True)
    assert torch.equal(target.bpda(x), x)
    target(x).sum().backward()
    assert x.grad is not None and x.grad.abs().max() == 0  # the naive gradient: exactly zero
    with pytest.raises(RobenchError, match="eps_defend"):
        wavenet_purify(Classifier(), data=signals, eps_defend=2.0, steps=3)
    with pytest.raises(RobenchError, match="passes"):
        wavenet_purify(Classifier(), data=signals, passes=0, steps=3)


def test_parallel_purify_is_randomized_differentiable_and_in_the_box(signals):
    assert "parallel_purify" in defenses
    target = parallel_purify(Classifier(), data=signals, eps_defend=0.05, keep=0.5, steps=3, teacher_steps=3, flows=2)
    assert isinstance(target, ParallelPurify) and is_differentiable(target) is True and is_randomized(target) is True
    x = signals.x_test[:4]
    a, b = target.transform(x), target.transform(x)
    assert not torch.equal(a, b)  # fresh noise per forward pass
    for out in (a, b):
        assert (out - x).abs().max() <= 0.05 + 1e-6 and out.min() >= 0 and out.max() <= 1
    reseed(target, 7)
    first = target.transform(x)
    reseed(target, 7)
    assert torch.equal(first, target.transform(x))  # seeded draws
    x_grad = x.clone().requires_grad_(True)
    target(x_grad).logsumexp(1).sum().backward()
    assert torch.isfinite(x_grad.grad).all() and x_grad.grad.abs().max() > 0
    kept = parallel_purify(Classifier(), data=signals, eps_defend=0.05, keep=1.0, steps=3, teacher_steps=3, flows=2)
    assert is_randomized(kept) is False
    assert torch.allclose(kept.transform(x), x, atol=1e-3)  # nothing re-drawn: the flow decodes its own code
    with pytest.raises(RobenchError, match="keep"):
        parallel_purify(Classifier(), data=signals, keep=1.5, steps=3, teacher_steps=3)


@pytest.mark.parametrize("name", ["wavenet-purify", "parallel-purify"])
def test_cards_declare_what_the_blocks_are_and_refuse_images(name, signals):
    card = load_defense_card(name)
    assert card.paper and card.description and card.default is False
    assert card.differentiable is not None and card.randomized is not None
    params = {"steps": 3, **({"teacher_steps": 3, "flows": 2} if name == "parallel-purify" else {})}
    block = defenses.get(card.factory)(Classifier(), data=signals, **{**card.params, **params})
    assert is_differentiable(block) is card.differentiable and is_randomized(block) is card.randomized
    with pytest.raises(RobenchError) as refused:
        defense_cards((name,), load_digits())
    assert "supports sequences" in str(refused.value) and "\n" not in str(refused.value)


def test_purifiers_refuse_image_data_when_called_directly():
    digits = load_digits()
    with pytest.raises(RobenchError, match="sequences"):
        wavenet_purify(Classifier(), data=digits, steps=3)
    with pytest.raises(RobenchError, match="sequences"):
        parallel_purify(Classifier(), data=digits, steps=3, teacher_steps=3)
