"""The CI gate: does a run's worst-case robust accuracy fall significantly below a committed baseline?

Per (defense, model, dataset, norm, epsilon) the gate compares the run's worst-case robust count
k_run / n_run (``robust`` in results.csv; an example is robust only if no attack of the suite broke
it, Uesato et al. 2018, Sec. 2) with the baseline's k_base / n_base by a **one-sided Fisher exact
test** of H0: p_run >= p_base against H1: p_run < p_base (Fisher 1935; conditional on the margins,
k_run is hypergeometric, so the level holds exactly at every n, also at k = n where a z-test has
zero variance). A row is a **regression** when

    p-value < alpha (default ``ALPHA`` = 0.01)   and   p_base - p_run > tolerance,

where ``tolerance`` is the defense card's optional absolute tolerance (default 0), carried in
run.json. The test treats the two runs as independent samples; runs of the same examples with
another seed are positively correlated, which makes it conservative (noise passes more easily;
a real drop must be a little larger to fail). A significant *rise* is reported as ``improved``
(passing), a hint to refresh the baseline.

Rows of the baseline that the run lacks fail (``missing``); rows of the run that the baseline
lacks are reported (``new``) without failing; a (defense, epsilon) with a failed work unit in
run.json fails (``failed``): its worst case would be taken over a partial suite, which can only
overstate robustness.

Baseline file (CSV, one row per defense and epsilon; see reports/README.md):
``defense, model, dataset, norm, epsilon, suite, n_examples, robust, robust_accuracy``.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robench.errors import RobenchError
from robench.io import atomic_write_text
from robench.reports.rundir import RunFiles, load_run
from robench.schema import KEYS, WORST_CASE
from robench.stats import fisher_one_sided

#: one-sided significance level per (defense, epsilon) comparison
ALPHA = 0.01
#: what identifies one row of the gate: (defense, model, dataset, norm, epsilon)
KEY = KEYS
BASELINE_COLUMNS = (*KEY, "suite", "n_examples", "robust", "robust_accuracy")
#: statuses that make the gate fail
FAILING = ("regression", "missing", "failed")


@dataclass(frozen=True)
class Comparison:
    """One (defense, model, dataset, norm, epsilon) row of the gate."""

    defense: str
    model: str
    dataset: str
    norm: str
    epsilon: float
    status: str  # pass | improved | regression | missing | new | failed
    baseline_robust: int | None = None
    baseline_n: int | None = None
    run_robust: int | None = None
    run_n: int | None = None
    tolerance: float = 0.0
    p_value: float | None = None
    message: str = ""

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    @property
    def name(self) -> str:
        return f"eps={self.epsilon:g} ({self.norm}, {self.model}, {self.dataset})"


@dataclass
class GateResult:
    comparisons: list[Comparison]
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(c.failing for c in self.comparisons)


def regression_p_value(run_robust: int, run_n: int, baseline_robust: int, baseline_n: int) -> float:
    """One-sided Fisher exact p-value of H1: the run's robust rate is below the baseline's."""
    return fisher_one_sided(run_robust, run_n, baseline_robust, baseline_n, alternative="less")


def improvement_p_value(run_robust: int, run_n: int, baseline_robust: int, baseline_n: int) -> float:
    """One-sided Fisher exact p-value of H1: the run's robust rate is above the baseline's."""
    return fisher_one_sided(run_robust, run_n, baseline_robust, baseline_n, alternative="greater")


def _key(row: Any) -> tuple[str, str, str, str, float]:
    return (str(row["defense"]), str(row["model"]), str(row["dataset"]), str(row["norm"]), round(float(row["epsilon"]), 9))


# --------------------------------------------------------------------------------------------- baseline
def baseline_from_run(run: RunFiles) -> pd.DataFrame:
    """The baseline rows a run would commit: its worst-case counts per defense and epsilon."""
    worst = run.results[run.results["attack"] == WORST_CASE]
    missing = [c for c in (*KEY, "n_examples", "robust") if c not in worst.columns]
    if missing:
        raise RobenchError(f"{run.path}/results.csv lacks column(s) {', '.join(missing)}; rerun `robench evaluate --out DIR`")
    suite = str((run.run.get("suite") or {}).get("name", ""))
    frame = pd.DataFrame({
        **{c: worst[c].to_numpy() for c in KEY},
        "suite": suite,
        "n_examples": worst["n_examples"].astype(int).to_numpy(),
        "robust": worst["robust"].astype(int).to_numpy(),
    })
    frame["robust_accuracy"] = (frame["robust"] / frame["n_examples"]).round(6)
    return frame.sort_values(list(KEY), kind="stable").reset_index(drop=True)


def read_baseline(path: str | Path) -> pd.DataFrame:
    """Read and validate a baseline CSV (format in reports/README.md)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""], comment="#")
    except FileNotFoundError:
        raise RobenchError(f"baseline {str(path)!r} does not exist; create it with `robench check DIR --baseline {path} --update-baseline`") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RobenchError(f"baseline {str(path)!r} is not a readable CSV ({str(exc).splitlines()[0]}); regenerate it with --update-baseline") from None
    missing = [c for c in BASELINE_COLUMNS if c not in frame.columns and c != "suite"]
    if missing:
        raise RobenchError(f"baseline {str(path)!r} lacks column(s) {', '.join(missing)}; regenerate it with --update-baseline")
    if "suite" not in frame.columns:
        frame["suite"] = ""
    for column in ("defense", "model", "dataset", "norm", "suite"):
        frame[column] = frame[column].fillna("").astype(str)
    for i, row in frame.iterrows():
        where = f"baseline {str(path)!r} row {int(i) + 2}"  # header is line 1
        try:
            n, k, acc, eps = int(row["n_examples"]), int(row["robust"]), float(row["robust_accuracy"]), float(row["epsilon"])
        except (TypeError, ValueError):
            raise RobenchError(f"{where}: n_examples, robust, robust_accuracy and epsilon must be numbers") from None
        if n < 1 or not 0 <= k <= n or math.isnan(eps):
            raise RobenchError(f"{where}: need n_examples >= 1 and 0 <= robust <= n_examples, got robust={k}, n_examples={n}")
        if abs(acc - k / n) > 5e-6:
            raise RobenchError(f"{where}: robust_accuracy {acc} is not robust/n_examples = {k}/{n}; fix one of them or regenerate with --update-baseline")
    keys = [_key(r) for _, r in frame.iterrows()]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise RobenchError(f"baseline {str(path)!r} lists {duplicate[0]!r} eps={duplicate[4]:g} twice; keep one row per defense and epsilon")
    return frame.astype({"n_examples": int, "robust": int, "epsilon": float})


