"""MI-FGSM: iterative FGSM with momentum (Dong et al. 2018, "Boosting Adversarial Attacks with
Momentum", CVPR, Algorithm 1). The gradient is accumulated over L1-normalized gradients with decay
mu (Eq. 6), g_{t+1} = mu g_t + grad / ||grad||_1, and each step follows g's steepest direction in
the ball, x_{t+1} = Proj(x_t + alpha sign(g_{t+1})) (L2: g / ||g||_2, Eq. 9), alpha = eps / T.
The loop (early exit, restarts, query counts) is ``IterativeAttack``'s. A suite card:

    [[attack]]
    attack = "mifgsm"
    [attack.params]
    steps = 10        # T; momentum = 1.0 (mu) and rel_stepsize = 1 / steps (alpha / eps) by default
"""
from __future__ import annotations

import torch
from torch import Tensor

from robench.attacks.iterative import SteppedAttack
from robench.hyperparameters import Float, Int, declare
from robench.registry import attacks
from robench.threat import ThreatModel


@attacks.register("mifgsm", description="MI-FGSM, momentum iterative FGSM (Dong et al. 2018, Alg. 1)")
class MIFGSM(SteppedAttack):
    name = "mifgsm"

    hyperparameters = declare(
        steps=Int(10, "iterations T", ge=1),
        momentum=Float(1.0, "decay mu of the accumulated gradient (Eq. 6)", ge=0),
        rel_stepsize=Float(None, "step size alpha as a fraction of epsilon; None: 1 / steps", gt=0),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
    )

    def __init__(self, *, steps: int = 10, momentum: float = 1.0, rel_stepsize: float | None = None,
                 max_batch: int | None = None) -> None:
        self._set(locals())

    def schedule(self, threat: ThreatModel) -> tuple[int, float]:
        return self.steps, (self.rel_stepsize or 1 / self.steps) * threat.epsilon

    def budget(self, threat: ThreatModel) -> int:
        return self.steps

    def state(self, start: Tensor) -> dict[str, Tensor]:
        return {"g": torch.zeros_like(start)}

    def step(self, current: Tensor, grad: Tensor, x: Tensor, state: dict[str, Tensor], step_size: float,
             threat: ThreatModel) -> Tensor:
        l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
        state["g"] = self.momentum * state["g"] + grad / l1
        return threat.project(current + step_size * threat.steepest_direction(state["g"]), x)
