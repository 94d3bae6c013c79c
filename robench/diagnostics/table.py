"""Table checks: symptoms of gradient masking read off a finished run's examples table (pure pandas)."""
from __future__ import annotations

from collections.abc import Collection, Iterator

import pandas as pd

from robench.diagnostics.registry import ALPHA, Diagnostic, Finding, check, registered
from robench.errors import RobenchError
from robench.risk import as_bool, worst_case_examples
from robench.schema import COUNTEREXAMPLE, KEYS, NOT_CERTIFIED, WORST_CASE
from robench.stats import paired

#: gradient_free_beats_gradient fires when the examples broken only by gradient-free attacks are
#: more than this fraction of the clean-correct examples AND outnumber the examples broken only by
#: gradient attacks beyond chance (one-sided sign test, p < ALPHA). Five percent is our judgment,
#: not the paper's: a smaller gap barely moves a robust-accuracy table. The test keeps two attacks
#: that merely break different borderline examples (as happens on honest models) from firing it.
#: At 100 examples with no gradient-only breaks, it takes at least 6 gradient-free-only examples.
GRADIENT_FREE_GAP = 0.05

#: accuracy_not_decreasing: for consecutive epsilons, fires when robust accuracy rises significantly
#: (sign test on the examples robust only at the larger epsilon versus only at the smaller one,
#: p < ALPHA). Equal accuracies never fire: two close balls may well leave the same examples robust,
#: and one example robust only at the larger epsilon cannot reach p < ALPHA (its p is 0.5), so a
#: single unlucky restart is not called a failing attack.

_REQUIRED = ["defense", "epsilon", "attack", "example", "clean_correct", "broken"]


@check("gradient_free_beats_gradient", kind="table", sentence=(
    "A gradient-free attack (SPSA) broke examples that no gradient attack broke: the gradients the "
    "attacks followed do not point where the loss really goes, the 'obscurity' gap of Uesato et al. "
    "(2018). Trust the worst case over all attacks, not the gradient attacks alone, and adapt the "
    "gradient attack (BPDA for non-differentiable steps, EOT for randomness)."
))
def gradient_free_beats_gradient(examples: pd.DataFrame, *, gradient_free: Collection[str]) -> Iterator[Finding]:
    """Per (defense, epsilon): clean-correct examples broken by a gradient-free attack and by no gradient attack.

    ``gradient_free`` holds the attack labels that use no gradients (SPSA). The gap is the
    "obscurity" of Uesato et al. (2018); see ``GRADIENT_FREE_GAP`` for when it fires.
    """
    _require_columns(examples, _REQUIRED)
    attacked = examples[examples["attack"] != WORST_CASE]
    keys, varying, free = _group_keys(attacked), _varying(attacked), set(gradient_free)
    for values, group in attacked.groupby(keys, sort=True, dropna=False):
        defense, epsilon = _defense_epsilon(keys, values)
        prefix = _label(keys, values, varying)
        labels = sorted(group["attack"].unique())
        free_labels = [a for a in labels if a in free]
        gradient_labels = [a for a in labels if a not in free]
        if not free_labels or not gradient_labels:
            missing = "gradient-free" if not free_labels else "gradient"
            yield Finding(defense, epsilon, False,
                          f"{prefix}not run: needs a {missing} attack in the suite (attacks: {', '.join(labels)})")
            continue
        correct = group[group["clean_correct"].astype(bool)]
        broken = correct.pivot_table(index="example", columns="attack", values="broken", aggfunc="max").fillna(False).astype(bool)
        n = len(broken)
        if n == 0:
            yield Finding(defense, epsilon, False, f"{prefix}not run: no clean-correct examples")
            continue
        by_free = broken[free_labels].any(axis=1)
        by_gradient = broken[gradient_labels].any(axis=1)
        cascade = ""
        if "attacked" in correct.columns and not as_bool(correct["attacked"]).all():
            # a cascade: an example broken before the free attacks' turn never met them, so the
            # reverse can only be counted on the examples the free attacks were given
            given = correct.assign(attacked=as_bool(correct["attacked"])).pivot_table(
                index="example", columns="attack", values="attacked", aggfunc="max").fillna(False).astype(bool)
            by_gradient = by_gradient & given.reindex(broken.index)[free_labels].all(axis=1)
            cascade = " (cascade: the reverse counts only examples the gradient-free attacks were given)"
        free_only, gradient_only, p = paired(by_free, by_gradient)
        fired = free_only / n > GRADIENT_FREE_GAP and p < ALPHA
        detail = (
            f"{prefix}{'/'.join(free_labels)} broke {free_only} of {n} clean-correct examples "
            f"({free_only / n:.1%}) that {'/'.join(gradient_labels)} did not; the reverse: {gradient_only}{cascade}; "
            f"one-sided sign test p={p:.2g}; fires above {GRADIENT_FREE_GAP:.0%} with p < {ALPHA}"
        )
        yield Finding(defense, epsilon, fired, detail)


