"""Hyperparameters: declared once, validated by one function with one message, shown by ``repr``.

What attacks and certifiers share (DESIGN: keyword-only, with the paper's defaults; scikit-learn's
``_parameter_constraints``). A class declares each keyword of its constructor once, beside it:

    class APGD(IterativeAttack):
        hyperparameters = declare(
            steps=Int(100, "iterations per restart (Algorithm 1's N_iter)", ge=1),
            rho=Float(0.75, "the checkpoint condition's fraction of loss increases", gt=0, le=1),
            max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
        )

        def __init__(self, *, steps: int = 100, rho: float = 0.75, max_batch: int | None = None) -> None:
            self._set(locals())

A declaration gives the type (``Int``, ``Float``, ``Flag``, ``Choice``), the default, a one-line
doc, the range (``ge``/``gt``/``le``/``lt``) and whether None is allowed (when the default is None).
:func:`check` is the one validator, and every refusal reads
``"{owner}: {name} must be {expected}, got {value!r}"``, e.g. ``pgd: steps must be an integer >= 1
or None, got 0``. A bool is never an integer nor a number; NaN and infinities are refused; an integer
is accepted for a float and stored as a float.

The constructor stays explicit (keyword-only, with its defaults), so ``help()``, ``inspect`` and an
IDE's static analysis read the real signature, and a constructor that derives values (SPSA's
absolute or relative steps) or forwards them (the foolbox adapter) stays plain Python; its first
line hands its arguments to :meth:`Hyperparameters._set`. A test over the registries keeps the
declarations and the signatures equal (names and defaults). ``robench.resolve`` checks a card's
values against the same declarations before a run starts, and a user's factory that declares
nothing against its type hints (:func:`from_hint`), with the same message.
"""
from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from robench.errors import RobenchError

#: what a refusal says a value of each kind must be
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter: its kind (bool, int, float or str), default, one-line doc, and what it
    admits: None (``optional``), a range (``ge``/``gt``/``le``/``lt``), ``choices`` (an enum of
    strings), ``multiple_of`` (an integer's)."""

    kind: type
    default: Any
    doc: str = ""
    optional: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    multiple_of: int | None = None

    def expected(self) -> str:
        """What a valid value is, in words: ``an integer >= 1``, ``a finite number > 0 and < 0.5``."""
        if self.choices:
            words = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            words = _KIND_WORDS[self.kind]
            if self.multiple_of == 2:
                words = "an even integer"
            elif self.multiple_of is not None:
                words = f"an integer multiple of {self.multiple_of}"
            bounds = [f"{op} {_number(limit)}" for op, limit in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                      if limit is not None]
            if bounds:
                words += " " + " and ".join(bounds)
        return words + (" or None" if self.optional else "")

    def minimum(self) -> tuple[float, bool] | None:
        """(lower limit, inclusive) or None."""
        if self.ge is not None:
            return self.ge, True
        if self.gt is not None:
            return self.gt, False
        return None

    def just_below(self) -> int | float | None:
        """The value just below the minimum (what the minimum refuses), None without one."""
        found = self.minimum()
        if found is None:
            return None
        limit, inclusive = found
        if self.kind is int:
            return math.floor(limit) - 1 if inclusive else math.floor(limit)
        return math.nextafter(float(limit), -math.inf) if inclusive else float(limit)

    def check(self, owner: str, name: str, value: Any) -> Any:
        """``value`` if valid (an int given for a float as a float), else a :class:`RobenchError`:
        ``"{owner}: {name} must be {expected}, got {value!r}"``."""
        if value is None and self.optional:
            return None
        checked = self._convert(value)
        if checked is _INVALID or not self._in_range(checked):
            raise RobenchError(f"{owner}: {name} must be {self.expected()}, got {value!r}")
        return checked

    def _convert(self, value: Any) -> Any:
        if self.kind is bool:
            return value if isinstance(value, bool) else _INVALID
        if isinstance(value, bool):
            return _INVALID  # never an integer nor a number
        if self.kind is int:
            return int(value) if isinstance(value, numbers.Integral) else _INVALID
        if self.kind is float:
            if not isinstance(value, numbers.Real):
                return _INVALID
            try:
                number = float(value)
            except (OverflowError, ValueError):
                return _INVALID
            return number if math.isfinite(number) else _INVALID
        if self.kind is str:
            return value if isinstance(value, str) and (not self.choices or value in self.choices) else _INVALID
        return _INVALID

    def _in_range(self, value: Any) -> bool:
        if self.kind not in (int, float):
            return True
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
                and (self.multiple_of is None or value % self.multiple_of == 0))


