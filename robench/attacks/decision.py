"""Decision-based (hard-label) attacks: they see only the predicted class, never a gradient or a logit.

A defense that masks gradients or saturates its logits gives a gradient attack nothing to follow
but leaves its decisions intact, so a decision-based attack breaking examples the gradient
attacks could not is evidence of masking (Carlini et al. 2019, Sec. 5.2; Brendel et al. 2018).
``hop-skip-jump`` is foolbox's HopSkipJumpAttack (Chen, Jordan, Wainwright 2020) with its
constraint set by the threat model's norm; it starts from foolbox's blended-uniform-noise search
and returns points clipped to the ball (``verify`` decides whether they count).
"""
from __future__ import annotations

import warnings
from typing import Any

import foolbox as fb
import torch
from torch import Tensor, nn

from robench.attacks.base import AttackResult
from robench.attacks.gradient import FoolboxAttack
from robench.hyperparameters import Float, Int, declare
from robench.registry import attacks
from robench.target import QueryCounter
from robench.threat import ThreatModel

HSJ = "HopSkipJumpAttack"


class HopSkipJump(FoolboxAttack):
    """foolbox's HopSkipJumpAttack, L-inf or L2 by the threat model."""

    name = "hop-skip-jump"
    gradient_free = True
    hyperparameters = declare(
        restarts=FoolboxAttack.hyperparameters["restarts"],
        max_batch=FoolboxAttack.hyperparameters["max_batch"],
        steps=Int(64, "HopSkipJump iterations (foolbox's steps)", ge=1),
        initial_gradient_eval_steps=Int(100, "queries of the first gradient estimate (grows as sqrt of the step)", ge=1),
        max_gradient_eval_steps=Int(10_000, "most queries of one gradient estimate", ge=1),
        gamma=Float(1.0, "foolbox's gamma: the binary search stops at gamma / d^1.5 (L2) or gamma / d^2 (L-inf)", gt=0),
    )

    def __init__(self, *, steps: int = 64, initial_gradient_eval_steps: int = 100, max_gradient_eval_steps: int = 10_000,
                 gamma: float = 1.0, restarts: int = 1, max_batch: int | None = None) -> None:
        own = self._checked(locals())
        super().__init__("hop-skip-jump", {"linf": HSJ, "l2": HSJ}, restarts=restarts, max_batch=max_batch, steps=own["steps"],
                         initial_gradient_eval_steps=own["initial_gradient_eval_steps"],
                         max_gradient_eval_steps=own["max_gradient_eval_steps"], gamma=own["gamma"])

    def budget(self, threat: ThreatModel) -> int:
        """The start search (foolbox's blended noise: up to 1,000 directions, 50 steps) and, per
        step, the gradient estimate plus about 30 queries of binary and step-size search."""
        p = self.foolbox_params
        per_step = sum(min(int(p["initial_gradient_eval_steps"] * (k + 1) ** 0.5), p["max_gradient_eval_steps"]) + 30
                       for k in range(p["steps"]))
        return (1050 + per_step) * self.restarts

    def _foolbox_attack(self, norm: str) -> Any:
        # foolbox's own fallback start search, named so that it does not log that it fell back
        start = fb.attacks.LinearSearchBlendedUniformNoiseAttack(steps=50)
        return fb.attacks.HopSkipJumpAttack(init_attack=start, constraint=norm, **self.foolbox_params)

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        """One example at a time: foolbox draws its random directions for a whole batch from one
        generator, so only a batch of one makes an example's result depend on its seed alone."""
        if len(x) == 0:
            return AttackResult(x.detach().clone(), torch.zeros(0, dtype=torch.long, device=x.device))
        results = [self._one(target, x[i : i + 1], y[i : i + 1], threat, seeds[i : i + 1]) for i in range(len(x))]
        return AttackResult(torch.cat([r.x_adv for r in results]), torch.cat([r.queries for r in results]))

    def _one(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, seeds: Tensor) -> AttackResult:
        """foolbox gives up when its starting-point search fails, or asserts when a point its binary
        search left on the adversarial side is not adversarial on a second look (a randomized
        target's decisions flip); then the example proposes its clean input (not broken), with the
        queries it spent."""
        counter = QueryCounter(target)
        try:
            with warnings.catch_warnings():  # its start search warns when it fails; handled below
                warnings.filterwarnings("ignore", message="LinearSearchBlendedUniformNoiseAttack failed")
                return super().run(counter, x, y, threat, seeds=seeds)
        except (ValueError, AssertionError) as exc:
            if isinstance(exc, ValueError) and "init_attack failed" not in str(exc):
                raise
            return AttackResult(x.detach().clone(), torch.full((1,), counter.rows, dtype=torch.long, device=x.device))


@attacks.register("hop-skip-jump", description="foolbox HopSkipJumpAttack, decision-based (Chen, Jordan, Wainwright 2020)")
def hop_skip_jump(*, steps: int = 64, initial_gradient_eval_steps: int = 100, max_gradient_eval_steps: int = 10_000,
                  gamma: float = 1.0, restarts: int = 1, max_batch: int | None = None) -> HopSkipJump:
    """foolbox's defaults; the diagnostics run a small budget of it."""
    return HopSkipJump(steps=steps, initial_gradient_eval_steps=initial_gradient_eval_steps,
                       max_gradient_eval_steps=max_gradient_eval_steps, gamma=gamma, restarts=restarts, max_batch=max_batch)


hop_skip_jump.hyperparameters = HopSkipJump.hyperparameters  # type: ignore[attr-defined]
