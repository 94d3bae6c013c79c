"""Verify, then count: the harness re-checks every proposal before it counts as broken.

An attack's own success flag is never trusted. A proposal breaks an example only if it lies in
the threat model's ball (within 1e-6) and in the data bounds, is finite, and a fresh forward pass
misclassifies it. For a randomized target (by its tags, which the caller computed once, with its
card's flags; from the module tree when not given), the prediction is the majority over ``draws``
forward passes (ties count as correct: the attacker must win outright). Forwards run in chunks of
``robench.batching.chunk_rows`` rows unless the caller says otherwise, like every other forward.
:func:`attack_and_verify` is the
only path from an attack to a counted break: work units and diagnostic probes both take it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from robench.batching import chunk_rows
from robench.tags import TargetTags, target_tags
from robench.target import check_logits, logits_in_chunks, margin, repeat_rows
from robench.threat import ThreatModel

if TYPE_CHECKING:
    from robench.attacks.base import Attack, AttackResult

TOLERANCE = 1e-6
#: forward passes that decide a randomized target's prediction (majority vote)
PREDICTION_DRAWS = 15


@dataclass
class Verification:
    broken: Tensor  # bool: counts as broken
    in_threat: Tensor  # bool: inside ball and bounds
    misclassified: Tensor  # bool: by the fresh forward pass(es)
    rejected: Tensor  # bool: misclassified, but outside the threat model: not counted
    distance: Tensor
    margin: Tensor
    draws: int


@torch.no_grad()
def predict_correct(target: nn.Module, x: Tensor, y: Tensor, *, draws: int = 1, max_batch: int | None = None,
                    tags: TargetTags | None = None) -> tuple[Tensor, Tensor]:
    """Per example: (correct by majority over ``draws`` if ``tags`` say randomized, mean margin)."""
    tags = target_tags(target) if tags is None else tags
    draws = draws if tags.randomized else 1
    max_batch = chunk_rows(x) if max_batch is None else max_batch
    wrong_votes = torch.zeros(len(x), device=x.device)
    margins = torch.zeros(len(x), device=x.device)
    for logits, rows in _draw_logits(target, x, draws, max_batch, tags.stacks_draws):
        m = margin(logits, y[rows])
        wrong_votes[rows] += (logits.argmax(1) != y[rows]).float()
        margins[rows] += m
    return wrong_votes * 2 <= draws, margins / draws


def majority_vote(target: nn.Module, tags: TargetTags, *, draws: int = PREDICTION_DRAWS,
                  max_batch: int | None = None):
    """``vote(x, y) -> (misclassified by the majority over draws, target rows per example)``: what
    the verifier will ask, offered to attacks on a randomized target so that none stops on a break
    the verifier would not confirm (``robench.target.confirmed_breaks``)."""
    def vote(x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        correct, _ = predict_correct(target, x, y, draws=draws, max_batch=max_batch, tags=tags)
        return ~correct, draws

    return vote


def _draw_logits(target: nn.Module, x: Tensor, draws: int, max_batch: int, stacks: bool) -> Iterator[tuple[Tensor, slice]]:
    """(float32 logits of one draw, the rows of x they belong to), ``draws`` times per row: one
    call per draw, or, for a target whose draws are per row (``stacks``: the ``stacks_draws``
    tag), blocks of examples stacked ``draws`` times in calls of at most ``max_batch`` rows (when
    ``draws`` fit one)."""
    if draws == 1 or draws > max_batch or not stacks:
        for _ in range(draws):
            yield check_logits(logits_in_chunks(target, x, max_batch), len(x)).float(), slice(0, len(x))
        return
    block = max(1, max_batch // draws)
    for start in range(0, len(x), block):
        rows = slice(start, min(start + block, len(x)))
        stacked = check_logits(logits_in_chunks(target, repeat_rows(x[rows], draws), max_batch), draws * len(x[rows]))
        yield from ((logits, rows) for logits in stacked.float().view(draws, len(x[rows]), -1))


def verify(
    target: nn.Module,
    x: Tensor,
    x_adv: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    draws: int = 1,
    max_batch: int | None = None,
    tags: TargetTags | None = None,
) -> Verification:
    """Re-check proposals ``x_adv`` for clean inputs ``x`` with labels ``y`` (``tags``: the target's,
    computed once by the caller; default: from its tree)."""
    tags = target_tags(target) if tags is None else tags
    x_adv = x_adv.detach().to(x.dtype)
    in_threat = threat.contains(x_adv, x, tolerance=TOLERANCE)
    lo, hi = threat.bounds
    forwardable = torch.nan_to_num(x_adv, nan=lo, posinf=hi, neginf=lo)  # only for the forward pass
    correct, margins = predict_correct(target, forwardable, y, draws=draws, max_batch=max_batch, tags=tags)
    misclassified = ~correct
    return Verification(
        broken=in_threat & misclassified,
        in_threat=in_threat,
        misclassified=misclassified,
        rejected=misclassified & ~in_threat,
        distance=threat.distance(forwardable, x),
        margin=margins,
        draws=draws if tags.randomized else 1,
    )


def attack_and_verify(
    attack: Attack,
    target: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    seeds: Tensor,
    attack_target: nn.Module | None = None,
    draws: int = 1,
    max_batch: int | None = None,
    tags: TargetTags | None = None,
) -> tuple[AttackResult, Verification]:
    """Run ``attack`` on ``attack_target`` (default: ``target``; e.g. its BPDA/EOT-adapted view or
    a transfer surrogate), then verify every proposal on ``target`` itself (with its ``tags``)."""
    result = attack.run(target if attack_target is None else attack_target, x, y, threat, seeds=seeds)
    return result, verify(target, x, result.x_adv, y, threat, draws=draws, max_batch=max_batch, tags=tags)
