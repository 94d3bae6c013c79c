"""The attack contract: propose adversarial examples; ``verify`` decides whether they count."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from robench.hyperparameters import Hyperparameters
from robench.target import ANY
from robench.threat import ThreatModel


@dataclass
class AttackResult:
    """Proposed adversarial examples and the model queries spent on each example.

    ``queries`` counts forward rows (gradient attacks: one per forward/backward pass of the
    example), exact per example.
    """

    x_adv: Tensor
    queries: Tensor


class Attack(Hyperparameters):
    """Base class: keyword-only hyperparameters with the paper's defaults, shown by ``repr``.

    ``run`` receives per-example ``seeds`` (see ``robench.rng``) so that an example's result does
    not depend on the batch, chunk or shard it ran in.
    """

    name: ClassVar[str] = "attack"
    gradient_free: ClassVar[bool] = False
    #: the input kinds it supports (``robench.target``): checked before a run starts
    inputs: ClassVar[tuple[str, ...]] = (ANY,)
    #: attacks certify nothing (``robench.method``): only a certifier's certificates can be sound
    sound: ClassVar[bool] = False

    def supports(self, norm: str) -> bool:
        """Whether the attack has a version for this threat model's norm (checked before a run starts)."""
        return True

    def budget(self, threat: ThreatModel) -> int | None:
        """The most forward rows one example can cost (before a target's own ``queries_per_row``),
        for progress bars and cost warnings only; None when the attack cannot say."""
        return None

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        raise NotImplementedError
