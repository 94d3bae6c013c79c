"""Shared fixtures: a private model cache per test session and small toy targets."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's ~/.cache/robench (a shared cache may be set explicitly)."""
    if "ROBENCH_TEST_CACHE" in os.environ:
        os.environ["ROBENCH_CACHE"] = os.environ["ROBENCH_TEST_CACHE"]
    else:
        os.environ["ROBENCH_CACHE"] = str(tmp_path_factory.mktemp("robench-cache"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny tensors: one thread avoids thread hand-offs dominating, above all on a
    shared 2-core machine (measured 30x slower with 2 busy OpenMP threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LinearBinary(nn.Module):
    """logits = [0, w·x + b]: the L-inf distance to the boundary is |w·x + b| / ||w||_1."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.fixture
def linear_binary() -> LinearBinary:
    generator = torch.Generator().manual_seed(0)
    return LinearBinary(torch.randn(1, 4, 4, generator=generator))
