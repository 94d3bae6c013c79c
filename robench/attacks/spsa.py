"""SPSA: the gradient-free attack of Uesato et al. (2018), Algorithm 1.

Uesato, O'Donoghue, van den Oord, Kohli. "Adversarial Risk and the Dangers of Evaluating Against
Weak Attacks", ICML 2018. Each step estimates the gradient of the margin loss (Eq. 4) by finite
differences along antithetic Rademacher directions v ~ {-1, +1}^D,

    g = 1/n Σ_i [f(x + δ v_i) − f(x − δ v_i)] / (2δ) · v_i,

feeds it to Adam, and projects the iterate back onto the threat model's ball and the data bounds.
An example leaves the batch as soon as it is misclassified (early stop), so robust examples get
the whole budget and broken ones stop spending queries.

Defaults (δ = 0.01, learning rate 0.01, Adam β = (0.9, 0.999)) are the paper's and the reference
implementation's, set for 256-level images at epsilon 0.03-0.3. ``rel_delta`` and
``rel_learning_rate`` state both relative to the threat model instead (times epsilon under L-inf,
epsilon / sqrt(D) under L2), so one suite card fits data sets whose epsilons differ tenfold; ``samples`` counts forward queries per example per step (both halves of each
antithetic pair), so ``samples=128`` is 64 pairs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack, AttackResult
from robench.batching import chunk_rows
from robench.errors import RobenchError
from robench.hyperparameters import Flag, Float, Int, declare
from robench.registry import attacks
from robench.tags import target_tags
from robench.target import confirmed_breaks, logits_in_chunks, margin
from robench.threat import ThreatModel

#: Pairs per gradient-accumulation block. Fixed (not derived from ``max_batch``) so that the
#: order of floating-point sums, and hence the result, does not depend on the chunk size.
PAIR_BLOCK = 128


@attacks.register("spsa", description="SPSA, gradient-free (Uesato et al. 2018, Alg. 1)")
class SPSA(Attack):
    name = "spsa"
    gradient_free = True

    hyperparameters = declare(
        steps=Int(100, "Adam steps on the margin loss", ge=1),
        samples=Int(128, "forward queries per example per step, both halves of each antithetic pair", ge=2, multiple_of=2),
        delta=Float(None, "finite-difference step; None: 0.01 unless rel_delta is given", gt=0),
        learning_rate=Float(None, "Adam's learning rate; None: 0.01 unless rel_learning_rate is given", gt=0),
        rel_delta=Float(None, "delta relative to the ball: times epsilon (L-inf) or epsilon / sqrt(D) (L2)", gt=0),
        rel_learning_rate=Float(None, "learning_rate relative to the ball, as rel_delta", gt=0),
        early_stop=Flag(True, "an example stops at its first misclassified iterate"),
        beta1=Float(0.9, "Adam's first-moment decay", ge=0, lt=1),
        beta2=Float(0.999, "Adam's second-moment decay", ge=0, lt=1),
        adam_epsilon=Float(1e-8, "Adam's denominator term", gt=0),
        loss_draws=Int(1, "forward draws averaged per loss (EOT for a randomized target)", ge=1),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
        amp=Flag(False, "on CUDA, forward passes under bfloat16 autocast (the loss kept in float32)"),
    )

    def __init__(
        self,
        *,
        steps: int = 100,
        samples: int = 128,
        delta: float | None = None,
        learning_rate: float | None = None,
        rel_delta: float | None = None,
        rel_learning_rate: float | None = None,
        early_stop: bool = True,
        beta1: float = 0.9,
        beta2: float = 0.999,
        adam_epsilon: float = 1e-8,
        loss_draws: int = 1,
        max_batch: int | None = None,
        amp: bool = False,
    ) -> None:
        self._set(locals())
        for what in ("delta", "learning_rate"):
            if getattr(self, what) is not None and getattr(self, f"rel_{what}") is not None:
                raise RobenchError(f"spsa: give {what} or rel_{what}, not both")
            if getattr(self, f"rel_{what}") is None and getattr(self, what) is None:
                setattr(self, what, 0.01)  # the paper's, when neither is given

    def queries_per_step(self) -> int:
        """Forward rows per example per step: the perturbation samples plus the iterate's check."""
        return (self.samples + 1) * self.loss_draws

    def budget(self, threat: ThreatModel) -> int:
        return self.steps * self.queries_per_step() + self.loss_draws  # and the last iterate's check

    def steps_for(self, threat: ThreatModel, dim: int) -> tuple[float, float]:
        """(delta, learning rate) for this threat model: the absolute values, or the relative ones
        times the ball's per-coordinate scale (epsilon under L-inf, epsilon / sqrt(D) under L2, the
        size of one coordinate's share of an evenly spread L2 perturbation)."""
        scale = threat.step_scale(dim)
        delta = self.delta if self.rel_delta is None else self.rel_delta * scale
        learning_rate = self.learning_rate if self.rel_learning_rate is None else self.rel_learning_rate * scale
        return float(delta), float(learning_rate)

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        n, shape = len(x), tuple(x.shape[1:])
        delta, learning_rate = self.steps_for(threat, x[0].numel())
        max_batch = self.max_batch or chunk_rows(x)
        draws = self.loss_draws if target_tags(target).randomized else 1  # a Declared view carries a card's flags
        x0 = x.detach().flatten(1)
        x_adv = x0.clone()
        best, best_margin = x0.clone(), torch.full((n,), math.inf, device=x.device)
        adam_m, adam_v = torch.zeros_like(x0), torch.zeros_like(x0)
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)

        def check(step_active: Tensor) -> Tensor:
            """Margin of the current iterates; keeps the best point seen per example."""
            current = x_adv[step_active]
            margins = self._loss(target, current.view(-1, *shape), y[step_active], draws, max_batch)
            queries[step_active] += draws
            improved = margins < best_margin[step_active]
            best[step_active] = torch.where(improved.unsqueeze(1), current, best[step_active])
            best_margin[step_active] = torch.where(improved, margins, best_margin[step_active])
            return margins

        for step in range(self.steps):
            margins = check(active)
            if self.early_stop:
                # on a randomized target an example stops only once the verifier's majority confirms
                # its break (a single draw's margin < 0 is not enough: target.confirmed_breaks)
                lucky = margins < 0
                wrong, spent = confirmed_breaks(target, x_adv[active].view(-1, *shape), y[active], lucky)
                queries[active] += spent
                # a break the majority did not confirm is no best point: the search goes on from here
                best_margin[active] = torch.where(lucky & ~wrong, torch.full_like(margins, math.inf), best_margin[active])
                active = active[~wrong]  # the one host sync per step
                if len(active) == 0:
                    break
            grad = self._estimate_gradient(target, x_adv[active], y[active], seeds[active], step, shape, threat, draws, max_batch,
                                           delta)
            queries[active] += self.samples * draws
            m = adam_m[active].mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
            v = adam_v[active].mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            adam_m[active], adam_v[active] = m, v
            m_hat = m / (1 - self.beta1 ** (step + 1))
            v_hat = v / (1 - self.beta2 ** (step + 1))
            proposal = x_adv[active] - learning_rate * m_hat / (v_hat.sqrt() + self.adam_epsilon)
            x_adv[active] = threat.project(proposal, x0[active])
        else:
            if len(active):
                check(active)
        return AttackResult(best.view(n, *shape), queries)

    def _loss(self, target: nn.Module, rows: Tensor, labels: Tensor, draws: int, max_batch: int) -> Tensor:
        """Margin loss, averaged over ``draws`` forward passes for a randomized target.

        With ``amp`` on CUDA the forward runs under bfloat16 autocast; the loss is kept in float32.
        """
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp and rows.is_cuda):
            total = margin(logits_in_chunks(target, rows, max_batch).to(rows.dtype), labels)
            for _ in range(draws - 1):
                total = total + margin(logits_in_chunks(target, rows, max_batch).to(rows.dtype), labels)
        return total / draws

    def _estimate_gradient(
        self,
        target: nn.Module,
        x_active: Tensor,
        y_active: Tensor,
        seeds: Tensor,
        step: int,
        shape: tuple[int, ...],
        threat: ThreatModel,
        draws: int,
        max_batch: int,
        delta: float,
    ) -> Tensor:
        """SPSA gradient estimate for each active example, in memory bounded by ``max_batch``."""
        n_active, dim = x_active.shape
        pairs = self.samples // 2
        pair_block = min(pairs, PAIR_BLOCK)
        example_block = max(1, max_batch // (2 * pair_block))
        grad = torch.zeros_like(x_active)
        for e0 in range(0, n_active, example_block):
            xe, ye, se = x_active[e0 : e0 + example_block], y_active[e0 : e0 + example_block], seeds[e0 : e0 + example_block]
            b = len(xe)
            for p0 in range(0, pairs, pair_block):
                pb = min(pair_block, pairs - p0)
                v = rng.stream(se, step).rademacher((pb, dim), dtype=xe.dtype, offset=p0 * dim)  # step's stream, pairs p0..
                shifted = delta * v
                rows = torch.cat([xe.unsqueeze(1) + shifted, xe.unsqueeze(1) - shifted], dim=1)
                rows = threat.clip_to_bounds(rows).view(-1, *shape)
                losses = self._loss(target, rows, ye.repeat_interleave(2 * pb), draws, max_batch).view(b, 2, pb)
                coefficient = (losses[:, 0] - losses[:, 1]) / (2 * delta)
                grad[e0 : e0 + b] += torch.einsum("bp,bpd->bd", coefficient, v)
        return grad / pairs
