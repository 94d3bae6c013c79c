"""Interval bound propagation (Gowal et al. 2018, "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models", Sec. 3).

Intervals go through the layers as center and radius (affine layers: W c + b and |W| r), ReLU and
max pooling map endpoints to endpoints. The input interval is the L-inf box of radius epsilon
intersected with the data bounds; for an L2 ball that box contains the ball (sound, looser), and
the first affine run (the layers before the first nonlinearity) is intersected with the exact
bound over the ball, W x +- epsilon ||W_row||_2. The margins z_y - z_j are bounded through the
affine run after the last nonlinearity folded into the specification C = e_y - e_j (Gowal et al.,
Eq. 7), which is tighter than subtracting logit bounds. Layers: see ``robench.certify.layers``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robench.certify.base import (
    CERTIFIED, COUNTEREXAMPLE, UNKNOWN, Certification, Certifier, Timer, check_examples,
)
from robench.certify.layers import (
    DTYPE, Op, affine_matrix, first_affine, input_box, read_and_check, read_layers, row_norms, run_layers,
    split_last_affine,
)
from robench.hyperparameters import Int, declare
from robench.registry import certifiers
from robench.threat import ThreatModel


def _propagate(ops: list[Op], x: Tensor, threat: ThreatModel) -> tuple[Tensor, Tensor, list[Op], bool]:
    """Intervals after everything up to the last nonlinearity; returns (lower, upper, the final
    affine ops, whether the network has no nonlinearity at all)."""
    body, tail = split_last_affine(ops)
    lower, upper = input_box(x, threat)
    if not body:
        return lower, upper, tail, True
    head = first_affine(body)
    for op in head:
        lower, upper = op.interval(lower, upper)
    if head and not threat.ball.is_box:  # row_norms: the L2 ball's dual norm
        mid = run_layers(head, x.to(DTYPE))
        spread = threat.epsilon * row_norms(head, tuple(x.shape[1:]), x.device).view(mid.shape[1:])
        lower, upper = torch.maximum(lower, mid - spread), torch.minimum(upper, mid + spread)
    for op in body[len(head) :]:
        lower, upper = op.interval(lower, upper)
    return lower, upper, tail, False


def _folded(tail: list[Op], shape: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    return affine_matrix(tail, shape, device)


def _bound_rows(rows: Tensor, offset: Tensor, lower: Tensor, upper: Tensor, x: Tensor, threat: ThreatModel,
                exact_l2: bool) -> Tensor:
    """Lower bounds of rows @ h + offset over the box [lower, upper] (rows: N x m x n), and, when
    h is the input itself under an L2 ball, over the ball too (the max of both is sound)."""
    lower, upper = lower.flatten(1), upper.flatten(1)
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    bound = torch.einsum("nmk,nk->nm", rows, center) - torch.einsum("nmk,nk->nm", rows.abs(), radius) + offset
    if exact_l2 and not threat.ball.is_box:
        ball = torch.einsum("nmk,nk->nm", rows, x.flatten(1).to(DTYPE)) - threat.epsilon * threat.ball.dual_norm(rows, dim=2) + offset
        bound = torch.maximum(bound, ball)
    return bound


@torch.no_grad()
def ibp_margin_bounds(target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                      ops: list[Op] | None = None) -> Tensor:
    """(N, classes): lower bounds of z_y - z_j over the ball (column y is 0)."""
    ops = read_layers(target, "ibp") if ops is None else ops
    lower, upper, tail, affine_only = _propagate(ops, x, threat)
    weight, bias = _folded(tail, tuple(lower.shape[1:]), x.device)
    y = y.to(x.device)
    rows = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # (N, classes, n): e_y - e_j through the tail
    offset = bias[y].unsqueeze(1) - bias.unsqueeze(0)
    bound = _bound_rows(rows, offset, lower, upper, x, threat, affine_only)
    return bound.scatter(1, y.view(-1, 1), 0.0)


@torch.no_grad()
def ibp_logit_bounds(target: nn.Module, x: Tensor, threat: ThreatModel, *, ops: list[Op] | None = None) -> tuple[Tensor, Tensor]:
    """(lower, upper), each (N, classes): bounds of the logits over the ball."""
    ops = read_layers(target, "ibp") if ops is None else ops
    lower, upper, tail, affine_only = _propagate(ops, x, threat)
    weight, bias = _folded(tail, tuple(lower.shape[1:]), x.device)
    rows = torch.cat([weight, -weight]).unsqueeze(0).expand(len(x), -1, -1)
    offset = torch.cat([bias, -bias])
    bound = _bound_rows(rows, offset, lower, upper, x, threat, affine_only)
    k = len(bias)
    return bound[:, :k], -bound[:, k:]


def decide(target: nn.Module, x: Tensor, y: Tensor, margins: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(status, counterexample, min margin bound): a misclassified clean x is its own
    counterexample; certified where every margin bound j != y is > 0; else unknown."""
    with torch.no_grad():
        correct = target(x).argmax(1) == y
    worst = margins.scatter(1, y.view(-1, 1), math.inf).amin(1)
    status = torch.full((len(x),), UNKNOWN, dtype=torch.int8, device=x.device)
    status[correct & (worst > 0)] = CERTIFIED
    status[~correct] = COUNTEREXAMPLE
    return status, x.detach().clone(), worst


@certifiers.register("ibp")
class IBP(Certifier):
    """Interval bound propagation; certified where every margin's lower bound is positive.

    Keyword-only: ``max_batch`` examples bounded at a time.
    """

    name = "ibp"
    norms = ("linf", "l2")

    hyperparameters = declare(
        max_batch=Int(256, "examples bounded at a time", ge=1),
    )

    def __init__(self, *, max_batch: int = 256) -> None:
        self._set(locals())

    def check(self, target: nn.Module, threat: ThreatModel, example_shape: tuple[int, ...] | None = None) -> None:
        self.check_norm(threat)
        read_layers(target, self.name)

    def margin_bounds(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        return ibp_margin_bounds(target, x, y, threat)

    def logit_bounds(self, target: nn.Module, x: Tensor, threat: ThreatModel) -> tuple[Tensor, Tensor]:
        return ibp_logit_bounds(target, x, threat)

    def certify(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                seeds: Tensor | None = None) -> Certification:
        check_examples(x, y)
        self.check_norm(threat)
        parts = []
        for start in range(0, len(x), self.max_batch):
            timer = Timer()
            xb, yb = x[start : start + self.max_batch], y[start : start + self.max_batch]
            ops = read_and_check(target, xb, threat, self.name)
            margins = ibp_margin_bounds(target, xb, yb, threat, ops=ops)
            status, counterexample, worst = decide(target, xb, yb, margins)
            seconds = torch.full((len(xb),), timer.elapsed() / len(xb), dtype=torch.float64)
            parts.append(Certification(status, counterexample, seconds, {"margin_lower": worst}))
        return Certification.cat(parts)
