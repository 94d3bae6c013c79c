"""What robench knows about a target: a module mapping inputs in bounds to logits, plus two flags.

A defense sets ``differentiable = False`` when its forward pass has no useful gradient (JPEG,
quantisation), so gradient attacks go through BPDA, and ``randomized = True`` when two forward
passes of the same input may differ, so gradients use EOT and predictions use repeated draws.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from robench.errors import RobenchError


def is_differentiable(target: nn.Module) -> bool:
    return bool(getattr(target, "differentiable", True))


def is_randomized(target: nn.Module) -> bool:
    return bool(getattr(target, "randomized", False))


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Logit of the true class minus the largest other logit (negative = misclassified).

    This is the margin loss of Carlini & Wagner (2017) used by Uesato et al. (2018), Eq. 4.
    """
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return true - others.amax(dim=1)


def check_logits(logits: Tensor, n_rows: int) -> Tensor:
    """Fail clearly on a target that returns the wrong shape or non-finite logits."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n_rows or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise RobenchError(f"the target returned {shape} for {n_rows} inputs; it must return logits of shape (N, classes >= 2)")
    if not bool(torch.isfinite(logits).all()):
        raise RobenchError("the target returned NaN or infinite logits; check the model and its input range")
    return logits


@torch.no_grad()
def logits_in_chunks(target: nn.Module, x: Tensor, max_batch: int) -> Tensor:
    """Forward ``x`` through ``target`` in chunks of at most ``max_batch`` rows."""
    if len(x) <= max_batch:
        return target(x)
    return torch.cat([target(x[start : start + max_batch]) for start in range(0, len(x), max_batch)])


class QueryCounter(nn.Module):
    """Counts the rows a wrapped target is asked to classify (for attacks run by other libraries)."""

    def __init__(self, target: nn.Module) -> None:
        super().__init__()
        self.target = target
        self.rows = 0
        self.differentiable = is_differentiable(target)
        self.randomized = is_randomized(target)

    def forward(self, x: Tensor) -> Tensor:
        # an EOT wrapper asks its target for several draws per row: count what the target answered
        self.rows += len(x) * int(getattr(self.target, "queries_per_row", 1))
        return self.target(x)
