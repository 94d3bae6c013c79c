"""The run tables' schema: column names, their kinds and dtypes, the certify-status vocabulary,
the ``worst-case`` label, file names, and the one reader.

Every module that writes or reads a run table (units, risk, diagnostics, store, output, reports,
gate) takes its names from here, so a column is renamed in one place and a table read from disk
has the same dtypes as one fresh from memory. Pure pandas: importing it pulls in no torch, so
``robench report`` and ``robench check`` stay light.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from robench.errors import RobenchError

# The files of a run directory (robench evaluate --out DIR)
RESULTS, EXAMPLES, RUN = "results.csv", "examples.csv", "run.json"
DIAGNOSTICS, ADVERSARIAL, REPORT = "diagnostics.csv", "adversarial.npz", "report.html"
PLAN, UNITS = "plan.json", "units"

#: the pseudo-attack that holds the per-example worst case over a suite's attacks
WORST_CASE = "worst-case"

#: what identifies one evaluated cell: every per-example and per-result row starts with these
KEYS: tuple[str, ...] = ("defense", "model", "dataset", "norm", "epsilon")

#: examples.csv (and a unit's stored rows): one row per (defense, epsilon, attack, example);
#: ``attacked``: the attack was given the example (clean-correct, and in a cascade unbroken so far);
#: ``certified``: some certifier of the suite certified the example; ``certify_status``: on a
#: certifier's rows ``certified``, ``counterexample`` or ``unknown``, empty where no certifier ran
EXAMPLE_COLUMNS: tuple[str, ...] = (
    *KEYS, "attack", "example", "label", "clean_correct", "broken", "rejected", "queries", "distance",
    "margin", "draws", "attacked", "certified", "certify_status", "seconds",
)
#: examples.csv as written (per-unit seconds are kept in run.json's timings instead)
EXAMPLE_FILE_COLUMNS: tuple[str, ...] = tuple(c for c in EXAMPLE_COLUMNS if c != "seconds")

#: results.csv: one row per (defense, epsilon, attack) plus the worst case; ``attacked``: how many
#: examples the attack was given (in a cascade, fewer than the clean-correct ones)
RESULT_COLUMNS: tuple[str, ...] = (
    *KEYS, "attack", "n_examples", "clean_accuracy", "clean_accuracy_low", "clean_accuracy_high",
    "robust_accuracy", "robust_accuracy_low", "robust_accuracy_high",
    "adversarial_risk", "adversarial_risk_low", "adversarial_risk_high",
    "robust", "rejected", "queries_mean", "seconds", "attacked",
    "certified", "certified_accuracy", "certified_accuracy_low", "certified_accuracy_high", "unknown_fraction",
)
#: what a reader of results.csv needs (every column robench writes)
RESULT_REQUIRED: tuple[str, ...] = RESULT_COLUMNS
#: what a reader of examples.csv needs (every column examples.csv holds)
EXAMPLE_REQUIRED: tuple[str, ...] = EXAMPLE_FILE_COLUMNS

#: diagnostics.csv: one row per gradient-masking check run on a (defense, epsilon)
DIAGNOSTIC_COLUMNS: tuple[str, ...] = ("defense", "epsilon", "check", "fired", "detail")
DIAGNOSTIC_REQUIRED: tuple[str, ...] = ("defense", "epsilon", "check", "fired")

#: certify_status: what a certifier answered for an example; empty where no certifier ran
CERTIFIED, COUNTEREXAMPLE, UNKNOWN, NOT_CERTIFIED = "certified", "counterexample", "unknown", ""
CERTIFY_STATUSES: tuple[str, ...] = (NOT_CERTIFIED, CERTIFIED, COUNTEREXAMPLE, UNKNOWN)
#: how much a status says about an example, least first: the worst case over certifiers keeps the most
STATUS_RANK: dict[str, int] = {NOT_CERTIFIED: 0, UNKNOWN: 1, COUNTEREXAMPLE: 2, CERTIFIED: 3}

#: what each kind of column must hold (``robench.reports.rundir.validate_table`` checks it)
NAME, COUNT, RATE, EPSILON, AMOUNT, NUMBER, FLAG = "name", "count", "rate", "epsilon", "amount", "number", "flag"
#: free text, possibly empty (a diagnostic's detail; certify_status, checked against CERTIFY_STATUSES)
TEXT = "text"
#: a kind ending in "?" may also be empty (a column only some rows fill, e.g. a certifier's)
OPTIONAL = "?"
#: per table: column -> kind (columns a table lacks are not checked; ``required`` is read_table's)
#: and the columns that identify a row (no two rows may share them)
TABLE_TYPES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    RESULTS: ({
        "defense": NAME, "model": NAME, "dataset": NAME, "norm": NAME, "attack": NAME, "epsilon": EPSILON,
        "n_examples": COUNT, "robust": COUNT, "rejected": COUNT, "attacked": COUNT,
        **{f"{rate}{end}": RATE for rate in ("clean_accuracy", "robust_accuracy", "adversarial_risk")
           for end in ("", "_low", "_high")},
        "queries_mean": AMOUNT, "seconds": AMOUNT,
        "certified": COUNT + OPTIONAL, "unknown_fraction": NUMBER,
        **{f"certified_accuracy{end}": RATE + OPTIONAL for end in ("", "_low", "_high")},
    }, (*KEYS, "attack")),
    EXAMPLES: ({
        "defense": NAME, "model": NAME, "dataset": NAME, "norm": NAME, "attack": NAME, "epsilon": EPSILON,
        "example": COUNT, "label": COUNT, "queries": COUNT, "draws": COUNT,
        "clean_correct": FLAG, "broken": FLAG, "rejected": FLAG, "attacked": FLAG, "certified": FLAG,
        "distance": NUMBER, "margin": NUMBER, "seconds": AMOUNT, "certify_status": TEXT,
    }, (*KEYS, "attack", "example")),
    DIAGNOSTICS: ({  # no identity: a check may give one row per model or data set of a (defense, epsilon)
        "defense": NAME, "check": NAME, "epsilon": EPSILON, "fired": FLAG, "detail": TEXT,
    }, ()),
}

#: the dtype a column of each kind has in memory (an optional count is float: it may be missing)
KIND_DTYPES: dict[str, type] = {NAME: str, TEXT: str, COUNT: int, RATE: float, EPSILON: float, AMOUNT: float,
                                NUMBER: float, FLAG: bool}

#: columns that hold names, kept as text whatever they look like (a defense called "1" stays "1")
TEXT_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    column for kinds, _ in TABLE_TYPES.values() for column, kind in kinds.items() if kind in (NAME, TEXT)))

#: adversarial.npz: a few verified adversarial examples per unit, for the report's grid
ADVERSARIAL_ARRAYS: tuple[str, ...] = ("defense", "epsilon", "attack", "example", "x", "x_adv")


def parse_rows(text: str) -> pd.DataFrame:
    """Parse a run table's CSV text: name columns as text, empty cells as missing."""
    header = text.split("\n", 1)[0].split(",")
    dtypes = {c: str for c in TEXT_COLUMNS if c in header}
    return pd.read_csv(io.StringIO(text), dtype=dtypes, keep_default_na=False, na_values=[""])


def normalize_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Round-trip through CSV, so a fresh run and a resumed one assemble identical tables."""
    return parse_rows(rows.to_csv(index=False))


def read_table(path: str | Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read one run table from disk; a missing, unreadable or incomplete file is one clear error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RobenchError(f"{path} does not exist; point at a directory written by `robench evaluate --out DIR`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RobenchError(f"{path} is not readable ({exc}); rerun `robench evaluate --out DIR`") from None
    try:
        frame = parse_rows(text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise RobenchError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]}); rerun `robench evaluate --out DIR`") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RobenchError(f"{path} lacks column(s) {', '.join(missing)}; was it written by this robench version?")
    return frame


def empty_diagnostics() -> pd.DataFrame:
    """A diagnostics table with no rows, and the dtypes its columns' kinds give."""
    kinds, _ = TABLE_TYPES[DIAGNOSTICS]
    return pd.DataFrame({c: pd.Series(dtype=KIND_DTYPES[kinds[c]]) for c in DIAGNOSTIC_COLUMNS})
