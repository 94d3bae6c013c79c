"""The registry of diagnostic checks, and the row every check produces.

A check is declared once, by :func:`check` on the function that runs it: its name (the ``check``
column of diagnostics.csv), its kind and the sentence a report shows for it. Everything else (the
name lists, the report's sentences, which checks a run executes) is derived from the registry, so
adding a check is one decorated function.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, ParamSpec

import pandas as pd

from robench.errors import RobenchError
from robench.schema import DIAGNOSTIC_COLUMNS

#: "table": reads a finished run's examples table (pure pandas); "probe": runs small extra attacks.
Kind = Literal["table", "probe"]
KINDS: tuple[str, ...] = ("table", "probe")

#: Significance level of every one-sided paired test (sign test on discordant examples).
ALPHA = 0.05


@dataclass(frozen=True)
class Diagnostic:
    """One check run on one (defense, epsilon): whether it fired and the numbers behind it."""

    defense: str
    epsilon: float
    check: str
    fired: bool
    detail: str


class Finding(NamedTuple):
    """What a check's body returns: a :class:`Diagnostic` without its name, which the registry adds."""

    defense: str
    epsilon: float
    fired: bool
    detail: str


@dataclass(frozen=True)
class Check:
    """A registered check: its name, kind, report sentence, and the decorated function that runs it."""

    name: str
    kind: Kind
    sentence: str
    run: Callable[..., list[Diagnostic]]


_REGISTRY: dict[str, Check] = {}
P = ParamSpec("P")


def check(name: str, *, kind: Kind, sentence: str) -> Callable[[Callable[P, Finding | Iterable[Finding]]], Callable[P, list[Diagnostic]]]:
    """Register the decorated function as the check ``name``.

    The function returns one :class:`Finding` or an iterable of them; the decorated function returns
    them as :class:`Diagnostic` rows named ``name``, so the name is written only here.
    """
    if kind not in KINDS:
        raise RobenchError(f"diagnostic check {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if name in _REGISTRY:
        raise RobenchError(f"diagnostic check {name!r} is registered twice")

    def register(body: Callable[P, Finding | Iterable[Finding]]) -> Callable[P, list[Diagnostic]]:
        @functools.wraps(body)
        def run(*args: P.args, **kwargs: P.kwargs) -> list[Diagnostic]:
            found = body(*args, **kwargs)
            findings = [found] if isinstance(found, Finding) else list(found)
            return [Diagnostic(f.defense, float(f.epsilon), name, bool(f.fired), f.detail) for f in findings]

        run.__signature__ = inspect.signature(body).replace(return_annotation="list[Diagnostic]")  # type: ignore[attr-defined]
        _REGISTRY[name] = Check(name, kind, sentence, run)
        return run

    return register


def registered(kind: Kind | None = None) -> tuple[Check, ...]:
    """The registered checks of ``kind`` (all when None), in the order they were declared."""
    return tuple(c for c in _REGISTRY.values() if kind is None or c.kind == kind)


def diagnostics_frame(diagnostics: Iterable[Diagnostic]) -> pd.DataFrame:
    """One row per check run, columns exactly ``defense, epsilon, check, fired, detail``."""
    rows = [(d.defense, float(d.epsilon), d.check, bool(d.fired), d.detail) for d in diagnostics]
    frame = pd.DataFrame(rows, columns=list(DIAGNOSTIC_COLUMNS))
    return frame.astype({"defense": str, "epsilon": float, "check": str, "fired": bool, "detail": str})