_INVALID = object()


def _number(limit: float) -> str:
    """A limit as a message shows it: 1, 0, 0.5 (not 1.0, 1e+00)."""
    return str(int(limit)) if float(limit).is_integer() and abs(limit) < 1e15 else repr(float(limit))


def _optional(default: Any, optional: bool | None) -> bool:
    return default is None if optional is None else optional


def Int(default: int | None, doc: str, *, ge: int | None = None, gt: int | None = None, le: int | None = None,
        lt: int | None = None, multiple_of: int | None = None, optional: bool | None = None) -> Hyperparameter:
    """An integer (None allowed when the default is None, or ``optional``)."""
    return Hyperparameter(int, default, doc, _optional(default, optional), ge, gt, le, lt, multiple_of=multiple_of)


def Float(default: float | None, doc: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, optional: bool | None = None) -> Hyperparameter:
    """A finite number, stored as a float (None allowed when the default is None, or ``optional``)."""
    return Hyperparameter(float, default, doc, _optional(default, optional), ge, gt, le, lt)


def Flag(default: bool, doc: str) -> Hyperparameter:
    """True or false."""
    return Hyperparameter(bool, default, doc)


def Choice(default: str, choices: tuple[str, ...], doc: str) -> Hyperparameter:
    """One of a few strings (an enum)."""
    return Hyperparameter(str, default, doc, choices=tuple(choices))


def declare(**parameters: Hyperparameter) -> dict[str, Hyperparameter]:
    """A class's declarations, in the order its ``repr`` shows them."""
    return dict(parameters)


def declarations(factory: Any) -> dict[str, Hyperparameter]:
    """What a factory (a class, or a function carrying ``hyperparameters``) declares; {} if nothing."""
    found = getattr(factory, "hyperparameters", None)
    return dict(found) if isinstance(found, Mapping) else {}


def from_hint(hint: Any) -> Hyperparameter | None:
    """A type hint of a factory that declares nothing, as a declaration without a range (bool,
    int, float, str, each optionally with None); None for a richer hint (a tuple, a tensor, a
    class, a union with one): the factory checks those itself."""
    if hint is None:
        return None
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in allowed
    kinds = [t for t in allowed if t is not type(None)]
    if not kinds or any(t not in (bool, int, float, str) for t in kinds):
        return None
    if len(kinds) == 1:
        return Hyperparameter(kinds[0], None, optional=optional)
    if set(kinds) == {int, float}:
        return Hyperparameter(float, None, optional=optional)
    return _Union(tuple(Hyperparameter(k, None) for k in kinds), optional)


@dataclass(frozen=True)
class _Union:
    """A hint such as ``int | str``: a value of any of its kinds."""

    members: tuple[Hyperparameter, ...]
    optional: bool

    def expected(self) -> str:
        return " or ".join(m.expected() for m in self.members) + (" or None" if self.optional else "")

    def check(self, owner: str, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        for member in self.members:
            checked = member._convert(value)
            if checked is not _INVALID:
                return value
        raise RobenchError(f"{owner}: {name} must be {self.expected()}, got {value!r}")


def check(owner: str, name: str, value: Any, declaration: Hyperparameter) -> Any:
    """The one validator: ``value`` as stored, or ``"{owner}: {name} must be {expected}, got {value!r}"``."""
    return declaration.check(owner, name, value)


class Hyperparameters:
    """``params()`` are the public attributes set in ``__init__``; ``repr`` lists them.

    ``hyperparameters`` declares every keyword of the constructor (:func:`declare`), which hands
    its arguments to :meth:`_set` to be validated and stored.
    """

    #: name -> declaration, every keyword of the constructor, in ``repr`` order
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {}

    def _owner(self) -> str:
        return str(getattr(self, "name", type(self).__name__))

    def _checked(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (a constructor's ``locals()``: ``self`` and ``__class__`` are skipped)
        validated against the declarations, in declaration order."""
        given = {k: v for k, v in values.items() if k not in ("self", "__class__")}
        undeclared = sorted(set(given) - set(self.hyperparameters))
        if undeclared:
            raise TypeError(f"{type(self).__name__} does not declare {', '.join(undeclared)} in its hyperparameters")
        owner = self._owner()
        return {name: declaration.check(owner, name, given[name])
                for name, declaration in self.hyperparameters.items() if name in given}

    def _set(self, values: Mapping[str, Any]) -> None:
        """Validate ``values`` (a constructor's ``locals()``) and store each as an attribute, in
        declaration order (the order ``repr`` shows)."""
        for name, value in self._checked(values).items():
            setattr(self, name, value)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