def write_baseline(path: str | Path, frame: pd.DataFrame) -> None:
    """Rewrite the baseline atomically (a crash leaves the old file)."""
    atomic_write_text(path, frame[list(BASELINE_COLUMNS)].to_csv(index=False, float_format="%.10g"))


# --------------------------------------------------------------------------------------------- compare
def _tolerances(run: RunFiles) -> dict[str, float]:
    tolerances = {}
    for card in run.run.get("defenses") or []:
        if isinstance(card, dict) and card.get("tolerance") is not None:
            tolerances[str(card.get("name"))] = float(card["tolerance"])
    return tolerances


def compare(run: RunFiles, baseline: pd.DataFrame, *, alpha: float = ALPHA) -> GateResult:
    """Compare every (defense, epsilon) of the run and the baseline; see the module docstring."""
    if not 0 < alpha < 1:
        raise RobenchError(f"--alpha must lie in (0, 1), got {alpha}; the default is {ALPHA}")
    current = baseline_from_run(run)
    tolerances = _tolerances(run)
    failed: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for unit in run.failed_units:
        failed.setdefault((str(unit.get("defense")), round(float(unit.get("epsilon", math.nan)), 9)), []).append(unit)
    run_rows = {_key(r): r for _, r in current.iterrows()}
    base_rows = {_key(r): r for _, r in baseline.iterrows()}
    comparisons: list[Comparison] = []
    for key in sorted(set(run_rows) | set(base_rows)):
        defense, model, dataset, norm, epsilon = key
        base, now = base_rows.get(key), run_rows.get(key)
        tolerance = tolerances.get(defense, 0.0)
        common = dict(defense=defense, model=model, dataset=dataset, norm=norm, epsilon=epsilon, tolerance=tolerance)
        if base is not None:
            common.update(baseline_robust=int(base["robust"]), baseline_n=int(base["n_examples"]))
        if now is not None:
            common.update(run_robust=int(now["robust"]), run_n=int(now["n_examples"]))
        units = failed.get((defense, epsilon))
        if units:
            detail = "; ".join(f"{u.get('attack')}: {u.get('error')}" for u in units)
            comparisons.append(Comparison(**common, status="failed",
                                          message=f"{len(units)} unit(s) failed, so the worst case is partial: {detail}"))
        elif now is None:
            comparisons.append(Comparison(**common, status="missing",
                                          message="in the baseline but not in the run: evaluate this defense and epsilon, "
                                                  "or drop the row with --update-baseline"))
        elif base is None:
            comparisons.append(Comparison(**common, status="new",
                                          message="not in the baseline: add it with --update-baseline"))
        else:
            comparisons.append(_test(common, alpha))
    notes = []
    run_suite = str((run.run.get("suite") or {}).get("name", ""))
    base_suites = sorted({s for s in baseline.get("suite", pd.Series(dtype=str)) if s})
    if base_suites and run_suite and base_suites != [run_suite]:
        notes.append(f"the run used suite {run_suite!r}, the baseline {', '.join(map(repr, base_suites))}")
    return GateResult(comparisons, alpha, notes)


