"""FAB-T: the targeted Fast Adaptive Boundary attack, as AutoAttack's ``version='standard'`` runs it.

Croce, Hein. "Minimally Distorted Adversarial Examples with a Fast Adaptive Boundary Attack",
ICML 2020. FAB looks for the smallest perturbation that changes the decision. At the iterate x_k
it linearizes the boundary between the true class y and a class t,

    pi_k = {z : <w, z - x_k> + f = 0},   f = z_t(x_k) - z_y(x_k),   w = grad_x f(x_k),

and projects both x_k and the clean point x_orig onto pi_k intersected with the data box
(:func:`project_hyperplane_box`: the paper's Sec. 2.1, "Projection on a hyperplane with box
constraints", Eq. 3), giving the perturbations delta_k and delta_orig. The step (Sec. 2.2, the FAB
algorithm: "biased gradient step" and "extrapolation") is

    alpha   = min(||delta_k|| / (||delta_k|| + ||delta_orig||), alpha_max)
    x_{k+1} = clip_box((1 - alpha) (x_k + eta delta_k) + alpha (x_orig + eta delta_orig)),

and when x_{k+1} is misclassified it is recorded (the smallest-norm one is kept) and pulled back
towards the clean point, x_{k+1} <- (1 - beta) x_orig + beta x_{k+1} (Sec. 2.2, "backward step").

The targeted version (Croce & Hein 2020, used as FAB-T in AutoAttack) fixes t to the k-th most
likely other class of the clean logits, k = 1 .. n_target_classes (fewer when the model has fewer
classes: min(n_target_classes, classes - 1)), and attacks each target with ``restarts`` runs of
``steps`` iterations: the first run of a target starts at x_orig, further ones at a random point on
the sphere of radius eps / 2, clipped to the bounds (the reference code's random start). As in
AutoAttack, a run only sees the examples that no earlier target or restart has broken within eps,
and an example's proposal is its smallest-norm adversarial iterate if that lies within eps, else
the clean input (``verify`` decides; an attack never does). Within a run every example does all
``steps`` iterations, as in the reference, so the recorded point is the smallest perturbation
found, not the first.

Queries (forward rows, times the target's ``queries_per_row``): one forward+backward pass of an
example counts one, as in APGD. The gradient of the two-logit difference z_t - z_y is one backward
of one scalar per row, so a step costs one pass: the forward+backward at the new iterate both says
whether it is misclassified and gives the linearization for the next step (the reference spends a
separate forward on the check). A misclassified iterate costs one more pass, at the point after the
backward step. The last step of a run needs only a forward. The clean pass that picks the targets
is the start of the first target's first run. Per example: 1 + sum over its runs of (steps +
misclassified iterates before the last step), plus one pass at the start of every run but the first.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.iterative import Batch, IterativeAttack, Run, RunResult, Setup
from robench.hyperparameters import Flag, Float, Int, declare
from robench.registry import attacks
from robench.target import check_logits, logits_in_chunks, loss_gradient_logits
from robench.threat import Ball, ThreatModel, ball_of

#: radius of the random start of restarts after the first, relative to eps (reference code)
RANDOM_START_RADIUS = 0.5
#: smallest norm of a projection step in the alpha ratio (reference code), so 0 / 0 cannot occur
_MIN_STEP_NORM = 1e-8


def project_hyperplane_box(x: Tensor, w: Tensor, c: Tensor, lo: float, hi: float, norm: str | Ball) -> Tensor:
    """The minimal-norm step onto a hyperplane inside a box, exactly, per row.

    For rows ``x``, ``w`` of shape (B, d) and ``c`` of shape (B,), returns delta solving

        min ||delta||_p   s.t.   <w, delta> = c,   lo <= x + delta <= hi,   p in {inf, 2},

    i.e. ``x + delta`` is the box-constrained projection of ``x`` onto the hyperplane
    {z : <w, z> + b = 0} with c = -(<w, x> + b) (Croce & Hein 2020, Sec. 2.1 "Projection on a
    hyperplane with box constraints", Eq. 3; they show the problem reduces to a one-dimensional
    search solvable in O(d log d)). The reduction used here:
    write s = sign(c), v = s w, a_i = |w_i|, and r_i >= 0 the room coordinate i has in the
    direction sign(v_i) (hi - x_i if v_i > 0, x_i - lo if v_i < 0). The optimal delta moves every
    coordinate towards the hyperplane, delta_i = sign(v_i) * (amount_i), and

    * L-inf: for a radius tau the most <v, delta> can reach is g(tau) = sum_i a_i min(tau, r_i);
      the smallest feasible tau solves g(tau) = |c| and delta_i = sign(v_i) min(tau, r_i). (On
      coordinates with w_i != 0 this delta is the unique minimizer's; coordinates with w_i = 0 stay
      at 0.)
    * L2: the KKT conditions of min ||delta||^2 / 2 give delta_i = clip(lambda v_i, box) =
      sign(v_i) min(lambda a_i, r_i) for one multiplier lambda >= 0, and the constraint reads
      g(lambda) = sum_i a_i^2 min(lambda, r_i / a_i) = |c|.

    Both are g(tau) = sum_i m_i min(tau, beta_i): nondecreasing and piecewise linear with
    breakpoints beta_i. Sorting the breakpoints gives g at each of them from cumulative sums; the
    root lies in the first interval where g reaches |c|, where g is linear and is solved exactly.
    When even the whole box cannot reach the hyperplane (|c| > sum_i a_i r_i), the result is the
    box corner that goes furthest towards it, delta_i = sign(v_i) r_i (the limit tau -> inf).
    Vectorized over rows: one sort and a few cumulative sums, no per-row loop.
    """
    ball = ball_of(norm)
    dtype = x.dtype
    work = torch.promote_types(dtype, torch.float32)
    x, w, c = x.to(work), w.to(work), c.to(work)
    s = torch.where(c >= 0, 1.0, -1.0).to(work).unsqueeze(1)
    v = w * s
    target = c.abs().unsqueeze(1)  # |c|: what <v, delta> must reach
    a = v.abs()
    moving = a > 0
    room = torch.where(v > 0, hi - x, x - lo).clamp_min(0.0)
    weight, breakpoint = ball.hyperplane_terms(a, room, moving)
    breakpoint = torch.where(moving, breakpoint, torch.full_like(breakpoint, math.inf))
    bp, order = breakpoint.sort(dim=1, stable=True)
    m = weight.gather(1, order)  # zero exactly where the breakpoint is inf (w_i = 0), sorted last
    reached = torch.where(m > 0, m * bp, torch.zeros_like(m)).cumsum(dim=1)  # sum_{j <= k} m_j beta_j
    from_here = m.flip(1).cumsum(dim=1).flip(1)  # sum_{j >= k} m_j (exactly 0 on the w_i = 0 tail)
    after = torch.cat([from_here[:, 1:], torch.zeros_like(from_here[:, :1])], dim=1)  # sum_{j > k}
    g = reached + torch.where(after > 0, bp * after, torch.zeros_like(bp))  # g(beta_k)
    k = (g < target).sum(dim=1, keepdim=True)  # first breakpoint where g reaches |c|
    feasible = k < g.shape[1]
    kc = k.clamp(max=g.shape[1] - 1)
    reached_before = torch.where(k > 0, reached.gather(1, (kc - 1).clamp_min(0)), torch.zeros_like(target))
    lower = torch.where(k > 0, bp.gather(1, (kc - 1).clamp_min(0)), torch.zeros_like(target))
    slope = from_here.gather(1, kc)
    tau = (target - reached_before) / slope.clamp_min(torch.finfo(work).tiny)
    tau = torch.minimum(torch.maximum(tau, lower), bp.gather(1, kc))
    tau = torch.where(feasible, tau, torch.full_like(tau, math.inf))
    scale = ball.hyperplane_step(tau, a)
    amount = torch.where(moving, torch.minimum(torch.where(moving, scale, torch.zeros_like(scale)), room), torch.zeros_like(room))
    return (torch.sign(v) * amount).to(dtype)


def _difference(logits: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """f = z_t - z_y per row: FAB's linearized boundary between the label and the target class t."""
    return logits.gather(1, classes.view(-1, 1)).squeeze(1) - logits.gather(1, labels.view(-1, 1)).squeeze(1)