@check("accuracy_not_decreasing", kind="table", sentence=(
    "Robust accuracy did not fall as epsilon grew, although every larger ball contains the smaller "
    "one: the attacks are failing rather than the model resisting. Check the attacks (steps, step "
    "size, BPDA/EOT) before reading the numbers; if the epsilons are very close, widen the grid."
))
def accuracy_not_decreasing(examples: pd.DataFrame, *, gradient_free: Collection[str] = ()) -> Iterator[Finding]:
    """Per defense and consecutive epsilons: worst-case robust accuracy must fall as the ball grows.

    The balls are nested, so an exact worst case can only lose robust examples as epsilon grows
    (Carlini et al. 2019's checklist). One row per epsilon after the smallest, comparing it with the
    next smaller one on the examples both evaluated; it fires on a significant rise only (see the
    comment above ``accuracy_not_decreasing``'s constants).
    ``gradient_free`` is unused: every table check takes the same arguments.
    """
    _require_columns(examples, _REQUIRED)
    worst = worst_case_examples(examples)  # per example: robust = correct and broken by no attack
    keys = [k for k in _group_keys(worst) if k != "epsilon"]
    varying = _varying(worst)
    for values, group in worst.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        defense = str(values[keys.index("defense")])
        prefix = _label(keys, values, varying)
        by_epsilon = group.pivot_table(index="example", columns="epsilon", values="robust", aggfunc="max")
        epsilons = sorted(float(e) for e in by_epsilon.columns)
        if len(epsilons) < 2:
            yield Finding(defense, epsilons[0], False, f"{prefix}not run: needs two or more epsilons")
            continue
        for small, large in zip(epsilons, epsilons[1:]):
            pair = by_epsilon[[small, large]].dropna().astype(bool)
            n = len(pair)
            if n == 0:
                yield Finding(defense, large, False,
                              f"{prefix}not run: no examples evaluated at both eps {small:g} and {large:g}")
                continue
            robust_small, robust_large = int(pair[small].sum()), int(pair[large].sum())
            gained, lost, p = paired(pair[large], pair[small])
            rises = gained > lost and p < ALPHA
            detail = (
                f"{prefix}worst-case robust accuracy {robust_small / n:.3f} at eps {small:g} -> "
                f"{robust_large / n:.3f} at eps {large:g} ({n} examples; robust only at the larger: {gained}, "
                f"only at the smaller: {lost}; sign test for a rise p={p:.2g})"
            )
            yield Finding(defense, large, rises, detail + f"; fires when the rise has p < {ALPHA}")


@check("attack_misses_counterexample", kind="table", sentence=(
    "A certifier (the exact MILP verifier, or a bound whose counterexample verified) found points of the "
    "ball that change the prediction, and no attack of the suite found them: the suite is too weak for "
    "this model, so its robust accuracy is an overestimate. Strengthen the attacks (steps, restarts, "
    "targeted losses) until they find what the verifier finds."
))
def attack_misses_counterexample(examples: pd.DataFrame, *, gradient_free: Collection[str] = ()) -> Iterator[Finding]:
    """Per (defense, epsilon): clean-correct examples with a verified counterexample from a certifier
    and no break by any attack. ``gradient_free`` is unused: every table check takes the same arguments."""
    _require_columns(examples, _REQUIRED)
    rows = examples[examples["attack"] != WORST_CASE]
    if "certify_status" not in rows.columns:  # a table without certifier rows
        rows = rows.assign(certify_status=NOT_CERTIFIED)
    status = rows["certify_status"].fillna(NOT_CERTIFIED).astype(str)
    keys, varying = _group_keys(rows), _varying(rows)
    rows = rows.assign(from_certifier=status != NOT_CERTIFIED, counterexample=(status == COUNTEREXAMPLE) & as_bool(rows["broken"]))
    if not rows["from_certifier"].any():
        return  # no certifier in the suite: nothing to compare, and no row in every run that has none
    for values, group in rows.groupby(keys, sort=True, dropna=False):
        defense, epsilon = _defense_epsilon(keys, values)
        prefix = _label(keys, values, varying)
        if not group["from_certifier"].any():
            yield Finding(defense, epsilon, False, f"{prefix}not run: the suite has no [[certify]] table")
            continue
        correct = group[as_bool(group["clean_correct"])]
        by_certifier = correct[correct["from_certifier"]].groupby("example")["counterexample"].any()
        by_attack = correct[~correct["from_certifier"]].assign(broken=as_bool(correct["broken"])).groupby("example")["broken"].any()
        if by_attack.empty:
            yield Finding(defense, epsilon, False, f"{prefix}not run: the suite has no attack to compare with")
            continue
        missed = by_certifier & ~by_attack.reindex(by_certifier.index, fill_value=False)
        found = int(by_certifier.sum())
        detail = (f"{prefix}certifiers found verified counterexamples for {found} of {len(by_certifier)} clean-correct "
                  f"examples; the attacks missed {int(missed.sum())} of them; fires on any")
        yield Finding(defense, epsilon, bool(missed.any()), detail)


def table_checks(examples: pd.DataFrame, *, gradient_free: Collection[str]) -> list[Diagnostic]:
    """Every registered table check on a run's examples table (one row per (defense, ..., attack, example))."""
    return [row for c in registered("table") for row in c.run(examples, gradient_free=gradient_free)]


def _group_keys(examples: pd.DataFrame) -> list[str]:
    return [k for k in KEYS if k in examples.columns]


def _label(keys: list[str], values: tuple, varying: set[str]) -> str:
    """Prefix naming model/dataset/norm where the table holds more than one of them."""
    parts = [f"{k}={v}" for k, v in zip(keys, values) if k in varying]
    return f"[{', '.join(parts)}] " if parts else ""


def _varying(examples: pd.DataFrame) -> set[str]:
    """The columns a detail must name: those that take more than one value for some defense (a
    defense that attacks a model of its own is one model throughout, and needs no label)."""
    return {k for k in ("model", "dataset", "norm")
            if k in examples.columns and examples.groupby("defense")[k].nunique().max() > 1}


def _defense_epsilon(keys: list[str], values: object) -> tuple[str, float]:
    values = values if isinstance(values, tuple) else (values,)
    return str(values[keys.index("defense")]), float(values[keys.index("epsilon")])


def _require_columns(examples: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in examples.columns]
    if missing:
        raise RobenchError(f"the examples frame lacks column(s) {', '.join(missing)}; pass the examples frame of an evaluation")