def _test(common: dict[str, Any], alpha: float) -> Comparison:
    k_run, n_run = common["run_robust"], common["run_n"]
    k_base, n_base = common["baseline_robust"], common["baseline_n"]
    drop = k_base / n_base - k_run / n_run
    p_down = regression_p_value(k_run, n_run, k_base, n_base)
    tolerance = common["tolerance"]
    if p_down < alpha and drop > tolerance + 1e-12:
        return Comparison(**common, status="regression", p_value=p_down,
                          message=f"worst-case robust accuracy fell by {drop:.3f} (one-sided Fisher exact p = {p_down:.2g} < {alpha:g}"
                                  + (f", beyond the card's tolerance {tolerance:g})" if tolerance else ")"))
    p_up = improvement_p_value(k_run, n_run, k_base, n_base)
    if p_up < alpha:
        return Comparison(**common, status="improved", p_value=p_down,
                          message=f"significantly above the baseline (p = {p_up:.2g}): refresh it with --update-baseline")
    why = "within the card's tolerance" if p_down < alpha else "not significant"
    change = k_run / n_run - k_base / n_base
    return Comparison(**common, status="pass", p_value=p_down, message=f"change {change + 0.0:+.3f}, {why}")


# --------------------------------------------------------------------------------------------- output
def _fraction(k: int | None, n: int | None) -> str:
    return "-" if k is None or n is None else f"{k}/{n} ({k / n:.3f})"


def diff_table(result: GateResult) -> str:
    """The table `robench check` prints: one line per comparison, failing ones marked."""
    header = ("defense", "eps", "baseline", "run", "change", "p", "status")
    rows = []
    for c in result.comparisons:
        change = "-"
        if None not in (c.run_robust, c.baseline_robust):
            change = f"{c.run_robust / c.run_n - c.baseline_robust / c.baseline_n + 0.0:+.3f}"  # type: ignore[operator]
        rows.append((c.defense, f"{c.epsilon:g}", _fraction(c.baseline_robust, c.baseline_n),
                     _fraction(c.run_robust, c.run_n), change, "-" if c.p_value is None else f"{c.p_value:.3g}",
                     c.status.upper() if c.failing else c.status))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    failing = [c for c in result.comparisons if c.failing]
    lines.append("")
    lines.extend(f"note: {n}" for n in result.notes)
    lines.extend(f"{c.status}: {c.defense} {c.name}: {c.message}" for c in result.comparisons if c.status != "pass")
    verdict = (f"FAIL: {len(failing)} of {len(result.comparisons)} comparison(s) failed" if failing
               else f"PASS: {len(result.comparisons)} comparison(s)")
    lines.append(f"{verdict} (worst-case robust accuracy, one-sided Fisher exact test at alpha {result.alpha:g})")
    return "\n".join(lines)


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one testcase per (defense, epsilon), so any CI lists the gate defense by defense."""
    failures = sum(c.status in ("regression", "missing") for c in result.comparisons)
    errors = sum(c.status == "failed" for c in result.comparisons)
    skipped = sum(c.status == "new" for c in result.comparisons)
    suites = ET.Element("testsuites", name="robench check")
    suite = ET.SubElement(suites, "testsuite", name="robench check", tests=str(len(result.comparisons)),
                          failures=str(failures), errors=str(errors), skipped=str(skipped), time="0")
    for c in result.comparisons:
        case = ET.SubElement(suite, "testcase", classname=f"robench.check.{c.defense}", name=c.name, time="0")
        text = (f"baseline {_fraction(c.baseline_robust, c.baseline_n)}, run {_fraction(c.run_robust, c.run_n)}, "
                f"p = {'-' if c.p_value is None else f'{c.p_value:.3g}'}, tolerance {c.tolerance:g}: {c.message}")
        if c.status in ("regression", "missing"):
            ET.SubElement(case, "failure", type=c.status, message=c.message).text = text
        elif c.status == "failed":
            ET.SubElement(case, "error", type=c.status, message=c.message).text = text
        elif c.status == "new":
            ET.SubElement(case, "skipped", message=c.message)
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def check_run(
    run_dir: str | Path,
    baseline_path: str | Path,
    *,
    junit: str | Path | None = None,
    update_baseline: bool = False,
    alpha: float = ALPHA,
) -> GateResult:
    """Compare a run directory with a baseline file; optionally write JUnit XML and a new baseline.

    With ``update_baseline`` a missing baseline file is fine (everything is ``new``), and the
    baseline is rewritten from the run after the comparison; a run with failed units is refused.
    """
    run = load_run(run_dir)
    baseline_path = Path(baseline_path)
    if update_baseline and not baseline_path.exists():
        baseline = pd.DataFrame({c: pd.Series(dtype=float if c in ("epsilon", "robust_accuracy") else object) for c in BASELINE_COLUMNS})
    else:
        baseline = read_baseline(baseline_path)
    result = compare(run, baseline, alpha=alpha)
    if junit is not None:
        atomic_write_text(junit, junit_xml(result))
    if update_baseline:
        if run.failed_units:
            raise RobenchError(f"{run.path} has {len(run.failed_units)} failed unit(s); fix and rerun them "
                               "(robench evaluate --resume) before updating the baseline")
        write_baseline(baseline_path, baseline_from_run(run))
    return result
