"""PGD: projected gradient ascent on the cross-entropy loss (Madry et al. 2018, Eq. 2).

Madry, Makelov, Schmidt, Tsipras, Vladu. "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. From a random point of the ball, repeat

    x_{t+1} = Proj_{B(x, eps) ∩ bounds}(x_t + alpha * s(grad_x CE(f(x_t), y))),

with s = sign under L-inf and s = g / ||g||_2 under L2. Written here instead of going through
foolbox because foolbox/eagerpy cost ~1.4x a plain torch loop on a small model and ask for one more
forward per example (benchmarks/RESULTS.md). The parameters and their defaults are foolbox's
LinfPGD / L2PGD ones, so cards written for the former adapter keep their meaning: 40 steps of
0.01/0.3 eps under L-inf, 50 steps of 0.025 eps under L2, ``abs_stepsize`` overriding both.

Vectorized over examples: the forward of each gradient also says whether the current iterate is
misclassified; such an example leaves the batch with that iterate as its proposal, so robust
examples get the whole budget (one host sync per step, to shrink the batch). An example that is
never misclassified proposes its last iterate (``verify`` decides). Restarts run only on examples
still robust, each from a fresh random start of the per-example streams of ``robench.rng``.
Queries: one per forward+backward of an example (times the target's ``queries_per_row``), plus
one forward per example between restarts to see which are still robust.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from robench.attacks.base import Attack, AttackResult
from robench.batching import chunk_rows
from robench.errors import RobenchError
from robench.registry import attacks
from robench.target import logits_in_chunks, loss_and_gradient, queries_per_row
from robench.threat import ThreatModel, steepest_direction

#: foolbox 3's defaults per norm: (steps, step size relative to epsilon)
DEFAULTS: dict[str, tuple[int, float]] = {"linf": (40, 0.01 / 0.3), "l2": (50, 0.025)}


@attacks.register("pgd", description="PGD on cross-entropy, L-inf sign / L2 normalized steps (Madry et al. 2018)")
class PGD(Attack):
    """Madry et al.'s PGD with foolbox's parameters; ``None`` means foolbox's default for the norm."""

    name = "pgd"
    gradient_free = False

    def __init__(
        self,
        *,
        steps: int | None = None,
        rel_stepsize: float | None = None,
        abs_stepsize: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        max_batch: int | None = None,
    ) -> None:
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
            raise RobenchError(f"pgd: steps must be an integer >= 1, got {steps!r}")
        for label, value in (("rel_stepsize", rel_stepsize), ("abs_stepsize", abs_stepsize)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise RobenchError(f"pgd: {label} must be a number > 0, got {value!r}")
        if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
            raise RobenchError(f"pgd: restarts must be an integer >= 1, got {restarts!r}")
        if max_batch is not None and max_batch < 1:
            raise RobenchError(f"pgd: max_batch must be >= 1, got {max_batch}")
        self.steps = None if steps is None else int(steps)
        self.rel_stepsize = None if rel_stepsize is None else float(rel_stepsize)
        self.abs_stepsize = None if abs_stepsize is None else float(abs_stepsize)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.max_batch = max_batch

    def schedule(self, threat: ThreatModel) -> tuple[int, float]:
        """(steps, absolute step size) under ``threat``: explicit values, else foolbox's per-norm defaults."""
        default_steps, default_rel = DEFAULTS[threat.norm]
        steps = self.steps if self.steps is not None else default_steps
        if self.abs_stepsize is not None:
            return steps, self.abs_stepsize
        rel = self.rel_stepsize if self.rel_stepsize is not None else default_rel
        return steps, rel * threat.epsilon

    def budget(self, threat: ThreatModel) -> int:
        return (self.schedule(threat)[0] + 1) * self.restarts

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        steps, step_size = self.schedule(threat)
        if len(x) == 0:
            return AttackResult(x.detach().clone(), torch.zeros(0, dtype=torch.long, device=x.device))
        max_batch = self.max_batch or chunk_rows(x)
        per_row = queries_per_row(target)
        x0 = x.detach()
        seeds = seeds.to(x.device)
        x_adv = x0.clone()
        queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
        remaining = torch.arange(len(x), device=x.device)
        restarts = self.restarts if self.random_start else 1  # without a random start every restart is the same
        for restart in range(restarts):
            if restart > 0:
                # which last iterates are still robust: one forward each, counted
                with torch.no_grad():
                    correct = logits_in_chunks(target, x_adv[remaining], max_batch).argmax(1) == y[remaining]
                queries[remaining] += per_row
                remaining = remaining[correct]
                if len(remaining) == 0:
                    break
            start = self._start(x0[remaining], seeds[remaining], restart, threat)
            x_adv[remaining], used = self._single_run(target, x0[remaining], y[remaining], start, threat, steps, step_size, max_batch)
            queries[remaining] += used * per_row
        return AttackResult(x_adv, queries)

    def _start(self, x: Tensor, seeds: Tensor, restart: int, threat: ThreatModel) -> Tensor:
        """Uniform in the L-inf ball / the L2 ball (direction normal, radius u^(1/d)), as foolbox draws it."""
        if not self.random_start:
            return x.clone()
        # streams: L-inf values 4r; L2 direction 2r (uniforms 4r, 4r + 1), radius 4r + 2
        counter = 4 * restart if threat.norm == "linf" else 2 * restart
        return threat.random_start(x, seeds=seeds, counter=counter, radius_counter=4 * restart + 2)

    def _single_run(
        self, target: nn.Module, x: Tensor, y: Tensor, start: Tensor, threat: ThreatModel, steps: int, step_size: float, max_batch: int
    ) -> tuple[Tensor, Tensor]:
        """PGD from ``start``: (proposal, forward+backward passes) per example.

        The working set (``current``, its clean inputs, labels and positions) shrinks as examples
        are misclassified; their iterate is written back when they leave.
        """
        proposal = start.clone()
        used = torch.full((len(x),), steps, dtype=torch.long, device=x.device)
        current, x_a, y_a, index = start, x, y, torch.arange(len(x), device=x.device)
        for k in range(steps):
            _, grad, correct = loss_and_gradient(target, current, y_a, max_batch=max_batch)
            keep = torch.nonzero(correct).squeeze(1)  # the one host sync per step
            if len(keep) < len(index):
                # the misclassified leave with this iterate after k + 1 passes; the rest are overwritten later
                proposal[index], used[index] = current, k + 1
                if len(keep) == 0:
                    return proposal, used
                current, x_a, y_a, index, grad = current[keep], x_a[keep], y_a[keep], index[keep], grad[keep]
            current = threat.project(current + step_size * steepest_direction(grad, threat.norm), x_a)
        proposal[index], used[index] = current, steps
        return proposal, used
