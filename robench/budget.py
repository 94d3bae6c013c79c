"""Estimated model queries of each work unit: what progress counts and the cost warning weighs.

Every method says what it costs: an attack or a certifier the most model queries one example can
cost (``budget(threat)``, robench.method), the probes their own sum (``diagnostics.probe_budget``).
This module only adds the declarations up: times the unit's examples, times the EOT draws a
gradient attack averages on a randomized defense. Early stopping makes real runs cheaper, never
dearer, so the remaining budget over the rate measured so far is an honest upper estimate of the
time left. These numbers steer progress output only; no result depends on them.
"""
from __future__ import annotations

from robench.attacks.adaptive import eot_draws
from robench.plan import Unit, UnitKind
from robench.resolve import Context

#: methods that cannot say (a foolbox class without a ``steps`` parameter): one step per example
UNKNOWN_BUDGET = 1


def _attack_budget(ctx: Context, unit: Unit, label: str) -> int:
    spec, attack = ctx.attacks[label]
    per_example = attack.budget(ctx.threats[float(unit.epsilon)]) or UNKNOWN_BUDGET
    randomized = unit.defense in ctx.cards and ctx.tags(unit.defense).randomized
    if randomized and not attack.gradient_free and spec.adaptive:
        per_example *= eot_draws(spec.eot_samples)
    return per_example


def unit_budget(ctx: Context, unit: Unit) -> int:
    """Estimated queries of ``unit`` (see the module docstring)."""
    n = unit.n_examples
    if unit.kind is UnitKind.PROBES:
        from robench.diagnostics import probe_budget

        return probe_budget(n, randomized=unit.defense in ctx.cards and ctx.tags(unit.defense).randomized)
    if unit.kind is UnitKind.CERTIFY:
        _, certifier = ctx.certifiers[unit.method]
        # 0 marks a unit whose cost the budget does not measure (a solver's time): progress says so
        return n * (certifier.budget(ctx.threats[float(unit.epsilon)]) or 0)
    labels = list(ctx.attacks) if unit.kind is UnitKind.CASCADE else [unit.method]
    return n * max(sum(_attack_budget(ctx, unit, label) for label in labels), 1)


def budgets(ctx: Context, units: list[Unit]) -> dict[str, int]:
    """``unit_budget`` of every unit, by store key."""
    return {u.store_key: unit_budget(ctx, u) for u in units}


#: warn before a run whose estimated time is above this many seconds
WARN_SECONDS = 600.0
#: rows timed per defense for the estimate
TIMED_ROWS = 64


def estimated_seconds(ctx: Context, units: list[Unit], budget: dict[str, int]) -> float:
    """Seconds the units could take: each defense's forward time per row, measured now on a few of
    the run's examples, times its units' budgets, times 2 for the backward passes of gradient
    attacks. An upper-end estimate for a warning, never a number in the results."""
    import time

    import torch

    per_row: dict[str, float] = {}
    x = ctx.x[:TIMED_ROWS].to(ctx.device)
    with torch.no_grad():
        for defense in dict.fromkeys(u.defense for u in units):
            target = ctx.target(defense)
            target(x[:1])  # warm-up
            start = time.perf_counter()
            target(x)
            per_row[defense] = (time.perf_counter() - start) / len(x)
    return sum(2 * per_row[u.defense] * budget.get(u.store_key, 0) for u in units)
