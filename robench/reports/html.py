"""``DIR/report.html``: one self-contained page a person reads, regenerated from the stored files alone.

The page is a jinja2 template with autoescaping on (a defense or attack name is data, never
markup), figures are embedded PNG data URIs, and a Content-Security-Policy forbids every network
request and script, so the file can be mailed, archived or opened offline and shows the same thing.
"""
from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.errors import RobenchError
from robench.io import atomic_write_text
from robench.reports import figures, images
from robench.reports.rundir import RunFiles, load_run
from robench.risk import as_bool, worst_case_examples
from robench.schema import KEYS, REPORT, WORST_CASE
from robench.stats import clopper_pearson
from robench.table import PARTIAL, given_fewer

log = logging.getLogger(__name__)

#: how the report names an attack's kind; whether an attack is gradient-free is read from run.json's
#: ``suite.attacks[*].gradient_free`` alone, never guessed from the attack's name
KIND_FREE, KIND_GRADIENT = "gradient-free", "gradient"
KIND_UNRECORDED = "gradient (not recorded in run.json)"


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report.html`` from results.csv, run.json and the optional files; return its path."""
    run = load_run(run_dir)
    html = render_report(run)
    path = run.path / REPORT
    try:
        atomic_write_text(path, html)  # whole or not at all: a failed write leaves the old report
    except OSError as exc:
        raise RobenchError(f"cannot write {path} ({exc.strerror or exc}); make it a writable file (or remove it) "
                           "and run `robench report` again") from None
    return path


def render_report(run: RunFiles) -> str:
    """The report as a string (no files written)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(
        loader=PackageLoader("robench.reports", "templates"), autoescape=True,
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return environment.get_template("report.html").render(**report_context(run))


# ------------------------------------------------------------------------------------------- context
def _pairs(results: pd.DataFrame) -> list[tuple[str, float]]:
    """(defense, epsilon) in the order the run wrote them."""
    seen: dict[tuple[str, float], None] = {}
    for defense, epsilon in zip(results["defense"], results["epsilon"]):
        seen.setdefault((str(defense), float(epsilon)), None)
    return list(seen)


def _suite_attacks(run: RunFiles) -> list[dict[str, Any]]:
    """The suite's attacks in run order, each with its ``gradient_free`` flag as run.json records it.

    An attack whose entry lacks a boolean flag (an older run.json, or a label only results.csv
    names) counts as a gradient attack, with ``recorded`` false so that the page says so.
    """
    listed = (run.run.get("suite") or {}).get("attacks") or []
    labels = [a for a in dict.fromkeys(run.results["attack"].astype(str)) if a != WORST_CASE]
    by_label = {str(a.get("label")): a for a in listed if isinstance(a, dict)}
    attacks = []
    for label in [*[str(a.get("label")) for a in listed if isinstance(a, dict)], *labels]:
        if any(a["label"] == label for a in attacks):
            continue
        entry = by_label.get(label, {})
        name = str(entry.get("attack", label))
        flag = entry.get("gradient_free")
        recorded = isinstance(flag, (bool, np.bool_))
        free = recorded and bool(flag)
        kind = KIND_FREE if free else KIND_GRADIENT if recorded else KIND_UNRECORDED
        attacks.append({"label": label, "attack": name, "repr": str(entry.get("repr", "")), "gradient_free": free,
                        "recorded": recorded, "kind": kind, "in_results": label in labels})
    return attacks


def _pct(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def _headline(run: RunFiles, attacks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = run.results
    failed = {(str(u.get("defense")), round(float(u.get("epsilon", np.nan)), 9)) for u in run.failed_units}
    rows = []
    for defense, epsilon in _pairs(results):
        group = results[(results["defense"] == defense) & (results["epsilon"] == epsilon)].set_index("attack")
        worst = group.loc[WORST_CASE] if WORST_CASE in group.index else None
        cells, broken_by = [], {}
        for attack in attacks:
            if attack["label"] in group.index:
                row = group.loc[attack["label"]]
                clean = round(float(row["clean_accuracy"]) * int(row["n_examples"]))
                if "robust" in row.index:
                    broken_by[attack["label"]] = clean - int(row["robust"])
                else:
                    broken_by[attack["label"]] = round((float(row["clean_accuracy"]) - float(row["robust_accuracy"])) * int(row["n_examples"]))
                partial = given_fewer(row)
                cells.append({"text": _pct(row["robust_accuracy"]) + (PARTIAL if partial else ""),
                              "value": float(row["robust_accuracy"]), "partial": partial,
                              "title": (f"given {int(row['attacked'])} of the {clean} clean-correct examples (a cascade: only "
                                        f"those earlier attacks left standing); broke {broken_by[attack['label']]}")
                              if partial else ""})
            else:
                cells.append({"text": "-", "value": None})
        values = [c["value"] for c in cells if c["value"] is not None]
        for cell in cells:
            cell["strongest"] = cell["value"] is not None and len(values) > 1 and cell["value"] == min(values)
        most = max(broken_by.values(), default=0)
        reference = worst if worst is not None else (group.iloc[0] if len(group) else None)
        rows.append({
            "defense": defense, "epsilon": f"{epsilon:g}",
            "n": int(reference["n_examples"]) if reference is not None else 0,
            "clean": _pct(float(reference["clean_accuracy"])) if reference is not None else "-",
            "cells": cells,
            "worst": None if worst is None else {
                "text": _pct(worst["robust_accuracy"]), "low": _pct(worst["robust_accuracy_low"]),
                "high": _pct(worst["robust_accuracy_high"]),
                "bar_left": 100 * float(worst["robust_accuracy_low"]),
                "bar_width": 100 * (float(worst["robust_accuracy_high"]) - float(worst["robust_accuracy_low"])),
                "bar_point": 100 * float(worst["robust_accuracy"]),
            },
            "broke_most": ", ".join(a for a, k in broken_by.items() if k == most) if most > 0 else "",
            "broke_most_count": most,
            "failed": (defense, round(epsilon, 9)) in failed,
            "cascade": any(c.get("partial") for c in cells),
        })
    return rows


def _bracket(run: RunFiles) -> list[dict[str, Any]]:
    """Per (defense, epsilon) where a certifier ran: certified <= true robust accuracy <= attacked.

    The certified share is a lower bound (no point of the ball changes those predictions), the
    worst-case attacked share an upper bound; what lies between is unknown. Percent positions for
    the template's band: [0, certified] green, [certified, attacked] grey, a mark at attacked.
    """
    results = run.results
    if "certified_accuracy" not in results.columns:
        return []
    worst = results[(results["attack"] == WORST_CASE) & results["certified_accuracy"].notna()]
    rows = []
    for _, row in worst.iterrows():
        certified, attacked = float(row["certified_accuracy"]), float(row["robust_accuracy"])
        unknown = float(row["unknown_fraction"]) if "unknown_fraction" in row.index and pd.notna(row["unknown_fraction"]) \
            else attacked - certified
        rows.append({
            "defense": str(row["defense"]), "epsilon": f"{float(row['epsilon']):g}",
            "certified": _pct(certified), "attacked": _pct(attacked), "unknown": _pct(unknown),
            "certified_low": _pct(float(row["certified_accuracy_low"])), "certified_high": _pct(float(row["certified_accuracy_high"])),
            "certified_width": 100 * certified, "unknown_width": 100 * max(0.0, attacked - certified),
            "tight": abs(unknown) < 1e-12,
        })
    return rows


def _curves(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(figures.CURVE_COLUMNS)].astype({"epsilon": float})


def _gradient_only(run: RunFiles, gradient_labels: list[str]) -> tuple[pd.DataFrame, str]:
    """Per cell (defense, epsilon, ...): robust accuracy when only the gradient attacks count.

    The per-example worst case over those attacks is robench.risk's, the interval robench.stats'.
    """
    examples = run.examples
    if examples is not None and len(examples):
        per_example = worst_case_examples(examples, attacks=gradient_labels)
        keys = [k for k in KEYS if k in per_example.columns]
        table = per_example.groupby(keys, sort=False, dropna=False).agg(
            robust=("robust", "sum"), n=("example", "size")).reset_index()
        low, high = clopper_pearson(table["robust"], table["n"])
        table["robust_accuracy"] = table["robust"] / table["n"]
        table["robust_accuracy_low"], table["robust_accuracy_high"] = low, high
        return _curves(table), "Gradient attacks only"
    # without examples.csv: the strongest single gradient attack (an upper bound on their worst case)
    rows = run.results[run.results["attack"].astype(str).isin(gradient_labels)]
    best = rows.loc[rows.groupby(["defense", "epsilon"], sort=False)["robust_accuracy"].idxmin()]
    return _curves(best), "Strongest gradient attack"


def _figures(run: RunFiles, attacks: list[dict[str, Any]], palette: dict[str, str]) -> list[dict[str, str]]:
    worst = run.results[run.results["attack"] == WORST_CASE]
    if worst.empty:
        return []
    found = [{
        "title": "Robust accuracy against epsilon",
        "caption": "Worst case over every attack of the suite, per defense; the band (or bar) is the 95% "
                   "Clopper-Pearson interval over the evaluated examples.",
        "src": figures.robust_accuracy_figure(_curves(worst), palette),
    }]
    if "certified_accuracy" in worst.columns and worst["certified_accuracy"].notna().any():
        found.append({
            "title": "The bracket: certified and attacked robust accuracy",
            "caption": "Per defense, the true robust accuracy lies in the band: above the certified share (solid, "
                       "a lower bound: a certifier proved no point of the ball changes the prediction) and below the "
                       "worst case over the attacks (dashed, an upper bound). The band's height is the unknown mass.",
            "src": figures.bracket_figure(worst, palette),
        })
    gradient = [a["label"] for a in attacks if not a["gradient_free"] and a["in_results"]]
    if gradient:
        curves, title = _gradient_only(run, gradient)
        unrecorded = [a["label"] for a in attacks if not a["recorded"] and a["in_results"]]
        found.append({
            "title": "Gradient attacks vs. the worst case",
            "caption": f"Left: only {', '.join(gradient)} count; right: every attack. A defense far higher on the left "
                       "than on the right resists gradients but not a gradient-free attack: gradient masking "
                       "(Uesato et al. 2018, Sec. 5)." + (f" {_unrecorded_sentence(unrecorded)}" if unrecorded else ""),
            "src": figures.gradient_vs_worst_figure(curves, _curves(worst), palette, gradient_title=title),
        })
    return found


def _unrecorded_sentence(labels: list[str]) -> str:
    return (f"run.json does not record whether {', '.join(labels)} use{'s' if len(labels) == 1 else ''} gradients: "
            "the report counts them as gradient attacks and guesses nothing from their names.")


def _image_grids(run: RunFiles) -> list[dict[str, Any]]:
    arrays = run.adversarial
    if not arrays or not len(arrays["example"]):
        return []
    grids = []
    kind = images.kind_of(arrays["x"])
    order = {pair: i for i, pair in enumerate(_pairs(run.results))}
    keys = list(dict.fromkeys(zip(arrays["defense"].tolist(), np.asarray(arrays["epsilon"], float).tolist())))
    keys.sort(key=lambda k: order.get(k, len(order)))
    for defense, epsilon in keys:
        mask = (arrays["defense"] == defense) & np.isclose(np.asarray(arrays["epsilon"], float), epsilon)
        index = np.flatnonzero(mask)
        _, first = np.unique(arrays["example"][index], return_index=True)  # one proposal per example
        index = index[np.sort(first)][: images.MAX_EXAMPLES]
        titles = [f"#{int(arrays['example'][i])} · {arrays['attack'][i]}" for i in index]
        grids.append({
            "defense": defense, "epsilon": f"{epsilon:g}",
            "src": images.example_grid(arrays["x"][index], arrays["x_adv"][index], titles),
            "count": len(index), "kind": kind,
        })
    return grids


def _check_sentences() -> dict[str, str]:
    try:
        from robench.diagnostics import CHECKS
    except Exception as exc:  # the module is optional here: the report falls back to each row's detail
        log.debug("diagnostics explanations unavailable: %s", exc)
        return {}
    # a check's sentence is the registry's value itself, or its ``sentence`` attribute
    return {str(name): value if isinstance(value, str) else str(getattr(value, "sentence", "") or "")
            for name, value in dict(CHECKS).items()}


def _diagnostics(run: RunFiles) -> dict[str, Any] | None:
    frame = run.diagnostics
    if frame is None:
        return None
    sentences = _check_sentences()
    rows = []
    frame = frame.assign(fired=as_bool(frame["fired"]))
    for record in frame.to_dict("records"):
        fired = bool(record["fired"])
        detail = record.get("detail")
        detail = "" if detail is None or (isinstance(detail, float) and np.isnan(detail)) else str(detail)
        rows.append({"defense": str(record["defense"]), "epsilon": f"{float(record['epsilon']):g}",
                     "check": str(record["check"]), "fired": fired, "detail": detail})
    nothing_to_inflate = _zero_worst_case(run)
    for row in rows:
        row["note"] = ""
        if row["fired"] and HANDLED_MARK in row["detail"]:
            row["note"] = row["detail"].split(HANDLED_MARK, 1)[1].strip()
        elif row["fired"] and (row["defense"], row["epsilon"]) in nothing_to_inflate:
            row["note"] = "the worst-case robust accuracy is already 0: no number to inflate"
        row["questions"] = row["fired"] and not row["note"]
    rows.sort(key=lambda r: (not r["questions"], not r["fired"]))  # stable: questions, notes, then the rest
    checks = list(dict.fromkeys(r["check"] for r in rows))
    explained = [{"check": c, "sentence": sentences.get(c, ""), "fired": any(r["fired"] for r in rows if r["check"] == c)}
                 for c in checks]
    return {"rows": rows, "fired": sum(r["fired"] for r in rows), "questions": sum(r["questions"] for r in rows),
            "notes": sum(r["fired"] and not r["questions"] for r in rows), "checks": explained}


#: see robench.diagnostics.probes.HANDLED (the report reads tables, so it keeps its own copy)
HANDLED_MARK = "handled:"


def _zero_worst_case(run: RunFiles) -> set[tuple[str, str]]:
    """(defense, epsilon as shown) pairs whose worst-case robust accuracy is 0."""
    worst = run.results[run.results["attack"] == WORST_CASE]
    return {(str(r["defense"]), f"{float(r['epsilon']):g}") for _, r in worst.iterrows()
            if float(r["robust_accuracy"]) == 0.0}


def _value(value: Any) -> str:
    """Metadata for people: floats to 4 significant digits, parameter tables as ``k=v``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _when(started: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(started), tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _first(results: pd.DataFrame, column: str) -> str:
    """The first row's value of ``column``, or "?" (the column is absent, or the run has no rows)."""
    return str(results[column].iloc[0]) if column in results and len(results) else "?"


def _metadata(run: RunFiles) -> dict[str, Any]:
    info = run.run
    dataset = info.get("dataset") or {}
    model = info.get("model") or {}
    timings = info.get("timings") or {}
    config = info.get("config") or {}
    results = run.results
    units = []
    per_unit = results[results["attack"] != WORST_CASE]
    for record in per_unit.to_dict("records"):
        units.append({"defense": str(record["defense"]), "epsilon": f"{float(record['epsilon']):g}", "attack": str(record["attack"]),
                      "seconds": f"{float(record.get('seconds', np.nan)):.1f}" if "seconds" in record else "-",
                      "queries": f"{float(record['queries_mean']):,.0f}" if "queries_mean" in record and np.isfinite(record["queries_mean"]) else "-"})
    summary = [
        ("dataset", f"{dataset.get('name', _first(results, 'dataset'))}"
                    + (f" (fingerprint {dataset['fingerprint']})" if dataset.get("fingerprint") else "")),
        ("examples", str(dataset.get("n_examples", int(results["n_examples"].max()) if len(results) else 0))),
        ("model", str(model.get("name", _first(results, "model")))),
        ("threat model", f"{config.get('norm', _first(results, 'norm'))}, "
                         f"epsilon {', '.join(f'{e:g}' for e in sorted(results['epsilon'].unique()))}"),
        ("suite", str((info.get("suite") or {}).get("name", "?"))),
        ("seed", str(info.get("seed", "?"))),
        ("device", str(info.get("device", "?"))),
        ("executor", str(info.get("executor", "local"))),
        ("started", _when(timings.get("started"))),
        ("duration", f"{float(timings['seconds']):.1f} s" if timings.get("seconds") is not None else "?"),
        ("rejected proposals", str(info.get("rejected_proposals", "?"))),
    ]
    model_meta = model.get("meta") or {}
    return {
        "summary": [(k, v) for k, v in summary if v],
        "versions": sorted((str(k), str(v)) for k, v in (info.get("versions") or {}).items()),
        "model_meta": sorted((str(k), _value(v)) for k, v in model_meta.items()) if isinstance(model_meta, dict) else [],
        "defenses": [{**d, "params": _value(d.get("params") or {})} for d in info.get("defenses") or [] if isinstance(d, dict)],
        "config": sorted((str(k), _value(v)) for k, v in config.items()),
        "units": units,
    }


def report_context(run: RunFiles) -> dict[str, Any]:
    """Everything the template shows, already formatted (numbers stay numbers until here)."""
    attacks = _suite_attacks(run)
    unrecorded = [a["label"] for a in attacks if not a["recorded"]]
    defenses = list(dict.fromkeys(run.results["defense"].astype(str)))
    palette = figures.colors(defenses)
    meta = _metadata(run)
    failed = [{"defense": str(u.get("defense", "?")), "epsilon": u.get("epsilon", "?"), "attack": str(u.get("attack", "?")),
               "error": str(u.get("error", ""))} for u in run.failed_units]
    return {
        "title": f"robench report: {', '.join(defenses)}",
        "run_name": run.path.resolve().name,
        "attacks": [a for a in attacks if a["in_results"]],
        "suite_attacks": attacks,
        "unrecorded": _unrecorded_sentence(unrecorded) if unrecorded else "",
        "headline": _headline(run, [a for a in attacks if a["in_results"]]),
        "bracket": _bracket(run),
        "figures": _figures(run, attacks, palette),
        "grids": _image_grids(run),
        "diagnostics": _diagnostics(run),
        "failed_units": failed,
        "discovered": [{"defense": str(d.get("name", "?")), "finding": str(line)} for d in meta["defenses"]
                       for line in (d.get("discovered") or [])],
        "meta": meta,
        "palette": palette,
        "has_adversarial": run.adversarial is not None,
    }
