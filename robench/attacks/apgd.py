"""APGD-CE and APGD-DLR: step-size-free PGD (Croce & Hein 2020, Algorithm 1).

Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. PGD with momentum (alpha = 0.75, Eq. 2) whose step size starts
at 2 eps and is halved at checkpoints w_j (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
- 0.03, 0.06)) when either condition of Sec. 3.1 holds:

1. the loss went up in fewer than rho = 0.75 of the steps since the last checkpoint, or
2. the step size was not reduced at the last checkpoint and the best loss has not improved since;

after a halving the iterate restarts from the best point found. Two losses: cross-entropy (CE) and
the Difference of Logits Ratio (Eq. 6), DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), which is
invariant to shifts and rescaling of the logits. Written here because torchattacks needs
torchvision, which does not import on a CPU-only torch.

Vectorized over examples; an example leaves the batch as soon as an iterate misclassifies it (that
iterate is its proposal), so robust examples get the whole budget. The random start is drawn from
the per-example streams of ``robench.rng``. Queries: one per forward+backward pass of an example
(1 + steps per restart at most).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.attacks.base import Attack, AttackResult
from robench.batching import fastest_batch_size
from robench.errors import RobenchError
from robench.registry import attacks
from robench.target import loss_and_gradient
from robench.threat import ThreatModel, steepest_direction

MOMENTUM = 0.75


def checkpoints(steps: int) -> list[int]:
    """Iterations w_j at which the step size may be halved (Sec. 3.1).

    Intervals p_1 = 0.22, then shrinking by 0.03 down to 0.06 of the budget, in the reference
    code's integer arithmetic (which avoids float rounding in ceil(p_j * steps)).
    """
    interval, shrink, smallest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, w = [], interval
    while w <= steps:
        points.append(w)
        interval = max(interval - shrink, smallest)
        w += interval
    return points


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Difference of Logits Ratio (Eq. 6), per example; larger = closer to misclassification.

    With two classes z_pi3 does not exist; the denominator is then 1 (the plain margin loss).
    """
    sorted_logits, order = logits.sort(dim=1)
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    top_is_true = order[:, -1] == labels
    best_other = torch.where(top_is_true, sorted_logits[:, -2], sorted_logits[:, -1])
    if logits.shape[1] < 3:
        return best_other - true
    return -(true - best_other) / (sorted_logits[:, -1] - sorted_logits[:, -3] + 1e-12)


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


class APGD(Attack):
    """Shared Algorithm 1; subclasses pick the loss."""

    gradient_free = False

    def __init__(self, *, steps: int = 100, restarts: int = 1, rho: float = 0.75, max_batch: int | None = None) -> None:
        if steps < 1:
            raise RobenchError(f"{self.name}: steps must be >= 1, got {steps}")
        if restarts < 1:
            raise RobenchError(f"{self.name}: restarts must be >= 1, got {restarts}")
        if not 0 < rho <= 1:
            raise RobenchError(f"{self.name}: rho must be in (0, 1], got {rho}")
        if max_batch is not None and max_batch < 1:
            raise RobenchError(f"{self.name}: max_batch must be >= 1, got {max_batch}")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.rho = float(rho)
        self.max_batch = max_batch

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        n = len(x)
        max_batch = self.max_batch or fastest_batch_size(target, x)
        x0 = x.detach()
        x_adv = x0.clone()
        best_loss = torch.full((n,), -math.inf, device=x.device)
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        remaining = torch.arange(n, device=x.device)
        for restart in range(self.restarts):
            proposal, loss, broken, used = self._single_run(target, x0[remaining], y[remaining], seeds[remaining], restart, threat, max_batch)
            queries[remaining] += used
            better = broken | (loss > best_loss[remaining])
            x_adv[remaining] = torch.where(better.view(-1, *[1] * (x.dim() - 1)), proposal, x_adv[remaining])
            best_loss[remaining] = torch.where(better, loss, best_loss[remaining])
            remaining = remaining[~broken]
            if len(remaining) == 0:
                break
        return AttackResult(x_adv, queries)

    def _random_start(self, x: Tensor, seeds: Tensor, restart: int, threat: ThreatModel) -> Tensor:
        """Uniform direction scaled to the ball's surface, as in the reference code."""
        return threat.random_start(x, seeds=seeds, counter=restart, surface=True)

    def _single_run(
        self, target: nn.Module, x: Tensor, y: Tensor, seeds: Tensor, restart: int, threat: ThreatModel, max_batch: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Algorithm 1 on (x, y): (proposal, its loss, broken, queries) per example."""
        n = len(x)
        view = (-1, *[1] * (x.dim() - 1))
        checks = set(checkpoints(self.steps))
        current = self._random_start(x, seeds, restart, threat)
        loss, grad, correct = loss_and_gradient(target, current, y, loss=self.loss, max_batch=max_batch)
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        proposal, best_loss, best_grad = current.clone(), loss.clone(), grad.clone()
        broken = ~correct
        step_size = torch.full((n,), 2 * threat.epsilon, device=x.device, dtype=x.dtype)
        previous = current.clone()
        last_loss = loss.clone()
        increases = torch.zeros(n, device=x.device)
        loss_at_check = best_loss.clone()
        reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
        last_check = 0
        active = torch.nonzero(correct).squeeze(1)
        for k in range(self.steps):
            if len(active) == 0:
                break
            x_a, cur_a = x[active], current[active]
            alpha = MOMENTUM if k > 0 else 1.0
            z = threat.project(cur_a + step_size[active].view(view) * steepest_direction(grad[active], threat.norm), x_a)
            nxt = threat.project(cur_a + alpha * (z - cur_a) + (1 - alpha) * (cur_a - previous[active]), x_a)
            previous[active] = cur_a
            current[active] = nxt
            loss_a, grad_a, correct_a = loss_and_gradient(target, nxt, y[active], loss=self.loss, max_batch=max_batch)
            queries[active] += 1
            grad[active] = grad_a
            increases[active] += (loss_a > last_loss[active]).float()
            last_loss[active] = loss_a
            improved = loss_a > best_loss[active]
            fooled = ~correct_a
            keep = improved | fooled
            proposal[active] = torch.where(keep.view(view), nxt, proposal[active])
            best_loss[active] = torch.where(improved, loss_a, best_loss[active])
            best_grad[active] = torch.where(improved.view(view), grad_a, best_grad[active])
            broken[active] = fooled
            if k + 1 in checks:
                # Sec. 3.1: halve where the loss rose too rarely, or nothing changed since the last check
                too_few = increases[active] < self.rho * (k + 1 - last_check)
                stalled = ~reduced_at_check[active] & (loss_at_check[active] >= best_loss[active])
                halve = (too_few | stalled) & ~fooled
                step_size[active] = torch.where(halve, step_size[active] / 2, step_size[active])
                current[active] = torch.where(halve.view(view), proposal[active], current[active])
                grad[active] = torch.where(halve.view(view), best_grad[active], grad[active])
                reduced_at_check[active] = halve
                loss_at_check[active] = best_loss[active]
                increases[active] = 0
                last_check = k + 1
            active = active[correct_a]  # the one host sync per step
        return proposal, best_loss, broken, queries


@attacks.register("apgd-ce", description="APGD with cross-entropy (Croce & Hein 2020, Alg. 1)")
class APGDCE(APGD):
    name = "apgd-ce"

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        return ce_loss(logits, labels)


@attacks.register("apgd-dlr", description="APGD with the DLR loss (Croce & Hein 2020, Alg. 1, Eq. 6)")
class APGDDLR(APGD):
    name = "apgd-dlr"

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        return dlr_loss(logits, labels)
