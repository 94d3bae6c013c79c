"""Risk estimation (robench/risk.py): intervals and the per-example worst case."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from robench.risk import WORST_CASE, clopper_pearson, summarize, worst_case


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 500), data=st.data())
def test_clopper_pearson_matches_beta_quantiles(n, data):
    k = data.draw(st.integers(0, n))
    low, high = clopper_pearson(k, n)
    expected_low = 0.0 if k == 0 else stats.beta(k, n - k + 1).ppf(0.025)
    expected_high = 1.0 if k == n else stats.beta(k + 1, n - k).ppf(0.975)
    assert low == pytest.approx(expected_low, abs=1e-12) and high == pytest.approx(expected_high, abs=1e-12)
    assert low <= k / n <= high


def test_clopper_pearson_closed_forms_at_the_edges():
    low, high = clopper_pearson(0, 20)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 20))
    low, high = clopper_pearson(20, 20)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 20))


def test_clopper_pearson_covers_the_true_rate_at_least_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for p in (0.03, 0.5, 0.9):
        k = rng.binomial(60, p, size=4000)
        low, high = clopper_pearson(k, np.full_like(k, 60))
        coverage = np.mean((low <= p) & (p <= high))
        assert coverage >= 0.95  # exact intervals are conservative


def _frame(broken_by_attack: dict[str, list[bool]], clean: list[bool]) -> pd.DataFrame:
    rows = []
    for attack, broken in broken_by_attack.items():
        for i, (b, c) in enumerate(zip(broken, clean)):
            rows.append(dict(defense="d", model="m", dataset="s", norm="linf", epsilon=0.1, attack=attack, example=i,
                             label=0, clean_correct=c, broken=b or not c, rejected=False, queries=10, distance=0.1,
                             margin=-1.0 if b else 1.0, draws=1, attacked=c, certified=False, certify_status="",
                             seconds=0.01))
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_worst_case_is_never_less_broken_than_any_attack(triples):
    a = [t[0] for t in triples]
    b = [t[1] for t in triples]
    clean = [t[2] for t in triples]
    examples = _frame({"pgd": a, "spsa": b}, clean)
    worst = worst_case(examples).set_index("example")
    for attack in ("pgd", "spsa"):
        single = examples[examples.attack == attack].set_index("example")
        assert (worst["broken"] >= single["broken"]).all()
    table = summarize(examples).set_index("attack")
    assert table.loc[WORST_CASE, "robust_accuracy"] <= table.loc[["pgd", "spsa"], "robust_accuracy"].min()
    expected = np.mean([c and not (x or y) for x, y, c in zip(a, b, clean)])
    assert table.loc[WORST_CASE, "robust_accuracy"] == pytest.approx(expected)
    assert table.loc[WORST_CASE, "adversarial_risk"] == pytest.approx(1 - expected)


def test_summary_counts_queries_over_the_suite_and_clean_accuracy():
    examples = _frame({"pgd": [True, False, False, False], "spsa": [False, True, False, False]}, [True, True, True, False])
    table = summarize(examples).set_index("attack")
    assert table.loc["pgd", "robust_accuracy"] == 0.5
    assert table.loc[WORST_CASE, "robust_accuracy"] == 0.25
    assert table.loc[WORST_CASE, "clean_accuracy"] == 0.75
    assert table.loc[WORST_CASE, "queries_mean"] == 20
    assert table.loc[WORST_CASE, "robust_accuracy_low"] <= 0.25 <= table.loc[WORST_CASE, "robust_accuracy_high"]


@pytest.mark.parametrize("status", ["empty", "nan"])
def test_no_certified_accuracy_where_no_certifier_ran(status):
    examples = _frame({"pgd": [True, False, False, False]}, [True, True, True, False])
    examples["certify_status"] = "" if status == "empty" else np.nan
    table = summarize(examples).set_index("attack")
    assert table[["certified_accuracy", "unknown_fraction"]].isna().all().all()
