"""Logit saturation: the model's logits times a large temperature, as defensive distillation does.

Defensive distillation (Papernot et al. 2016) trains at temperature T and tests at 1, which
scales the logits by about T. Predictions are unchanged, but the softmax saturates: once the
logit gap times T exceeds ~104, exp underflows to 0 in float32, the softmax is exactly one-hot
and the cross-entropy gradient is exactly zero. Carlini & Wagner (2016, "Defensive distillation
is not robust to adversarial examples") break it with a margin loss on the logits, which is
scale-invariant; SPSA's margin loss (Uesato et al. 2018, Eq. 4) does the same.

The block is differentiable (its gradient is exact, just numerically zero), so no BPDA applies:
it exists to show that the gradient-free attack and the diagnostics catch what PGD on
cross-entropy misses.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from robench.errors import RobenchError
from robench.registry import defenses
from robench.target import ANY


class LogitSaturation(nn.Module):
    """``temperature * model(x)``."""

    differentiable = True
    randomized = False

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


@defenses.register("logit_saturation", description="logits times a large temperature (defensive distillation); CE gradients underflow",
                   inputs=(ANY,))
def logit_saturation(model: nn.Module, *, temperature: float = 1000.0) -> nn.Module:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise RobenchError(f"logit_saturation: temperature must be a finite number > 0, got {temperature!r}")
    return LogitSaturation(model, float(temperature))
