"""Estimated model queries of each work unit: what progress counts and the cost warning weighs.

An attack says the most forward rows one example can cost (``Attack.budget``); a unit's budget is
that times its examples, times the EOT draws its gradients average on a randomized defense. Early
stopping makes real runs cheaper, never dearer, so the remaining budget over the rate measured so
far is an honest upper estimate of the time left. These numbers steer progress output only; no
result depends on them.
"""
from __future__ import annotations

from robench.plan import Unit
from robench.resolve import Context

#: attacks that cannot say (a foolbox class without a ``steps`` parameter): one step per example
UNKNOWN_BUDGET = 1


def probe_budget() -> int:
    """Queries per probe example of the diagnostics, from their own constants (a generous sum)."""
    from robench.diagnostics import checklist, probes

    from robench.attacks.decision import HopSkipJump

    hsj = HopSkipJump(**checklist.HSJ).budget(None)  # type: ignore[arg-type]  (its budget ignores the threat)
    pgd = probes.PGD_STEPS + 1
    return (probes.UNBOUNDED_PGD_STEPS + probes.UNBOUNDED_SPSA["steps"] * (probes.UNBOUNDED_SPSA["samples"] + 1)
            + pgd * (1 + probes.CONVERGENCE_FACTOR) + pgd  # base, longer, transfer
            + 2 * probes.RANDOMNESS_PASSES + 2 + checklist.RANDOM_SEARCH_SAMPLES + hsj
            + 4 * checklist.FD_PAIRS + 2 + pgd * (checklist.RESTARTS + len(checklist.STEP_FACTORS))
            + pgd * checklist.TARGET_CLASSES)


def unit_budget(ctx: Context, unit: Unit) -> int:
    """Estimated queries of ``unit`` (see the module docstring)."""
    n = unit.stop - unit.start
    if unit.is_probe:
        from robench.diagnostics import PROBE_EXAMPLES

        return min(n, PROBE_EXAMPLES) * probe_budget()
    if unit.attack in ctx.certifiers:
        _, certifier = ctx.certifiers[unit.attack]
        # smoothing's noisy forward passes are queries; bound propagation and a solver's time are
        # not: 0 marks a unit whose cost the budget does not measure (progress says so)
        return n * (getattr(certifier, "n0", 0) + getattr(certifier, "n", 0))
    labels = list(ctx.attacks) if unit.is_cascade else [unit.attack]
    threat = ctx.threats[float(unit.epsilon)]
    randomized = unit.defense in ctx.cards and ctx.tags(unit.defense).randomized
    total = 0
    for label in labels:
        if label not in ctx.attacks:
            continue
        spec, attack = ctx.attacks[label]
        per_example = attack.budget(threat) or UNKNOWN_BUDGET
        if randomized and not attack.gradient_free and spec.adaptive:
            from robench.units import DEFAULT_EOT_SAMPLES

            per_example *= spec.eot_samples or DEFAULT_EOT_SAMPLES
        total += per_example
    return n * max(total, 1)


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
