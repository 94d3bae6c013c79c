"""WaveNet: causal in time, a normalised distribution, trainable; its IAF student: invertible, a
density, and pulled towards the teacher by probability density distillation."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from robench_testing import smooth_signals
from robench.data import Dataset
from robench.errors import RobenchError
from robench.zoo.encoders import fit
from robench.zoo.wavenet import (
    CausalWaveNet, IAFStudent, WaveNet, discretize, distillation_loss, level_values, relaxed_log_density,
    teacher_bits_per_dim_of_samples, wavenet,
)


def make(levels: int = 16, **kwargs) -> WaveNet:
    torch.manual_seed(0)
    return WaveNet(1, levels=levels, **kwargs).eval()


def train_tiny(model: WaveNet, x: torch.Tensor, steps: int = 60) -> WaveNet:
    fit("wavenet", model, lambda batch, _: -model.log_likelihood(batch).mean() / batch[0].numel(), x,
        steps=steps, batch_size=32, seed=0, lr=1e-2)
    return model.eval()


@pytest.fixture(scope="module")
def signals() -> Dataset:
    return smooth_signals()


@pytest.fixture(scope="module")
def trained(signals) -> WaveNet:
    torch.set_num_threads(1)
    return train_tiny(make(channels=16, dilations=(1, 2, 4, 8)), signals.x_train)


@torch.no_grad()
def _assert_causal_by_perturbation(model: WaveNet, length: int) -> None:
    x = torch.rand(2, 1, length, generator=torch.Generator().manual_seed(0))
    base = model(x)
    for t in range(length):
        changed = x.clone()
        changed[:, :, t:] = 1.0 - changed[:, :, t:]  # perturb step t and everything after it
        moved = (model(changed) - base).abs().amax(dim=(0, 1, 2))  # per output step
        assert moved[: t + 1].max().item() == 0.0, f"the distribution at step <= {t} depends on steps >= {t}"
        if t < length - 1:
            assert moved[t + 1].item() > 0, f"the distribution at step {t + 1} ignores step {t}"


def test_untrained_wavenet_is_causal():
    _assert_causal_by_perturbation(make(channels=8, dilations=(1, 2, 4)), 12)


def test_trained_wavenet_is_causal_by_gradient_and_by_perturbation(trained, signals):
    _assert_causal_by_perturbation(trained, 24)
    x = signals.x_test[:1].clone().requires_grad_(True)
    logits = trained(x)
    for t in (0, 7, 23):
        (grad,) = torch.autograd.grad(logits[..., t].logsumexp(1).sum() + logits[..., t].max(), x, retain_graph=True)
        assert grad[..., t:].abs().max().item() == 0.0, f"the output at step {t} has a gradient from steps >= {t}"
        if t > 0:
            assert grad[..., :t].abs().max().item() > 0


@torch.no_grad()
def test_streamed_steps_equal_the_parallel_pass():
    torch.manual_seed(0)
    net = CausalWaveNet(2, 5, channels=8, dilations=(1, 2, 4, 8)).eval()
    v = torch.randn(3, 2, 20)
    stream = net.stream(3, device=v.device, dtype=v.dtype)
    streamed = torch.stack([stream.step(v[:, :, t - 1] if t else None) for t in range(20)], dim=-1)
    assert torch.allclose(streamed, net(v), atol=1e-5)
    model = make(levels=8, channels=8, dilations=(1, 2))
    x = torch.rand(2, 1, 10)
    wave_stream = model.stream(2, device=x.device)
    steps = torch.stack([wave_stream.step(x[:, :, t - 1] if t else None) for t in range(10)], dim=-1)
    assert torch.allclose(steps, model(x), atol=1e-5)


@torch.no_grad()
def test_likelihood_sums_to_one_over_all_level_sequences():
    model = make(levels=3, channels=4, dilations=(1, 2))
    sequences = torch.tensor(list(itertools.product(range(3), repeat=4)), dtype=torch.float32).view(-1, 1, 4) / 2
    assert torch.logsumexp(model.log_likelihood(sequences), dim=0).exp().item() == pytest.approx(1.0, abs=1e-4)


def test_discretize_and_levels():
    x = torch.tensor([0.0, 1 / 15, 0.49, 1.0, 1.2, -0.1]).view(1, 1, 6)
    assert discretize(x, 16).flatten().tolist() == [0, 1, 7, 15, 15, 0]
    assert make(levels=16).discretize(x).flatten().tolist() == [0, 1, 7, 15, 15, 0]
    assert torch.allclose(level_values(16)[discretize(x, 16)], torch.tensor([0, 1 / 15, 7 / 15, 1, 1, 0]).view(1, 1, 6))


def test_training_lowers_bits_per_dim(trained, signals):
    untrained = make(channels=16, dilations=(1, 2, 4, 8))
    before, after = untrained.bits_per_dim(signals.x_test), trained.bits_per_dim(signals.x_test)
    assert before > math.log2(16) - 0.5  # about uniform at initialisation
    assert after < before - 1.0


def test_relaxed_teacher_density_integrates_to_one():
    logits = torch.randn(1, 8, generator=torch.Generator().manual_seed(0)) * 2
    x = torch.linspace(0, 1, 20001)
    density = relaxed_log_density(logits.expand(len(x), 8), x).exp()
    assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-3)
    # it peaks at the most probable level
    assert abs(x[density.argmax()].item() - logits.argmax().item() / 7) < 1e-3


@torch.no_grad()
def test_student_inverts_and_its_log_density_is_a_density():
    torch.manual_seed(0)
    student = IAFStudent(1, flows=2, channels=8, dilations=(1, 2, 4))
    for p in student.parameters():
        p.add_(0.2 * torch.randn_like(p))  # away from the identity initialisation
    z = torch.randn(3, 1, 12)
    x, _ = student.transform(z)
    assert torch.allclose(student.invert(x), z, atol=1e-3)
    # one step: the density of x = S(z) over (0, 1) integrates to one
    grid = torch.linspace(1e-4, 1 - 1e-4, 4001).view(-1, 1, 1)
    _, log_p = student.transform(student.invert(grid, margin=1e-5))
    assert torch.trapezoid(log_p.exp(), grid.flatten()).item() == pytest.approx(1.0, abs=1e-2)


def test_distillation_raises_the_teacher_likelihood_of_student_samples(trained):
    teacher = trained.requires_grad_(False)
    torch.manual_seed(0)
    student = IAFStudent(1, flows=2, channels=8, dilations=(1, 2, 4, 8))
    before = teacher_bits_per_dim_of_samples(student, teacher, 128, 24)
    shape = torch.zeros(32, 1, 24)
    fit("parallel-wavenet", student, lambda batch, g: distillation_loss(student, teacher, torch.randn(batch.shape, generator=g)),
        shape, steps=60, batch_size=32, seed=0, lr=1e-2)
    after = teacher_bits_per_dim_of_samples(student, teacher, 128, 24)
    assert after < before - 0.5, (before, after)
    teacher.requires_grad_(True)


def test_zoo_wavenet_is_cached_and_refuses_images(signals, tiny_digits):
    first = wavenet(signals, steps=3)
    again = wavenet(signals, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert set(first.robench_meta) >= {"test_bits_per_dim", "train_bits_per_dim", "train_seconds"}
    with pytest.raises(RobenchError, match="sequences"):
        wavenet(tiny_digits, steps=3)