def _difference_and_gradient(target: nn.Module, x: Tensor, y: Tensor, classes: Tensor,
                             max_batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """f = z_t - z_y per row, its input gradient and the logits (``target.loss_gradient_logits``)."""
    return loss_gradient_logits(target, x, y, loss=_difference, extra=classes, max_batch=max_batch)


def _runner_up(logits: Tensor, labels: Tensor) -> Tensor:
    """f towards the most likely other class: the clean pass, where the logits choose the targets."""
    return _difference(logits, labels, _by_likelihood(logits)[:, 1])


def _by_likelihood(logits: Tensor) -> Tensor:
    """Classes by decreasing logit, ties broken by class index: column k is the k-th target."""
    return logits.sort(dim=1, descending=True, stable=True)[1]


class _CleanPass(NamedTuple):
    """The clean pass: classes by decreasing logit, and f = z_t - z_y towards the runner-up with its gradient."""

    ranking: Tensor
    f: Tensor
    grad: Tensor


@attacks.register("fab-t", description="Targeted FAB, AutoAttack's FAB-T (Croce & Hein 2020, ICML)")
class FABT(IterativeAttack):
    """Targeted FAB with AutoAttack's standard settings (9 targets, 100 steps, 1 run per target)."""

    name = "fab-t"
    gradient_free = False

    hyperparameters = declare(
        steps=Int(100, "FAB iterations per target class and restart", ge=1),
        n_target_classes=Int(9, "target classes, by decreasing clean logit (capped at classes - 1)", ge=1),
        restarts=Int(1, "runs per target class (after the first, from random starts)", ge=1),
        alpha_max=Float(0.1, "largest weight of the original point in the biased step (Sec. 2.2)", ge=0, le=1),
        eta=Float(1.05, "extrapolation factor of the step (overshoot)", gt=0),
        beta=Float(0.9, "backward step: x_orig + beta (x - x_orig) once past the boundary", gt=0, le=1),
        early_stop=Flag(True, "an example stops once broken within epsilon (False: every step, as the reference)"),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
    )

    def __init__(
        self,
        *,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        early_stop: bool = True,
        max_batch: int | None = None,
    ) -> None:
        """``early_stop``: an example stops iterating once broken within epsilon (the same
        examples break; fewer passes). False runs every step, as the reference does."""
        self._set(locals())

    def budget(self, threat: ThreatModel) -> int:
        return 1 + (self.steps + 1) * self.restarts * self.n_target_classes

    def prepare(self, batch: Batch) -> Setup:
        """The clean pass: its logits rank the targets, and it is the start of target 1's first run;
        an example it misclassifies is done (its clean input is the proposal)."""
        f, grad, logits = loss_gradient_logits(batch.target, batch.x, batch.y, loss=_runner_up, max_batch=batch.max_batch)
        check_logits(logits, len(batch.x))
        return Setup(passes=1, done=logits.argmax(1) != batch.y, context=_CleanPass(_by_likelihood(logits), f, grad))

    def runs(self, setup: Setup) -> Iterable[Run]:
        """The k-th most likely other class (k = 1 .. n_target_classes), each with its restarts."""
        ranking = setup.context.ranking
        targets = min(self.n_target_classes, ranking.shape[1] - 1)
        return (Run(r, ranking[:, k], k) for k in range(1, targets + 1) for r in range(self.restarts))

    def attack_run(self, batch: Batch, run: Run, stream: rng.Stream, setup: Setup) -> RunResult:
        """One run towards ``run.classes``: from the clean input (the first run reuses the clean
        pass), or after the first restart from a random point of the sphere of radius eps / 2.
        The proposal is the smallest-norm adversarial iterate if it lies within eps, else the clean
        input; the score prefers smaller norms."""
        threat, x_t, y_t = batch.threat, batch.x, batch.y
        t = run.classes[batch.rows]
        used = torch.zeros(len(x_t), dtype=torch.long, device=x_t.device)
        if run.target == 1 and run.restart == 0:
            start, f_t, grad_t = x_t, setup.context.f[batch.rows], setup.context.grad[batch.rows]
        else:
            start = x_t
            if run.restart > 0:
                delta = threat.random_delta(stream, tuple(x_t.shape[1:]), dtype=x_t.dtype, surface=True, radius=RANDOM_START_RADIUS)
                start = threat.clip_to_bounds(x_t + delta)
            f_t, grad_t, _ = _difference_and_gradient(batch.target, start, y_t, t, batch.max_batch)
            used += 1
        found, norm, passes = self._single_run(batch.target, x_t, y_t, t, start, f_t, grad_t, threat, batch.max_batch)
        view = (-1, *[1] * (x_t.dim() - 1))
        within = norm <= threat.epsilon
        return RunResult(torch.where(within.view(view), found, x_t), used + passes, broken=within, score=-norm)

    def _single_run(
        self, target: nn.Module, x0: Tensor, y: Tensor, t: Tensor, start: Tensor, f: Tensor, grad: Tensor,
        threat: ThreatModel, max_batch: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``steps`` FAB iterations towards class ``t`` from ``start`` (with f and its gradient there):
        (smallest-norm misclassified iterate, its norm (inf if none), passes) per example.

        An example leaves the working set once an iterate within epsilon misclassifies it
        (``early_stop``): a smaller adversarial would change no verdict of the threat model, only
        cost more passes. Without ``early_stop`` every example takes every step, as the reference
        does to minimise the norm."""
        n = len(x0)
        lo, hi = threat.bounds
        eps = threat.epsilon
        view = (-1, *[1] * (x0.dim() - 1))
        found = x0.clone()
        found_norm = torch.full((n,), math.inf, device=x0.device, dtype=torch.float32)
        used = torch.zeros(n, dtype=torch.long, device=x0.device)
        index = torch.arange(n, device=x0.device)  # the working set, as positions in the batch
        x_a, y_a, t_a = x0, y, t
        current, f, grad = start.clone(), f.clone(), grad.clone()
        for step in range(self.steps):
            flat0, flat, w = x_a.flatten(1), current.flatten(1), grad.flatten(1).to(current.dtype)
            f_now = f.to(current.dtype)
            # the same hyperplane seen from the iterate and from the clean point
            f_orig = f_now + (w * (flat0 - flat)).sum(dim=1)
            delta_k = project_hyperplane_box(flat, w, -f_now, lo, hi, threat.ball)
            delta_o = project_hyperplane_box(flat0, w, -f_orig, lo, hi, threat.ball)
            size_k = threat.ball.norm(delta_k).clamp_min(_MIN_STEP_NORM)
            size_o = threat.ball.norm(delta_o).clamp_min(_MIN_STEP_NORM)
            alpha = (size_k / (size_k + size_o)).clamp(0.0, self.alpha_max).unsqueeze(1)
            nxt = (1 - alpha) * (flat + self.eta * delta_k) + alpha * (flat0 + self.eta * delta_o)
            current = threat.clip_to_bounds(nxt).view_as(x_a)
            used[index] += 1
            last = step == self.steps - 1
            if last:
                with torch.no_grad():
                    logits = logits_in_chunks(target, current, max_batch)
            else:
                f, grad, logits = _difference_and_gradient(target, current, y_a, t_a, max_batch)
            fooled = logits.argmax(1) != y_a
            norm = threat.distance(current, x_a).float()
            better = fooled & (norm < found_norm[index])
            found[index] = torch.where(better.view(view), current, found[index])
            found_norm[index] = torch.where(better, norm, found_norm[index])
            if last:
                break
            if self.early_stop:
                stay = found_norm[index] > eps
                if not bool(stay.all()):  # the one extra host sync, only when someone is done
                    keep = torch.nonzero(stay).squeeze(1)
                    if len(keep) == 0:
                        break
                    index, x_a, y_a, t_a = index[keep], x_a[keep], y_a[keep], t_a[keep]
                    current, f, grad, fooled = current[keep], f[keep], grad[keep], fooled[keep]
            back = torch.nonzero(fooled).squeeze(1)  # the one host sync per step
            if len(back):
                # backward step towards the clean point, and the linearization there
                pulled = x_a[back] + self.beta * (current[back] - x_a[back])
                current[back] = pulled
                f[back], grad[back], _ = _difference_and_gradient(target, pulled, y_a[back], t_a[back], max_batch)
                used[index[back]] += 1
        return found, found_norm, used
