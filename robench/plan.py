"""Work units: the pieces an evaluation is cut into, what kind each is, and the two keys it carries.

A unit is one method (an attack or a certifier), the suite's attacks in a cascade, or the
diagnostic probes, on one defense at one epsilon, on a shard ``[start, stop)`` of the selected
examples. Its **seed key** names its randomness without the shard, so an example's attack does not
depend on the shard size; its **store key** names its stored result and includes the shard. Both
keys are part of what a run is: their text must never change (it seeds the randomness and names
the stored files of runs that a resume finishes).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class UnitKind(Enum):
    """What a unit runs; the runner, the budget and the assembly dispatch on it."""

    ATTACK = "attack"      # one attack of the suite
    CASCADE = "cascade"    # every attack of the suite in turn, each on what the earlier ones left standing
    CERTIFY = "certify"    # one certifier of the suite
    PROBES = "probes"      # the diagnostics' probe attacks


#: what the keys call a unit that runs no single named method (fixed: see the module docstring)
KEY_NAMES: dict[UnitKind, str] = {UnitKind.CASCADE: "(cascade)", UnitKind.PROBES: "(diagnostics)"}


@dataclass(frozen=True)
class Unit:
    defense: str
    epsilon: float
    #: the suite label of the attack or certifier it runs ("" for a cascade or the probes)
    method: str
    start: int
    stop: int
    kind: UnitKind = UnitKind.ATTACK

    @property
    def name(self) -> str:
        """What keys, progress and run.json call the unit's method: its label, or the kind's key name."""
        return KEY_NAMES.get(self.kind, self.method)

    @property
    def seed_key(self) -> str:
        """What the unit's per-example random streams derive from (no shard in it)."""
        return self.seed_key_for(self.name)

    @property
    def store_key(self) -> str:
        """What the unit's stored result is named by (the seed key plus the shard)."""
        return f"{self.seed_key}|{self.start}:{self.stop}"

    def seed_key_for(self, label: str) -> str:
        """The seed key of ``label`` on this unit's defense and epsilon: a cascade's attacks draw
        what the same attack draws outside a cascade, so each example meets the same attack."""
        return f"{self.defense}|{float(self.epsilon)!r}|{label}"

    @property
    def n_examples(self) -> int:
        return self.stop - self.start


def shards(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def plan_units(
    defenses: Iterable[str], epsilons: Iterable[float], attacks: Iterable[str], *, n_examples: int, shard_size: int,
    diagnostics: bool, cascade: bool = False, certifiers: Iterable[str] = (),
) -> list[Unit]:
    """Every unit of a run, in the order results are assembled (never the order they finish).

    Without a cascade, one unit per attack and shard (attacks are independent: they run in any
    order, anywhere); with one, one unit per shard runs the suite's attacks in turn. Each
    certifier is a unit per shard of its own, like an attack."""
    cuts = shards(n_examples, shard_size)
    methods = [("", UnitKind.CASCADE)] if cascade else [(label, UnitKind.ATTACK) for label in attacks]
    methods += [(label, UnitKind.CERTIFY) for label in certifiers]
    units = []
    for defense in defenses:
        for epsilon in epsilons:
            for method, kind in methods:
                units.extend(Unit(defense, epsilon, method, a, b, kind) for a, b in cuts)
            if diagnostics:
                units.append(Unit(defense, epsilon, "", 0, n_examples, UnitKind.PROBES))
    return units
