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
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robench.errors import RobenchError
from robench.io import atomic_write_text
from robench.reports.rundir import RunFiles, load_run
from robench.schema import KEYS, UNITS, WORST_CASE
from robench.store import OWN_FILES
from robench.stats import fisher_one_sided

#: one-sided significance level per (defense, epsilon) comparison
ALPHA = 0.01
#: what identifies one row of the gate: (defense, model, dataset, norm, epsilon)
KEY = KEYS
BASELINE_COLUMNS = (*KEY, "suite", "n_examples", "robust", "robust_accuracy")
#: statuses that make the gate fail
FAILING = ("regression", "missing", "failed")
#: the one file ``check`` may write among a run directory's own files (store.OWN_FILES)
JUNIT_IN_RUN = "junit.xml"


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


class BaselineRowsError(RobenchError):
    """A baseline CSV with the right columns whose rows are wrong: ``--update-baseline`` may replace it."""


def read_baseline(path: str | Path, *, allow_empty: bool = False) -> pd.DataFrame:
    """Read and validate a baseline CSV (format in reports/README.md): names are not empty, counts
    are whole numbers with 1 <= n_examples and 0 <= robust <= n_examples, robust_accuracy is their
    ratio, epsilon is finite and > 0, one row per (defense, model, dataset, norm, epsilon), and at
    least one row (unless ``allow_empty``: ``--update-baseline`` is about to write them)."""
    path = Path(path)
    fix = "regenerate it with --update-baseline"
    # a file that is no baseline at all may be anything (a typo in the path): never offer to overwrite it
    not_one = "check the path; if it is an old baseline, delete it and create it anew with --update-baseline"
    where = f"baseline {str(path)!r}"
    if path.is_dir():
        raise RobenchError(f"{where} is a directory; give the path of the baseline CSV file (create one with "
                           f"`robench check DIR --baseline FILE --update-baseline`)")
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""], comment="#", dtype=str)
    except FileNotFoundError:
        raise RobenchError(f"{where} does not exist; create it with `robench check DIR --baseline {path} --update-baseline`") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise RobenchError(f"{where} is not a readable CSV ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {not_one}") from None
    except OSError as exc:
        raise RobenchError(f"{where} is not readable ({exc.strerror or exc}); give the path of the baseline CSV file") from None
    missing = [c for c in BASELINE_COLUMNS if c not in frame.columns and c != "suite"]
    if missing:
        raise RobenchError(f"{where} lacks column(s) {', '.join(missing)}; {not_one}")
    if frame.empty and not allow_empty:
        raise BaselineRowsError(f"{where} holds no rows, so it would pass any run; {fix}")
    if "suite" not in frame.columns:
        frame["suite"] = ""
    frame["suite"] = frame["suite"].fillna("").astype(str)
    for i, row in frame.iterrows():
        at = f"{where} row {int(i) + 2}"  # header is line 1
        blank = [c for c in ("defense", "model", "dataset", "norm") if pd.isna(row[c]) or not str(row[c]).strip()]
        if blank:
            raise BaselineRowsError(f"{at}: {', '.join(blank)} must not be empty; {fix}")
        try:
            n, k, acc, eps = (float(row[c]) for c in ("n_examples", "robust", "robust_accuracy", "epsilon"))
        except (TypeError, ValueError):
            raise BaselineRowsError(f"{at}: n_examples, robust, robust_accuracy and epsilon must be numbers, got "
                               f"{', '.join(repr(row[c]) for c in ('n_examples', 'robust', 'robust_accuracy', 'epsilon'))}; {fix}") from None
        if not all(math.isfinite(v) for v in (n, k, acc, eps)):
            raise BaselineRowsError(f"{at}: n_examples, robust, robust_accuracy and epsilon must be finite numbers (no NaN "
                               f"or infinity); {fix}")
        if not (n.is_integer() and k.is_integer()):
            raise BaselineRowsError(f"{at}: n_examples and robust are counts and must be whole numbers, got "
                               f"n_examples={n:g}, robust={k:g}; {fix}")
        if n < 1 or not 0 <= k <= n:
            raise BaselineRowsError(f"{at}: need n_examples >= 1 and 0 <= robust <= n_examples, got robust={k:g}, n_examples={n:g}; {fix}")
        if eps <= 0:
            raise BaselineRowsError(f"{at}: epsilon must be > 0, got {eps:g}; {fix}")
        if abs(acc - k / n) > 5e-6:
            raise BaselineRowsError(f"{at}: robust_accuracy {acc} is not robust/n_examples = {k:g}/{n:g}; fix one of them or regenerate with --update-baseline")
    frame = frame.astype({"n_examples": float, "robust": float, "epsilon": float, "robust_accuracy": float})
    frame = frame.astype({"n_examples": int, "robust": int})
    keys = [_key(r) for _, r in frame.iterrows()]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise BaselineRowsError(f"{where} lists {duplicate[0]!r} eps={duplicate[4]:g} twice; keep one row per defense and epsilon")
    return frame


