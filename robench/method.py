"""The one contract of everything that answers per example: attacks and certifiers.

The harness reads the same few declarations of either kind (DESIGN: capabilities are declared, not
discovered): which norms and input kinds it supports (``resolve`` refuses a mismatch before a run
starts), whether its certificates are ``sound`` (``assemble`` checks that no attack broke what a
sound certifier certified) and what one example costs in model queries (``budget`` sums it).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from robench.threat import ThreatModel


@runtime_checkable
class Method(Protocol):
    #: its registered name
    name: str
    #: the input kinds it supports (``robench.target``: image, sequence or any)
    inputs: tuple[str, ...]
    #: its ``certified`` answers hold for every point of the ball (an attack: False, it certifies nothing)
    sound: bool

    def supports(self, norm: str) -> bool:
        """Whether it has a version for this norm."""
        ...

    def budget(self, threat: ThreatModel) -> int | None:
        """The most model queries (forward rows) one example can cost; None when it cannot say."""
        ...
