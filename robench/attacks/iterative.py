"""The loop every iterative attack shares: attack only what is still standing (AutoAttack's rule).

Croce & Hein (2020) run each attack, and each restart of it, only on the examples no earlier run
broke; robench's PGD, APGD-CE/DLR, APGD-T, FAB-T and the foolbox adapter all do the same, so the
loop is written once here. :class:`IterativeAttack` owns

* the **remaining set**: a run sees only the examples still robust; an example keeps the first
  proposal that breaks it, else the best one by the run's ``score`` (else the latest);
* **restarts and target classes** as a sequence of :class:`Run` s, run ``i`` drawing its random
  start from stream ``i`` of the attack's declared :class:`robench.rng.Layout`;
* the **check between runs** where a run cannot tell which proposals break (one forward each);
* **exact per-example query counting**: passes per example times the target's ``queries_per_row``;
* the **chunk size**, :func:`robench.batching.chunk_rows` unless ``max_batch`` is given.

A subclass says what one run does (:meth:`IterativeAttack.attack_run`). :class:`SteppedAttack`
adds the loop of projected gradient steps with early exit at the first misclassified iterate
(PGD's, Madry et al. 2018), so an attack that is a new step rule (MI-FGSM) is a few lines.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack, AttackResult
from robench.batching import chunk_rows
from robench.target import confirmed_breaks, cross_entropy, logits_in_chunks, loss_and_gradient, queries_per_row
from robench.threat import ThreatModel


@dataclass
class Batch:
    """The examples one run attacks: inputs, labels, seeds and their positions in the whole batch."""

    target: nn.Module
    x: Tensor
    y: Tensor
    threat: ThreatModel
    seeds: Tensor
    max_batch: int
    rows: Tensor

    def subset(self, rows: Tensor) -> Batch:
        """The examples at positions ``rows`` of the whole batch (``self`` must be the whole batch)."""
        return Batch(self.target, self.x[rows], self.y[rows], self.threat, self.seeds[rows], self.max_batch, rows)


@dataclass(frozen=True)
class Run:
    """One run of an attack: its restart and, for a targeted attack, the rank of its target class
    and the per-example target classes (of the whole batch). The i-th run of
    :meth:`IterativeAttack.runs` draws from random stream i."""

    restart: int
    classes: Tensor | None = None
    target: int = 0


@dataclass
class Setup:
    """What an attack learns before its runs: forward passes it spent per example, the examples
    already misclassified (no run needs them) and anything its runs need (``context``)."""

    passes: int = 0
    done: Tensor | None = None
    context: Any = None


@dataclass
class RunResult:
    """One run's answer per example of its batch.

    ``used``: forward(+backward) passes; ``broken``: whether the proposal is misclassified (None:
    the run cannot say; the base checks with one counted forward before the next run); ``score``:
    higher is better among proposals that do not break (None: the latest proposal wins);
    ``confirmed``: ``broken`` was confirmed by the target's ``vote`` where it has one, at a cost of
    ``extra`` target rows per example (else the base confirms it).
    """

    proposal: Tensor
    used: Tensor
    broken: Tensor | None = None
    score: Tensor | None = None
    confirmed: bool = False
    extra: Tensor | None = None


class IterativeAttack(Attack):
    """Runs (restarts, target classes) on the examples still robust; subclasses define one run."""

    #: how runs' random streams lie among an example's counters (``robench.rng.Layout``)
    streams: ClassVar[rng.Layout] = rng.DEFAULT_LAYOUT
    restarts: int = 1
    max_batch: int | None = None

    def prepare(self, batch: Batch) -> Setup:
        """Work before the runs (APGD-T and FAB-T rank target classes on a clean forward)."""
        return Setup()

    def runs(self, setup: Setup) -> Iterable[Run]:
        """The runs, in order: by default one per restart."""
        return (Run(r) for r in range(self.restarts))

    def attack_run(self, batch: Batch, run: Run, stream: rng.Stream, setup: Setup) -> RunResult:
        raise NotImplementedError

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        n = len(x)
        if n == 0:
            return AttackResult(x.detach().clone(), torch.zeros(0, dtype=torch.long, device=x.device))
        max_batch = self.max_batch or chunk_rows(x)
        per_row = queries_per_row(target)
        whole = Batch(target, x.detach(), y, threat, seeds.to(x.device), max_batch, torch.arange(n, device=x.device))
        setup = self.prepare(whole)
        x_adv = whole.x.clone()
        queries = torch.full((n,), setup.passes * per_row, dtype=torch.long, device=x.device)
        best = torch.full((n,), -math.inf, device=x.device)
        remaining = whole.rows if setup.done is None else whole.rows[~setup.done]
        view = (-1, *[1] * (x.dim() - 1))
        unchecked = False
        for index, run in enumerate(self.runs(setup)):
            if unchecked:
                # which proposals of the last run are still robust: one forward each, counted (and,
                # on a randomized target, the majority vote before one leaves)
                with torch.no_grad():
                    wrong = logits_in_chunks(target, x_adv[remaining], max_batch).argmax(1) != y[remaining]
                queries[remaining] += per_row
                wrong, spent = confirmed_breaks(target, x_adv[remaining], y[remaining], wrong)
                queries[remaining] += spent
                remaining = remaining[~wrong]
            if len(remaining) == 0:
                break
            part = whole.subset(remaining)
            result = self.attack_run(part, run, self.streams.stream(part.seeds, index), setup)
            queries[remaining] += result.used * per_row
            if result.extra is not None:
                queries[remaining] += result.extra
            if result.broken is not None and not result.confirmed:
                broken, spent = confirmed_breaks(target, result.proposal, part.y, result.broken)
                result.broken = broken
                queries[remaining] += spent
            if result.score is None:
                x_adv[remaining] = result.proposal
            else:
                better = result.score > best[remaining]
                if result.broken is not None:
                    better = result.broken | better
                x_adv[remaining] = torch.where(better.view(view), result.proposal, x_adv[remaining])
                best[remaining] = torch.where(better, result.score, best[remaining])
            unchecked = result.broken is None
            if not unchecked:
                remaining = remaining[~result.broken]
        return AttackResult(x_adv, queries)


class SteppedAttack(IterativeAttack):
    """Projected gradient steps from a start, x_{k+1} = Proj(step(x_k, grad)), on ``loss``.

    Each example leaves the working set at its first misclassified iterate (the forward of its
    gradient says so), which becomes its proposal; the rest propose their last iterate. A subclass
    gives :meth:`schedule`, :meth:`step` and, if it keeps per-example state (momentum), :meth:`state`.
    """

    loss: ClassVar[Any] = staticmethod(cross_entropy)

    def schedule(self, threat: ThreatModel) -> tuple[int, float]:
        """(steps, absolute step size) under ``threat``."""
        raise NotImplementedError

    def start(self, batch: Batch, stream: rng.Stream) -> Tensor:
        """Where a run starts: the clean inputs (override for a random start)."""
        return batch.x.clone()

    def state(self, start: Tensor) -> dict[str, Tensor]:
        """Per-example state carried between steps (rows follow the working set)."""
        return {}

    def step(self, current: Tensor, grad: Tensor, x: Tensor, state: dict[str, Tensor], step_size: float,
             threat: ThreatModel) -> Tensor:
        raise NotImplementedError

    def attack_run(self, batch: Batch, run: Run, stream: rng.Stream, setup: Setup) -> RunResult:
        steps, step_size = self.schedule(batch.threat)
        start = self.start(batch, stream)
        proposal = start.clone()
        used = torch.full((len(start),), steps, dtype=torch.long, device=start.device)
        current, x_a, y_a, index = start, batch.x, batch.y, torch.arange(len(start), device=start.device)
        state = self.state(start)
        extra = torch.zeros(len(start), dtype=torch.long, device=start.device)
        for k in range(steps):
            _, grad, correct = loss_and_gradient(batch.target, current, y_a, loss=self.loss, max_batch=batch.max_batch)
            if not bool(correct.all()):  # on a randomized target, leave only on the verifier's majority
                wrong, spent = confirmed_breaks(batch.target, current, y_a, ~correct)
                correct, extra[index] = ~wrong, extra[index] + spent
            keep = torch.nonzero(correct).squeeze(1)  # the one host sync per step
            if len(keep) < len(index):
                # the misclassified leave with this iterate after k + 1 passes; the rest are overwritten later
                proposal[index], used[index] = current, k + 1
                if len(keep) == 0:
                    return RunResult(proposal, used, extra=extra)
                current, x_a, y_a, index, grad = current[keep], x_a[keep], y_a[keep], index[keep], grad[keep]
                state = {name: value[keep] for name, value in state.items()}
            current = self.step(current, grad, x_a, state, step_size, batch.threat)
        proposal[index], used[index] = current, steps
        return RunResult(proposal, used, extra=extra)
