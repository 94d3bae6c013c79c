"""Adversarial risk: the per-example worst case over a suite, and intervals that say how sure.

An example counts as robust only if it is classified correctly and *no* verified attack of the
suite broke it (Uesato et al. 2018, Sec. 2: adversarial risk is the expected worst-case 0-1 loss;
any attack gives a lower bound on it, so the best estimate takes the maximum over attacks).
Intervals are exact binomial (Clopper-Pearson) intervals over the evaluated examples.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

WORST_CASE = "worst-case"
KEYS = ["defense", "model", "dataset", "norm", "epsilon"]


def clopper_pearson(successes, trials, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval for the success rate (Clopper & Pearson 1934).

    Lower = Beta(α/2; k, n−k+1) quantile, upper = Beta(1−α/2; k+1, n−k) quantile, with the
    conventions lower = 0 at k = 0 and upper = 1 at k = n. Vectorised over arrays.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= successes <= trials")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    low = np.where(n > 0, low, 0.0)
    high = np.where(n > 0, high, 1.0)
    return low, high


def worst_case(examples: pd.DataFrame) -> pd.DataFrame:
    """Per (defense, epsilon, example): broken if any attack broke it; queries summed over attacks."""
    attacked = examples[examples["attack"] != WORST_CASE]
    group = attacked.groupby([*KEYS, "example"], sort=False, dropna=False)
    worst = group.agg(
        label=("label", "first"),
        clean_correct=("clean_correct", "first"),
        broken=("broken", "max"),
        rejected=("rejected", "max"),
        queries=("queries", "sum"),
        seconds=("seconds", "sum"),
    ).reset_index()
    # distance and margin of the closest breaking proposal, else the smallest margin reached
    broken_rows = attacked[attacked["broken"]]
    min_distance = broken_rows.groupby([*KEYS, "example"], dropna=False)["distance"].min()
    min_margin = attacked.groupby([*KEYS, "example"], dropna=False)["margin"].min()
    index = pd.MultiIndex.from_frame(worst[[*KEYS, "example"]])
    worst["distance"] = min_distance.reindex(index).to_numpy()
    worst["margin"] = min_margin.reindex(index).to_numpy()
    worst["attack"] = WORST_CASE
    return worst[examples.columns.intersection(worst.columns, sort=False)]


def summarize(examples: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (defense, epsilon, attack) plus the worst case, with intervals."""
    frames = [examples[examples["attack"] != WORST_CASE], worst_case(examples)]
    rows = pd.concat(frames, ignore_index=True)
    rows["robust"] = rows["clean_correct"].astype(bool) & ~rows["broken"].astype(bool)
    group = rows.groupby([*KEYS, "attack"], sort=False, dropna=False)
    table = group.agg(
        n_examples=("example", "size"),
        clean_correct=("clean_correct", "sum"),
        robust=("robust", "sum"),
        rejected=("rejected", "sum"),
        queries_mean=("queries", "mean"),
        seconds=("seconds", "sum"),
    ).reset_index()
    n = table["n_examples"].to_numpy()
    table["clean_accuracy"] = table["clean_correct"] / n
    table["robust_accuracy"] = table["robust"] / n
    low, high = clopper_pearson(table["robust"], n, confidence)
    table["robust_accuracy_low"], table["robust_accuracy_high"] = low, high
    table["adversarial_risk"] = 1.0 - table["robust_accuracy"]
    table["adversarial_risk_low"], table["adversarial_risk_high"] = 1.0 - high, 1.0 - low
    clean_low, clean_high = clopper_pearson(table["clean_correct"], n, confidence)
    table["clean_accuracy_low"], table["clean_accuracy_high"] = clean_low, clean_high
    columns = [
        *KEYS, "attack", "n_examples", "clean_accuracy", "clean_accuracy_low", "clean_accuracy_high",
        "robust_accuracy", "robust_accuracy_low", "robust_accuracy_high",
        "adversarial_risk", "adversarial_risk_low", "adversarial_risk_high",
        "robust", "rejected", "queries_mean", "seconds",
    ]
    return table[columns]
