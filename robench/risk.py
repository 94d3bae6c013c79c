"""Adversarial risk: the per-example worst case over a suite, and intervals that say how sure.

An example counts as robust only if it is classified correctly and *no* verified attack of the
suite broke it (Uesato et al. 2018, Sec. 2: adversarial risk is the expected worst-case 0-1 loss;
any attack gives a lower bound on it, so the best estimate takes the maximum over attacks).
Intervals are exact binomial (Clopper-Pearson) intervals over the evaluated examples.
"""
from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from robench.schema import CERTIFIED, KEYS, NOT_CERTIFIED, RESULT_COLUMNS, STATUS_RANK, WORST_CASE
from robench.stats import clopper_pearson

__all__ = ["WORST_CASE", "KEYS", "clopper_pearson", "as_bool", "worst_case_examples", "worst_case", "summarize"]


def as_bool(column: pd.Series) -> pd.Series:
    """A boolean column, whether it holds bools or their text from a hand-edited CSV ("true", "1")."""
    if column.dtype == bool:
        return column
    return column.astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])


def worst_case_examples(examples: pd.DataFrame, *, attacks: Collection[str] | None = None) -> pd.DataFrame:
    """Per example and cell (the ``KEYS`` columns present): ``clean_correct``, ``broken`` by any
    attack (of ``attacks``, default all of the suite's) and ``robust`` = correct and unbroken.

    The one worst case over attacks that the diagnostics and the report read; :func:`worst_case`
    adds the rows' other columns for the results table.
    """
    rows = examples[examples["attack"].astype(str) != WORST_CASE]
    if attacks is not None:
        rows = rows[rows["attack"].astype(str).isin(list(attacks))]
    keys = [k for k in KEYS if k in rows.columns]
    rows = rows.assign(clean_correct=as_bool(rows["clean_correct"]), broken=as_bool(rows["broken"]))
    worst = rows.groupby([*keys, "example"], sort=False, dropna=False).agg(
        clean_correct=("clean_correct", "first"), broken=("broken", "max")).reset_index()
    worst["robust"] = worst["clean_correct"] & ~worst["broken"]
    return worst


def _status_text(rows: pd.DataFrame) -> pd.DataFrame:
    """``certify_status`` as text: a CSV round trip reads the empty status (no certifier) as missing."""
    return rows.assign(certify_status=rows["certify_status"].astype(object).fillna(NOT_CERTIFIED).astype(str))


def worst_case(examples: pd.DataFrame) -> pd.DataFrame:
    """:func:`worst_case_examples` with the rows' other columns, for the results table: queries and
    seconds summed over attacks, the closest break, the strongest certifier's answer."""
    attacked = _status_text(examples[examples["attack"] != WORST_CASE])
    worst = worst_case_examples(attacked).drop(columns="robust")
    group = attacked.groupby([*KEYS, "example"], sort=False, dropna=False)  # the same groups, in the same order
    rest = group.agg(
        label=("label", "first"),
        rejected=("rejected", "max"),
        attacked=("attacked", "max"),
        queries=("queries", "sum"),
        seconds=("seconds", "sum"),
    ).reset_index(drop=True)
    worst = pd.concat([worst, rest], axis=1)
    # distance and margin of the closest breaking proposal, else the smallest margin reached
    broken_rows = attacked[attacked["broken"]]
    min_distance = broken_rows.groupby([*KEYS, "example"], dropna=False)["distance"].min()
    min_margin = attacked.groupby([*KEYS, "example"], dropna=False)["margin"].min()
    index = pd.MultiIndex.from_frame(worst[[*KEYS, "example"]])
    worst["distance"] = min_distance.reindex(index).to_numpy()
    worst["margin"] = min_margin.reindex(index).to_numpy()
    rank = attacked["certify_status"].map(STATUS_RANK).fillna(0)
    best = rank.groupby([attacked[k] for k in (*KEYS, "example")], dropna=False).max()
    names = {v: k for k, v in STATUS_RANK.items()}
    worst["certify_status"] = best.reindex(index).map(names).fillna(NOT_CERTIFIED).to_numpy()
    worst["certified"] = worst["certify_status"] == CERTIFIED
    worst["attack"] = WORST_CASE
    return worst[examples.columns.intersection(worst.columns, sort=False)]


def summarize(examples: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (defense, epsilon, attack) plus the worst case, with intervals."""
    examples = _status_text(examples)
    frames = [examples[examples["attack"] != WORST_CASE], worst_case(examples)]
    rows = pd.concat(frames, ignore_index=True)
    rows["robust"] = rows["clean_correct"].astype(bool) & ~rows["broken"].astype(bool)
    rows["own_certified"] = rows["certify_status"] == CERTIFIED
    rows["ran_certifier"] = rows["certify_status"] != NOT_CERTIFIED
    group = rows.groupby([*KEYS, "attack"], sort=False, dropna=False)
    table = group.agg(
        n_examples=("example", "size"),
        clean_correct=("clean_correct", "sum"),
        robust=("robust", "sum"),
        rejected=("rejected", "sum"),
        queries_mean=("queries", "mean"),
        seconds=("seconds", "sum"),
        attacked=("attacked", "sum"),
        certified=("own_certified", "sum"),
        ran_certifier=("ran_certifier", "any"),
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
    # the other side of the bracket, where a certifier ran: certified <= true <= robust (attacked)
    certified_low, certified_high = clopper_pearson(table["certified"], n, confidence)
    ran = table["ran_certifier"].to_numpy()
    table["certified_accuracy"] = np.where(ran, table["certified"] / n, np.nan)
    table["certified_accuracy_low"] = np.where(ran, certified_low, np.nan)
    table["certified_accuracy_high"] = np.where(ran, certified_high, np.nan)
    table["certified"] = np.where(ran, table["certified"], np.nan)
    worst = (table["attack"] == WORST_CASE).to_numpy() & ran
    table["unknown_fraction"] = np.where(worst, table["robust_accuracy"] - table["certified_accuracy"], np.nan)
    return table[list(RESULT_COLUMNS)]
