"""Work units: the pieces an evaluation is cut into, and the two keys each one carries.

A unit is an attack (or the diagnostic probes) on one defense at one epsilon, on a shard
``[start, stop)`` of the selected examples. Its **seed key** names its randomness without the
shard, so an example's attack does not depend on the shard size; its **store key** names its
stored result and includes the shard.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: the pseudo-attack label of diagnostic-probe units
PROBES = "(diagnostics)"
#: the pseudo-attack label of a cascade unit: every attack of the suite in turn, on one shard
CASCADE = "(cascade)"


@dataclass(frozen=True)
class Unit:
    defense: str
    epsilon: float
    attack: str  # an attack label of the suite, or PROBES
    start: int
    stop: int

    @property
    def seed_key(self) -> str:
        """What the unit's per-example random streams derive from (no shard in it)."""
        return self.seed_key_for(self.attack)

    @property
    def store_key(self) -> str:
        """What the unit's stored result is named by (the seed key plus the shard)."""
        return f"{self.seed_key}|{self.start}:{self.stop}"

    @property
    def is_probe(self) -> bool:
        return self.attack == PROBES

    @property
    def is_cascade(self) -> bool:
        return self.attack == CASCADE

    def seed_key_for(self, attack: str) -> str:
        """The seed key of ``attack`` on this unit's defense and epsilon: a cascade's attacks draw
        what the same attack draws outside a cascade, so each example meets the same attack."""
        return f"{self.defense}|{float(self.epsilon)!r}|{attack}"

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
    labels, epsilons = ([CASCADE] if cascade else list(attacks)) + list(certifiers), list(epsilons)
    units = []
    for defense in defenses:
        for epsilon in epsilons:
            for label in labels:
                units.extend(Unit(defense, epsilon, label, a, b) for a, b in cuts)
            if diagnostics:
                units.append(Unit(defense, epsilon, PROBES, 0, n_examples))
    return units
