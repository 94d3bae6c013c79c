"""Target tags: everything robench reads about a target, computed once from its whole module tree.

As scikit-learn's ``get_tags`` does for estimators, :func:`target_tags` turns what the blocks of a
target declare into one frozen :class:`TargetTags`; the run context computes it once per defense
(``robench.resolve.Context.tags``) and every reader (verification, units, attacks, probes,
budgets, certifiers) reads the tags, never a flag off a module. Reading the whole tree matters: a
randomized block nested inside a user's ``nn.Sequential`` makes the whole target randomized, for
the majority vote as for EOT, so no break is judged on one lucky draw.

A defense card's ``differentiable`` / ``randomized`` are overrides that win over the tree; they
live in the tags only, so nothing is written onto a user's module (the model handed to
``robench.evaluate`` is left as it was). Where an attack reads tags itself (SPSA's loss draws), it
is given a :class:`Declared` view that carries them.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor, nn

from robench.errors import RobenchError


#: the flags a defense card may override
OVERRIDABLE = ("differentiable", "randomized")


@dataclass(frozen=True)
class GaussianSmoothing:
    """A smoothed classifier's parts (Cohen et al. 2019): what randomized smoothing certifies."""

    base: nn.Module
    sigma: float


@dataclass(frozen=True)
class TargetTags:
    """What robench knows about a target. Built by :func:`target_tags`; read, never re-derived."""

    #: False when any block has no useful gradient: gradient attacks go through BPDA
    differentiable: bool = True
    #: True when any block draws randomness: predictions are majority votes, gradients use EOT
    randomized: bool = False
    #: every randomized block draws each row apart from the others, so k draws of a batch may be
    #: one forward of the batch stacked k times (``robench.target.repeat_rows``)
    independent_rows: bool = False
    #: rows of the underlying target one forward row costs (an EOT view: its draws)
    queries_per_row: int = 1
    #: the blocks BPDA substitutes (declared ``differentiable = False``, or the root by a card)
    non_differentiable: tuple[nn.Module, ...] = field(default=(), repr=False)
    #: set when the target is a Gaussian-smoothed classifier (``gaussian_smoothing``)
    smoothing: GaussianSmoothing | None = field(default=None, repr=False)
    #: places inside the target that cut its input gradient, found by running it
    #: (``robench.discover``): gradient attacks backpropagate through the identity there
    gradient_cuts: tuple[Any, ...] = ()  # robench.discover.GradientCut (tags sit below discover)
    #: what robench found by running the target and now handles (sentences for run.json and the report)
    discovered: tuple[str, ...] = ()

    @property
    def stacks_draws(self) -> bool:
        """Whether draws of a batch may run as one forward of stacked copies."""
        return self.randomized and self.independent_rows


def _blocks(root: nn.Module) -> Iterator[nn.Module]:
    """``root`` and its submodules, each once, without looking inside a module that declares its
    tags whole (``robench_tags()``)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        yield module
        if not callable(getattr(module, "robench_tags", None)):
            stack.extend(reversed(list(module.children())))


def _flag(module: nn.Module, name: str, default: bool) -> bool:
    return bool(getattr(module, name, default))


def _check_overrides(overrides: Mapping[str, bool | None]) -> dict[str, bool]:
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise RobenchError(f"target tags: unknown override(s) {', '.join(unknown)}; valid: {', '.join(OVERRIDABLE)}")
    return {name: bool(value) for name, value in overrides.items() if value is not None}


def target_tags(target: nn.Module, overrides: Mapping[str, bool | None] | None = None) -> TargetTags:
    """The tags of ``target``, from every block in its tree, with ``overrides`` (a card's explicit
    ``differentiable`` / ``randomized``; None values are ignored) winning over the tree.

    Call it once per target and pass the result on: it walks the whole tree.
    """
    wanted = _check_overrides(overrides or {})
    declare = getattr(target, "robench_tags", None)
    if callable(declare):
        return _overlay(declare(), target, wanted)
    non_differentiable: list[nn.Module] = []
    randomized_blocks: list[nn.Module] = []
    summaries: list[TargetTags] = []
    for block in _blocks(target):
        declare = getattr(block, "robench_tags", None)
        if callable(declare):
            summaries.append(declare())
            continue
        if not _flag(block, "differentiable", True):
            non_differentiable.append(block)
        if _flag(block, "randomized", False):
            randomized_blocks.append(block)
    for summary in summaries:
        non_differentiable.extend(summary.non_differentiable)
    smoothing = getattr(target, "gaussian_smoothing", None)
    tags = TargetTags(
        differentiable=not non_differentiable and all(s.differentiable for s in summaries),
        randomized=bool(randomized_blocks) or any(s.randomized for s in summaries),
        independent_rows=(bool(randomized_blocks) or any(s.randomized for s in summaries))
        and all(_flag(b, "independent_rows", False) for b in randomized_blocks)
        and all(s.independent_rows for s in summaries if s.randomized),
        queries_per_row=int(getattr(target, "queries_per_row", 1)),
        non_differentiable=tuple(non_differentiable),
        smoothing=smoothing if isinstance(smoothing, GaussianSmoothing) else None,
    )
    return _overlay(tags, target, wanted)


def with_findings(tags: TargetTags, findings: Any) -> TargetTags:
    """``tags`` with what running the target showed: randomness it did not declare (its draws are
    not assumed independent per row, so they are never stacked), and the places that cut its input
    gradient."""
    if findings.randomized and not tags.randomized:
        tags = replace(tags, randomized=True, independent_rows=False)
    if findings.gradient_cuts:
        tags = replace(tags, gradient_cuts=tuple(findings.gradient_cuts))
    return replace(tags, discovered=tuple(findings.describe())) if findings.describe() else tags


def with_overrides(tags: TargetTags, root: nn.Module, overrides: Mapping[str, bool | None]) -> TargetTags:
    """``tags`` of the target ``root`` with a card's ``overrides`` over them (no second walk)."""
    return _overlay(tags, root, _check_overrides(overrides))


def _overlay(tags: TargetTags, root: nn.Module, wanted: dict[str, bool]) -> TargetTags:
    """A card's flags over the tree's: the card wins, and its flags apply to the whole target (a
    root declared non-differentiable by the card is the block BPDA substitutes)."""
    if "differentiable" in wanted:
        if wanted["differentiable"]:
            tags = replace(tags, differentiable=True, non_differentiable=())
        else:
            blocks = tags.non_differentiable if root in tags.non_differentiable else (root, *tags.non_differentiable)
            tags = replace(tags, differentiable=False, non_differentiable=blocks)
    if "randomized" in wanted:
        if wanted["randomized"] and not tags.randomized:
            tags = replace(tags, randomized=True, independent_rows=_flag(root, "independent_rows", False))
        elif not wanted["randomized"]:
            tags = replace(tags, randomized=False)
    return tags


class Declared(nn.Module):
    """``target`` with its tags declared whole: the same forward pass, and readers of the tags
    (an attack, ``queries_per_row``) get ``tags`` without walking the tree (a card's flags
    included; nothing is written onto ``target``)."""

    def __init__(self, target: nn.Module, tags: TargetTags, vote: object | None = None) -> None:
        super().__init__()
        self.target = target
        self.tags = tags
        # batch sizes are the target's (robench.batching); a plain attribute, not a second registration
        self.__dict__["probe_as"] = target
        #: a randomized target's majority vote (``robench.target.confirmed_breaks``), or None
        self.__dict__["vote"] = vote

    def robench_tags(self) -> TargetTags:
        return self.tags

    def forward(self, x: Tensor) -> Tensor:
        return self.target(x)

