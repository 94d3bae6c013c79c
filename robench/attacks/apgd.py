"""APGD-CE, APGD-DLR and APGD-T: step-size-free PGD (Croce & Hein 2020, Algorithm 1).

Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. PGD with momentum (alpha = 0.75, Eq. 2) whose step size starts
at 2 eps and is halved at checkpoints w_j (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
- 0.03, 0.06)) when either condition of Sec. 3.1 holds:

1. the loss went up in fewer than rho = 0.75 of the steps since the last checkpoint, or
2. the step size was not reduced at the last checkpoint and the best loss has not improved since;

after a halving the iterate restarts from the best point found. Three losses: cross-entropy (CE),
the Difference of Logits Ratio (Eq. 6), DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), which is
invariant to shifts and rescaling of the logits, and its targeted version (Sec. 3.2), for a target
class t: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), pi sorting the logits in decreasing order.
Written here because torchattacks needs torchvision, which does not import on a CPU-only torch.

APGD-T is AutoAttack's ``APGDAttack_targeted``: for k = 1 .. n_target_classes (9, capped at
classes - 1) it runs Algorithm 1 with the targeted DLR loss towards the class with the (k + 1)-th
largest clean logit, on the examples no earlier target class has broken. Success is untargeted
(any class but y, as the harness verifies), so an example keeps the first proposal that
misclassifies it. Targets are the classes other than y in decreasing order of clean logit: for a
correctly classified example exactly the reference's 2nd, 3rd, ... largest; for one whose top
clean class is not y, that wrong top class comes first (the reference would target y itself there;
it only attacks correctly classified examples). Fewer than 4 classes: z_pi4 does not exist, and the
denominator is z_pi1 - z_pi3 with 3 classes and 1 with 2 (then the loss is the margin z_t - z_y).

Vectorized over examples; an example leaves the batch as soon as an iterate misclassifies it (that
iterate is its proposal), so robust examples get the whole budget. The random start is drawn from
the per-example streams of ``robench.rng`` (stream = the run's position: the restart; APGD-T:
target class by target class, each with its restarts). Queries count target rows: each forward+backward pass of an example times the target's
``queries_per_row`` (an EOT wrapper's draws), at most 1 + steps per restart for APGD-CE/DLR; APGD-T
adds one clean forward per example to choose the targets, then up to 1 + steps per target class and
restart, so at most queries_per_row * (1 + n_targets * restarts * (1 + steps)).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench import rng
from robench.attacks.iterative import Batch, IterativeAttack, Run, RunResult, Setup
from robench.hyperparameters import Float, Int, declare
from robench.registry import attacks
from robench.target import check_logits, confirmed_breaks, logits_in_chunks, loss_and_gradient
from robench.threat import ThreatModel

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


def targeted_dlr_loss(logits: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """Targeted DLR (Sec. 3.2), per example, towards ``classes``: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).

    Larger = closer to t beating y; invariant to shifts and rescaling of the logits, as DLR. With
    three classes the denominator is z_pi1 - z_pi3 (the only one of pi3, pi4 there is), with two
    it is 1 (the plain targeted margin z_t - z_y).
    """
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    goal = logits.gather(1, classes.view(-1, 1)).squeeze(1)
    if logits.shape[1] < 3:
        return goal - true
    sorted_logits = logits.sort(dim=1).values
    tail = sorted_logits[:, -3] if logits.shape[1] == 3 else 0.5 * (sorted_logits[:, -3] + sorted_logits[:, -4])
    return -(true - goal) / (sorted_logits[:, -1] - tail + 1e-12)


def target_classes(logits: Tensor, labels: Tensor, count: int) -> Tensor:
    """(N, min(count, classes - 1)): the classes other than ``labels`` in decreasing order of ``logits``.

    For a correctly classified example: the classes with the 2nd, 3rd, ... largest logit, as
    AutoAttack's APGD-T picks them. Ties keep the lower class first.
    """
    others = logits.scatter(1, labels.view(-1, 1), -math.inf)
    order = others.sort(dim=1, descending=True, stable=True).indices
    return order[:, : min(count, logits.shape[1] - 1)]


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


class APGD(IterativeAttack):
    """Shared Algorithm 1 (one run); ``IterativeAttack`` runs the restarts; subclasses pick the loss."""

    gradient_free = False

    hyperparameters = declare(
        steps=Int(100, "iterations per restart (Algorithm 1's N_iter)", ge=1),
        restarts=Int(1, "runs from fresh random starts, each on the examples still robust", ge=1),
        rho=Float(0.75, "checkpoint condition 1: the fraction of steps that must raise the loss (Sec. 3.1)", gt=0, le=1),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
    )

    def __init__(self, *, steps: int = 100, restarts: int = 1, rho: float = 0.75, max_batch: int | None = None) -> None:
        self._set(locals())

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def budget(self, threat: ThreatModel) -> int:
        return (self.steps + 1) * self.restarts

    def attack_run(self, batch: Batch, run: Run, stream: rng.Stream, setup: Setup) -> RunResult:
        """Algorithm 1 from a random start on the ball's surface (the reference code's), towards
        ``run.classes`` for a targeted loss; an example keeps the first proposal that breaks it,
        else the one of highest loss."""
        current = batch.threat.random_start(batch.x, stream=stream, surface=True)
        classes = None if run.classes is None else run.classes[batch.rows]
        proposal, loss, broken, used, extra = self._single_run(batch.target, batch.x, batch.y, current, batch.threat,
                                                               batch.max_batch, classes)
        return RunResult(proposal, used, broken=broken, score=loss, confirmed=True, extra=extra)

    def _loss_and_gradient(
        self, target: nn.Module, x: Tensor, y: Tensor, classes: Tensor | None, max_batch: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``loss_and_gradient`` with ``self.loss``; given per-example target ``classes``, the loss
        is ``self.loss(logits, labels, classes)``, chunk by chunk."""
        if classes is None:
            return loss_and_gradient(target, x, y, loss=self.loss, max_batch=max_batch)
        parts = []
        for start in range(0, len(x), max_batch):
            chunk = classes[start : start + max_batch]
            parts.append(loss_and_gradient(target, x[start : start + max_batch], y[start : start + max_batch],
                                           loss=lambda logits, labels, chunk=chunk: self.loss(logits, labels, chunk),
                                           max_batch=max_batch))
        if len(parts) == 1:
            return parts[0]
        losses, grads, correct = zip(*parts)
        return torch.cat(losses), torch.cat(grads), torch.cat(correct)

    def _single_run(
        self, target: nn.Module, x: Tensor, y: Tensor, current: Tensor, threat: ThreatModel, max_batch: int,
        classes: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Algorithm 1 on (x, y) from ``current``: (proposal, its loss, broken, forward+backward
        passes, target rows spent confirming breaks) per example; ``classes``: per-example target classes of a targeted loss."""
        n = len(x)
        view = (-1, *[1] * (x.dim() - 1))
        checks = set(checkpoints(self.steps))
        loss, grad, correct = self._loss_and_gradient(target, current, y, classes, max_batch)
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        # on a randomized target an example stops only on the verifier's majority (target.confirmed_breaks)
        wrong, extra = confirmed_breaks(target, current, y, ~correct)
        correct = ~wrong
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
            z = threat.project(cur_a + step_size[active].view(view) * threat.steepest_direction(grad[active]), x_a)
            nxt = threat.project(cur_a + alpha * (z - cur_a) + (1 - alpha) * (cur_a - previous[active]), x_a)
            previous[active] = cur_a
            current[active] = nxt
            classes_a = None if classes is None else classes[active]
            loss_a, grad_a, correct_a = self._loss_and_gradient(target, nxt, y[active], classes_a, max_batch)
            queries[active] += 1
            if not bool(correct_a.all()):
                wrong, spent = confirmed_breaks(target, nxt, y[active], ~correct_a)
                correct_a, extra[active] = ~wrong, extra[active] + spent
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
        return proposal, best_loss, broken, queries, extra


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


@attacks.register("apgd-t", description="APGD with the targeted DLR loss over the top 9 other classes (Croce & Hein 2020, Sec. 3.2)")
class APGDT(APGD):
    """AutoAttack's APGD-T: Algorithm 1 with the targeted DLR loss, once per target class (and
    restart), each on the examples still unbroken; targets from the clean logits (module docstring)."""

    name = "apgd-t"

    hyperparameters = declare(
        **APGD.hyperparameters,
        n_target_classes=Int(9, "target classes, by decreasing clean logit (capped at classes - 1)", ge=1),
    )

    def __init__(
        self, *, steps: int = 100, n_target_classes: int = 9, restarts: int = 1, rho: float = 0.75, max_batch: int | None = None
    ) -> None:
        self._set(locals())

    @staticmethod
    def loss(logits: Tensor, labels: Tensor, classes: Tensor) -> Tensor:  # type: ignore[override]
        return targeted_dlr_loss(logits, labels, classes)

    def budget(self, threat: ThreatModel) -> int:
        return 1 + (self.steps + 1) * self.restarts * self.n_target_classes

    def prepare(self, batch: Batch) -> Setup:
        """One clean forward per example (counted) ranks the target classes."""
        clean = check_logits(logits_in_chunks(batch.target, batch.x, batch.max_batch), len(batch.x)).float()
        return Setup(passes=1, context=target_classes(clean, batch.y, self.n_target_classes))

    def runs(self, setup: Setup) -> Iterable[Run]:
        """Target class k's restarts r, in that order (run k * restarts + r)."""
        classes = setup.context
        return (Run(r, classes[:, k], k + 1) for k in range(classes.shape[1]) for r in range(self.restarts))
