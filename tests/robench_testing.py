"""Helpers shared by test modules (a plain module: conftest files of subfolders would shadow it)."""
import math

import numpy as np
import torch
from torch import nn

from robench import rng
from robench.data import dataset_from_arrays
from robench.testing import ToySignalNet


def write_suite(directory, text: str, name: str = "suite.toml") -> str:
    """Write an attack-suite card for a test and return its path."""
    path = directory / name
    path.write_text(text)
    return str(path)


#: a suite small enough for end-to-end tests: PGD (white-box) and SPSA (gradient-free)
TINY_SUITE = """
name = "tiny"
[[attack]]
attack = "pgd"
[attack.params]
steps = 10
rel_stepsize = 0.25
[[attack]]
attack = "spsa"
[attack.params]
steps = 15
samples = 32
"""


def at_distance(model, distance: float, norm: str = "linf", n: int = 10) -> torch.Tensor:
    """Inputs whose ``norm`` distance to a LinearBinary model's boundary is exactly ``distance``."""
    generator = torch.Generator().manual_seed(3)
    w = model.w.flatten()
    x = torch.rand(n, 16, generator=generator) * 0.2 + 0.4
    score = x @ w + model.b
    dual = w.abs().sum() if norm == "linf" else w.norm()  # the dual norm of w
    wanted = torch.where(score >= 0, 1.0, -1.0) * distance * dual
    return (x + ((wanted - score) / w.dot(w)).unsqueeze(1) * w).view(n, 1, 4, 4)


def conv_problem(key: str, n: int = 10, channels: int = 3, side: int = 6, pin_bounds: bool = False):
    """A small random conv net, inputs it classifies as ``y``, and per-example seeds under ``key``.

    ``pin_bounds`` sets the first two inputs to the data bounds (0 and 1), where clipping matters.
    """
    generator = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * side * side, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    x = torch.rand(n, channels, side, side, generator=generator)
    if pin_bounds:
        x[0] = 0.0
        x[1] = 1.0
    y = model(x).argmax(1)
    return model.eval(), x, y, rng.example_seeds(0, key, torch.arange(n))


#: a fixed 1-D conv net: three classes from 1 x 12 sequences (robench.testing's own toy)
SignalNet = ToySignalNet


def assert_batch_independent(attack, chunked_attack, model, x, y, threat, seeds, rows=(0, 5, 9)) -> None:
    """An example's proposal and query count do not depend on its batch or the chunk size, and the
    same seeds give the same result (``chunked_attack``: the same attack with a small max_batch)."""
    batched = attack.run(model, x, y, threat, seeds=seeds)
    chunked = chunked_attack.run(model, x, y, threat, seeds=seeds)
    assert torch.allclose(chunked.x_adv, batched.x_adv, atol=1e-5)
    assert torch.equal(chunked.queries, batched.queries)
    for i in rows:
        single = attack.run(model, x[i : i + 1], y[i : i + 1], threat, seeds=seeds[i : i + 1])
        assert torch.allclose(single.x_adv, batched.x_adv[i : i + 1], atol=1e-5)
        assert single.queries.item() == batched.queries[i].item()
    again = attack.run(model, x, y, threat, seeds=seeds)
    assert torch.equal(again.x_adv, batched.x_adv) and torch.equal(again.queries, batched.queries)
    return batched


def smooth_signals(n: int = 240, length: int = 24, seed: int = 0):
    """Noisy sinusoids in [0, 1], the class picks the frequency: a tiny stand-in for MNIST-1D."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(length)
    x = 0.5 + 0.3 * np.sin(2 * math.pi * (y[:, None] + 1) * t / length + rng.uniform(0, 2 * math.pi, (n, 1)))
    x = np.clip(x + 0.02 * rng.standard_normal((n, length)), 0, 1).astype(np.float32)[:, None, :]
    return dataset_from_arrays("smooth", x, y)
