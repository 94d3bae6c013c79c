"""The certifier contract: per example, ``certified``, ``counterexample`` or ``unknown``.

``certified`` means no point of the threat model's ball, intersected with the data bounds, changes
the prediction away from the label (so a certified example is classified correctly at x itself).
``counterexample`` is a proposal, like an attack's: the harness runs ``robench.verify`` on it and
counts it only if verified. ``unknown`` is everything else (a bound too loose, a time-out, a
smoothed classifier that abstains).

A certifier is a method like an attack (``robench.method``): it declares the norms and input kinds
it supports, whether its certificates are ``sound`` (hold for every point of the ball, so no attack
may break a certified example) and what one example costs in model queries (``budget``). A new
one is a subclass decorated ``@certifiers.register("name")`` (``robench.registry``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from robench.errors import RobenchError
from robench import schema
from robench.hyperparameters import Hyperparameters
from robench.target import ANY
from robench.threat import ThreatModel

#: status codes (``Certification.status``, int8)
UNKNOWN, CERTIFIED, COUNTEREXAMPLE = 0, 1, 2
#: the names results tables use for the codes (examples.csv's ``certify_status``, robench.schema's vocabulary)
STATUS_NAMES: dict[int, str] = {UNKNOWN: schema.UNKNOWN, CERTIFIED: schema.CERTIFIED, COUNTEREXAMPLE: schema.COUNTEREXAMPLE}


@dataclass
class Certification:
    """Per example: a status code, a proposed counterexample and the wall time spent.

    ``counterexample`` rows are meaningful only where ``status == COUNTEREXAMPLE`` (elsewhere they
    hold the clean x). ``seconds`` is per example; work done for a whole batch (bound propagation)
    is shared equally among its examples. ``details`` holds certifier-specific per-example values
    (e.g. ``margin_lower``: a lower bound on min_j z_y - z_j over the ball; ``radius`` for smoothing).
    """

    status: Tensor
    counterexample: Tensor
    seconds: Tensor
    details: dict[str, Tensor] = field(default_factory=dict)

    @property
    def certified(self) -> Tensor:
        return self.status == CERTIFIED

    @property
    def found_counterexample(self) -> Tensor:
        return self.status == COUNTEREXAMPLE

    @property
    def unknown(self) -> Tensor:
        return self.status == UNKNOWN

    def names(self) -> list[str]:
        """The status of each example as ``certified`` / ``counterexample`` / ``unknown``."""
        return [STATUS_NAMES[int(s)] for s in self.status.tolist()]

    def __len__(self) -> int:
        return len(self.status)

    @staticmethod
    def cat(parts: list[Certification]) -> Certification:
        """Join the certifications of consecutive chunks of examples."""
        if not parts:
            raise RobenchError("Certification.cat needs at least one part")
        keys = set(parts[0].details)
        for p in parts[1:]:
            keys &= set(p.details)
        return Certification(
            status=torch.cat([p.status for p in parts]),
            counterexample=torch.cat([p.counterexample for p in parts]),
            seconds=torch.cat([p.seconds for p in parts]),
            details={k: torch.cat([p.details[k] for p in parts]) for k in sorted(keys)},
        )


class Certifier(Hyperparameters):
    """Base class: keyword-only hyperparameters, shown by ``repr``; ``certify`` does the work.

    ``check(target, threat)`` raises a one-line :class:`RobenchError` (an unsupported layer,
    defense or norm) before any work, so a run can refuse before it starts.
    """

    name: ClassVar[str] = "certifier"
    #: the norms it has a version for
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    #: the input kinds it supports (``robench.target``), as attacks declare them
    inputs: ClassVar[tuple[str, ...]] = (ANY,)
    #: a certified example has no adversarial example in the ball: an attack that breaks one is a bug
    sound: ClassVar[bool] = True

    def supports(self, norm: str) -> bool:
        return norm in self.norms

    def budget(self, threat: ThreatModel) -> int:
        """Model queries per example, as progress counts them: bound propagation and a solver's
        time are none (0: a unit whose cost the budget does not measure; progress says so)."""
        return 0

    def example_target(self, model: nn.Module) -> nn.Module:
        """What this certifier is checked on when handed a plain network (``robench.testing``):
        the network itself; a certifier of a particular defense wraps it in that defense."""
        return model

    def check_norm(self, threat: ThreatModel) -> None:
        if not self.supports(threat.norm):
            raise RobenchError(f"{self.name} certifies {' and '.join(self.norms)} balls only, not {threat.norm}")

    def check(self, target: nn.Module, threat: ThreatModel, example_shape: tuple[int, ...] | None = None) -> None:
        """Refuse (one line) what this certifier cannot handle; silent otherwise."""
        self.check_norm(threat)

    def certify(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                seeds: Tensor | None = None) -> Certification:
        """Certify examples ``x`` (N x ...) with labels ``y`` against ``threat``.

        ``seeds`` (per-example, as attacks get them) makes a randomized certifier's result for an
        example independent of its batch; deterministic certifiers ignore it.
        """
        raise NotImplementedError


# -- small shared helpers ------------------------------------------------------------------


def check_examples(x: Tensor, y: Tensor) -> None:
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise RobenchError(f"certify needs x of shape (N, ...) and labels y of shape (N,), got {tuple(x.shape)} and {tuple(y.shape)}")


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