def write_baseline(path: str | Path, frame: pd.DataFrame) -> None:
    """Rewrite the baseline atomically (a crash leaves the old file); a symlink stays a symlink."""
    write_through(path, frame[list(BASELINE_COLUMNS)].to_csv(index=False, float_format="%.10g"), "the baseline")


def write_through(path: str | Path, text: str, what: str) -> Path:
    """Write ``text`` to ``path`` atomically, following a symlink: the link's target is replaced
    whole (a temporary file beside it, then a rename) and the link itself is left as it is, as
    shell redirection and editors do; replacing the link by a file would silently cut it."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.is_dir():
        raise RobenchError(f"cannot write {what} to {str(path)!r}: it is a directory; give a file path")
    try:
        atomic_write_text(target, text)
    except OSError as exc:
        raise RobenchError(f"cannot write {what} to {str(path)!r} ({exc.strerror or exc}); choose another path") from None
    return target


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
    header = ("defense", "model", "dataset", "norm", "eps", "baseline", "run", "change", "p", "status")
    rows = []
    matched = [c for c in result.comparisons if c.status not in ("missing", "new")]
    first = f"{len(matched)} of {len(result.comparisons)} row(s) matched between the baseline and the run"
    if result.comparisons and not matched and not any(c.status == "missing" for c in result.comparisons):
        first += ": the baseline holds none of these rows yet (add them with --update-baseline)"
    elif result.comparisons and not matched:
        def cells(status: str) -> str:
            found = sorted({f"{c.model}/{c.dataset}/{c.norm}/eps {c.epsilon:g}" for c in result.comparisons if c.status == status})
            return ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        first += (f": the baseline is for another model, data set or threat model (baseline: {cells('missing')}; "
                  f"run: {cells('new')})")
    for c in result.comparisons:
        change = "-"
        if None not in (c.run_robust, c.baseline_robust):
            change = f"{c.run_robust / c.run_n - c.baseline_robust / c.baseline_n + 0.0:+.3f}"  # type: ignore[operator]
        rows.append((c.defense, c.model, c.dataset, c.norm, f"{c.epsilon:g}", _fraction(c.baseline_robust, c.baseline_n),
                     _fraction(c.run_robust, c.run_n), change, "-" if c.p_value is None else f"{c.p_value:.3g}",
                     c.status.upper() if c.failing else c.status))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [first, *("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])]
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
    _refuse_overwriting(run, baseline_path, junit, update_baseline)
    notes: list[str] = []
    if update_baseline and not baseline_path.exists():
        baseline = _empty_baseline()
    elif update_baseline:
        try:
            baseline = read_baseline(baseline_path, allow_empty=True)
        except BaselineRowsError as exc:  # a baseline with bad rows, about to be rewritten: compare with nothing, say why
            baseline = _empty_baseline()
            notes.append(f"the old baseline's rows were unreadable and are replaced ({exc})")
    else:
        baseline = read_baseline(baseline_path)
    result = compare(run, baseline, alpha=alpha)
    result.notes[:0] = notes
    if junit is not None:
        write_through(junit, junit_xml(result), "the JUnit XML")
    if update_baseline:
        if run.failed_units:
            raise RobenchError(f"{run.path} has {len(run.failed_units)} failed unit(s); fix and rerun them "
                               "(robench evaluate --resume) before updating the baseline")
        write_baseline(baseline_path, baseline_from_run(run))
    return result


def _empty_baseline() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("epsilon", "robust_accuracy") else object) for c in BASELINE_COLUMNS})


def _refuse_overwriting(run: RunFiles, baseline: Path, junit: str | Path | None, update_baseline: bool) -> None:
    """The files ``check`` writes (--junit, an updated baseline) never replace a file of the run
    (its tables, plan, units) or each other: that would lose data the user still needs."""
    def same(a: Path, b: Path) -> bool:
        return os.path.realpath(a) == os.path.realpath(b)

    run_dir = Path(os.path.realpath(run.path))
    written = ([("--junit", Path(junit))] if junit is not None else []) + ([("--baseline", baseline)] if update_baseline else [])
    for option, path in written:
        real = Path(os.path.realpath(path))
        own = real.parent == run_dir and real.name in OWN_FILES and real.name != JUNIT_IN_RUN
        if own or run_dir / UNITS in real.parents:
            raise RobenchError(f"{option} {path} would {'overwrite' if real.exists() else 'write'} {real.relative_to(run_dir)} "
                               f"of the run {run.path}; choose a path outside the run's own files")
    if junit is not None and same(Path(junit), baseline):
        raise RobenchError(f"--junit {junit} is the baseline file; give the JUnit XML another path")
