"""Read a run directory written by ``robench evaluate --out DIR``, and only that.

The report and the gate are built from these files alone, so that a report can be regenerated
and a run can be checked long after the process that made it is gone. Every problem with the
files is a :class:`~robench.errors.RobenchError` naming the file and the fix. File names, column
names and the CSV reader are robench.schema's (pure pandas: no torch, no runner).

Every table is validated here, in one place, as it is read (``TABLE_TYPES``): counts are finite
non-negative integers, rates lie in [0, 1], epsilons are finite and positive, flags are true or
false, names are not empty, and no cell is listed twice. So a hand-edited or damaged file is one
line naming the file, the row and the fix, never a traceback or a report of wrong numbers.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.errors import RobenchError
from robench.schema import (
    ADVERSARIAL, ADVERSARIAL_ARRAYS, AMOUNT, CERTIFY_STATUSES, COUNT, DIAGNOSTIC_REQUIRED, DIAGNOSTICS, EPSILON,
    EXAMPLE_REQUIRED, EXAMPLES, FLAG, NAME, NUMBER, OPTIONAL, PLAN, RATE, RESULT_REQUIRED, RESULTS, RUN,
    TABLE_TYPES, TEXT, read_table,
)

__all__ = ["RunFiles", "load_run", "read_results", "read_run_json", "read_adversarial", "validate_table",
           "SEQUENCE_NDIM", "IMAGE_NDIM", "TABLE_TYPES"]

#: ranks of ``x`` in adversarial.npz: sequences N x C x L, images N x C x H x W
SEQUENCE_NDIM, IMAGE_NDIM = 3, 4

_KIND_TEXT = {
    NAME: "a name (not empty)",
    COUNT: "a whole number >= 0 (a count)",
    RATE: "a number in [0, 1] (a rate)",
    EPSILON: "a finite number > 0 (an epsilon)",
    AMOUNT: "a finite number >= 0, or nothing",
    NUMBER: "a number, or nothing",
    FLAG: "true or false",
}
#: how far a stored rate may lie from its count's ratio (CSV keeps 16 digits; a hand edit is far off)
RATE_SLACK = 1e-6
_TRUE, _FALSE = {"true", "1", "1.0"}, {"false", "0", "0.0"}


@dataclass
class RunFiles:
    """The stored output of one evaluation; optional parts are ``None`` when their file is absent."""

    path: Path
    results: pd.DataFrame
    run: dict[str, Any]
    examples: pd.DataFrame | None = None
    diagnostics: pd.DataFrame | None = None
    adversarial: dict[str, np.ndarray] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def failed_units(self) -> list[dict[str, Any]]:
        return list(self.run.get("failed_units") or [])


def repair_hint(run_dir: str | Path) -> str:
    """How to get a damaged file of ``run_dir`` back: a robench run (it has plan.json and its units)
    rebuilds every table from its units with ``--resume``; anything else is evaluated again."""
    run_dir = Path(run_dir)
    if (run_dir / PLAN).is_file():
        return f"restore it, or rebuild the tables with `robench evaluate --resume {run_dir}` and the run's options (see {PLAN})"
    return "rerun `robench evaluate --out DIR`"


# ------------------------------------------------------------------------------------------- tables
def _line(frame: pd.DataFrame, position: int) -> int:
    return position + 2  # the header is line 1


def _bad(path: Path, column: str, kind: str, frame: pd.DataFrame, position: int, value: Any, hint: str) -> RobenchError:
    if isinstance(value, np.generic):
        value = value.item()
    shown = "nothing" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)
    what = _KIND_TEXT[kind.rstrip(OPTIONAL)] + (" or nothing" if kind.endswith(OPTIONAL) else "")
    return RobenchError(f"{path}: column {column!r} must hold {what}, but line {_line(frame, position)} "
                        f"holds {shown}; {hint}")


def _numbers(path: Path, frame: pd.DataFrame, column: str, kind: str, hint: str) -> np.ndarray:
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    if raw.dtype == bool:  # pandas reads a column of True/False as bool: not numbers
        values = np.full(len(raw), np.nan)
    missing = raw.isna().to_numpy()
    allow_missing = kind in (AMOUNT, NUMBER) or kind.endswith(OPTIONAL)
    kind = kind.rstrip(OPTIONAL)
    bad = (np.isnan(values) & ~missing) | (missing & ~allow_missing)
    present = ~missing
    finite = np.isfinite(values)
    if kind != NUMBER:
        bad |= present & ~finite
    if kind == COUNT:  # below 2**53: a whole number a float holds exactly, and an int64 too
        bad |= present & finite & ((values < 0) | (np.floor(values) != values) | (values >= 2.0**53))
    elif kind == RATE:
        bad |= present & finite & ((values < 0) | (values > 1))
    elif kind == EPSILON:
        bad |= present & finite & (values <= 0)
    elif kind == AMOUNT:
        bad |= present & finite & (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad(path, column, kind, frame, i, raw.iloc[i], hint)
    return values


def _flags(path: Path, frame: pd.DataFrame, column: str, hint: str) -> pd.Series:
    raw = frame[column]
    if raw.dtype == bool:
        return raw
    text = raw.astype(str).str.strip().str.lower()
    bad = ~(text.isin(_TRUE) | text.isin(_FALSE)) | raw.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _bad(path, column, FLAG, frame, i, raw.iloc[i], hint)
    return text.isin(_TRUE)


def validate_table(frame: pd.DataFrame, path: str | Path, *, hint: str | None = None) -> pd.DataFrame:
    """Check ``frame`` (read from ``path``, a run table named in ``TABLE_TYPES``) and return it with
    clean dtypes: counts int64, numbers float64, flags bool, names str. Any bad cell, a count above
    its row's ``n_examples``, a rate that is not its count's ratio, or two rows for one cell is one
    RobenchError naming the file, the line and ``hint`` (how to get a good file back)."""
    path = Path(path)
    hint = hint or repair_hint(path.parent)
    kinds, identity = TABLE_TYPES[path.name]
    frame = frame.reset_index(drop=True).copy()
    for column, kind in kinds.items():
        if column not in frame.columns:
            continue
        if kind == TEXT:
            continue  # free text; certify_status is checked against its vocabulary below
        if kind == NAME:
            blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
            if blank.any():
                i = int(np.flatnonzero(blank.to_numpy())[0])
                raise _bad(path, column, NAME, frame, i, None, hint)
            frame[column] = frame[column].astype(str)
        elif kind == FLAG:
            frame[column] = _flags(path, frame, column, hint)
        else:
            values = _numbers(path, frame, column, kind, hint)
            frame[column] = values.astype(np.int64) if kind == COUNT else values  # an optional count stays float (NaN)
    if "certify_status" in frame.columns:
        status = frame["certify_status"].fillna("").astype(str)
        wrong = ~status.isin(CERTIFY_STATUSES)
        if wrong.any():
            i = int(np.flatnonzero(wrong.to_numpy())[0])
            raise RobenchError(f"{path}: column 'certify_status' must hold one of {', '.join(repr(s) for s in CERTIFY_STATUSES[1:])} "
                               f"or nothing, but line {_line(frame, i)} holds {status.iloc[i]!r}; {hint}")
        frame["certify_status"] = status
    if "n_examples" in frame.columns:
        n = frame["n_examples"].to_numpy()
        if (n < 1).any():
            i = int(np.flatnonzero(n < 1)[0])
            raise RobenchError(f"{path}: line {_line(frame, i)} has n_examples 0; every row counts at least one example; {hint}")
        for count in ("robust", "attacked", "certified"):
            if count in frame.columns and (frame[count].to_numpy() > n).any():  # NaN (no certifier) compares False
                i = int(np.flatnonzero(frame[count].to_numpy() > n)[0])
                raise RobenchError(f"{path}: line {_line(frame, i)} has {count} {int(frame[count].iloc[i])} of only "
                                   f"{int(n[i])} examples; {hint}")
        if {"robust", "robust_accuracy"} <= set(frame.columns):
            off = np.abs(frame["robust_accuracy"].to_numpy() - frame["robust"].to_numpy() / n) > RATE_SLACK
            if off.any():
                i = int(np.flatnonzero(off)[0])
                raise RobenchError(f"{path}: line {_line(frame, i)} has robust_accuracy {frame['robust_accuracy'].iloc[i]:g}, "
                                   f"but robust/n_examples is {int(frame['robust'].iloc[i])}/{int(n[i])}; {hint}")
    for rate in ("clean_accuracy", "robust_accuracy", "adversarial_risk", "certified_accuracy"):
        if {rate, f"{rate}_low", f"{rate}_high"} <= set(frame.columns):
            low, value, high = (frame[c].to_numpy() for c in (f"{rate}_low", rate, f"{rate}_high"))
            outside = (low > value + RATE_SLACK) | (value > high + RATE_SLACK)
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise RobenchError(f"{path}: line {_line(frame, i)} has {rate} {value[i]:g} outside its interval "
                                   f"[{low[i]:g}, {high[i]:g}]; {hint}")
    key = [c for c in identity if c in frame.columns]
    if key and len(frame):
        rounded = frame[key].assign(**({"epsilon": frame["epsilon"].round(9)} if "epsilon" in key else {}))
        twice = rounded.duplicated(keep=False).to_numpy()
        if twice.any():
            lines = [_line(frame, int(i)) for i in np.flatnonzero(twice)[:2]]
            first = frame.iloc[int(np.flatnonzero(twice)[0])]
            cell = ", ".join(f"{c} {first[c]!r}" if c != "epsilon" else f"epsilon {first[c]:g}" for c in key)
            raise RobenchError(f"{path}: lines {lines[0]} and {lines[1]} are the same row ({cell}); "
                               f"keep one row per {', '.join(key)}; {hint}")
    return frame


def _read_validated(path: Path, required: tuple[str, ...], hint: str) -> pd.DataFrame:
    return validate_table(read_table(path, required), path, hint=hint)


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """``results.csv``: one row per (defense, epsilon, attack) plus the worst case, validated."""
    run_dir = Path(run_dir)
    return _read_validated(run_dir / RESULTS, RESULT_REQUIRED, repair_hint(run_dir))


# ------------------------------------------------------------------------------------------- run.json
#: run.json's parts that the report and the gate read, and what each must be
RUN_OBJECTS = ("config", "dataset", "model", "suite", "timings", "versions")
RUN_LISTS = ("defenses", "failed_units")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_run_json(payload: Any, path: Path, hint: str) -> dict[str, Any]:
    """The shape of run.json that its readers rely on: objects where objects are read, lists of
    objects where lists are read, numbers where numbers are read."""
    def bad(what: str) -> RobenchError:
        return RobenchError(f"{path}: {what}; {hint}")

    if not isinstance(payload, dict):
        return_type = type(payload).__name__
        raise bad(f"must hold a JSON object, not a JSON {return_type}")
    for key in RUN_OBJECTS:
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise bad(f"{key!r} must be an object, got {type(payload[key]).__name__}")
    for key in RUN_LISTS:
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad(f"{key!r} must be a list of objects, got {json.dumps(value)[:60]}")
    attacks = (payload.get("suite") or {}).get("attacks")
    if attacks is not None and (not isinstance(attacks, list) or not all(isinstance(a, dict) for a in attacks)):
        raise bad("'suite.attacks' must be a list of objects")
    seconds = (payload.get("timings") or {}).get("seconds")
    if seconds is not None and not _is_number(seconds):
        raise bad(f"'timings.seconds' must be a number, got {seconds!r}")
    meta = (payload.get("model") or {}).get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise bad("'model.meta' must be an object")
    for unit in payload.get("failed_units") or []:
        if "epsilon" in unit and not _is_number(unit["epsilon"]):
            raise bad(f"a failed unit's 'epsilon' must be a number, got {unit['epsilon']!r}")
    for card in payload.get("defenses") or []:
        tolerance = card.get("tolerance")
        if tolerance is not None and not (_is_number(tolerance) and 0 <= tolerance <= 1):
            raise bad(f"defense {card.get('name')!r}: 'tolerance' must be a number in [0, 1], got {tolerance!r}")
    return payload


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / RUN
    hint = repair_hint(run_dir)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (run_dir / RESULTS).exists():
            raise RobenchError(f"{path} does not exist, though {RESULTS} does; {hint}") from None
        raise RobenchError(f"{path} does not exist; point at a directory written by `robench evaluate --out DIR`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise RobenchError(f"{path} is not valid JSON ({str(exc).splitlines()[0][:120]}); {hint}") from None
    except OSError as exc:
        raise RobenchError(f"{path} is not readable ({exc.strerror or exc}); {hint}") from None
    return validate_run_json(payload, path, hint)


# ------------------------------------------------------------------------------------------- adversarial.npz
def read_adversarial(path: Path) -> dict[str, np.ndarray]:
    """``adversarial.npz``: a few verified adversarial examples per (defense, epsilon).

    ``x`` and ``x_adv`` are sequences (N x C x L) or images (N x C x H x W) of finite numbers; any
    other rank is refused. ``defense``, ``epsilon``, ``attack`` and ``example`` have one entry per row.
    """
    fix = "delete it or rerun the evaluation"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, zipfile.BadZipFile, EOFError, ...: all mean a bad file
        text = str(exc).splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise RobenchError(f"{path} is not a readable .npz archive ({text}); {fix}") from None
    if not isinstance(arrays, dict) or not all(isinstance(a, np.ndarray) for a in arrays.values()):
        raise RobenchError(f"{path} is not an .npz archive of arrays; {fix}")
    missing = [a for a in ADVERSARIAL_ARRAYS if a not in arrays]
    if missing:
        raise RobenchError(f"{path} lacks array(s) {', '.join(missing)}; {fix}")
    flat = [a for a in ("defense", "epsilon", "attack", "example") if arrays[a].ndim != 1]
    if flat:
        raise RobenchError(f"{path}: {', '.join(flat)} must be 1-D (one entry per example); {fix}")
    n = len(arrays["example"])
    if any(len(arrays[a]) != n for a in ADVERSARIAL_ARRAYS) or arrays["x"].shape != arrays["x_adv"].shape:
        raise RobenchError(f"{path}: arrays disagree in length or shape; {fix}")
    if arrays["x"].ndim not in (SEQUENCE_NDIM, IMAGE_NDIM):
        raise RobenchError(f"{path}: x must be N x C x L (sequences) or N x C x H x W (images), got shape "
                           f"{arrays['x'].shape}; {fix}")
    if 0 in arrays["x"].shape[1:]:
        raise RobenchError(f"{path}: x holds empty examples (shape {arrays['x'].shape}); {fix}")
    for name in ("x", "x_adv", "epsilon"):
        kind = arrays[name].dtype.kind
        if kind not in "fiu" or (kind == "f" and not np.isfinite(arrays[name]).all()):
            raise RobenchError(f"{path}: {name} must hold finite numbers (got {arrays[name].dtype}"
                               f"{', with NaN or infinity' if kind == 'f' else ''}); {fix}")
    if arrays["example"].dtype.kind not in "iu" or (n and arrays["example"].min() < 0):
        raise RobenchError(f"{path}: example must hold example indices (integers >= 0), got {arrays['example'].dtype}; {fix}")
    if n and (arrays["epsilon"] <= 0).any():
        raise RobenchError(f"{path}: epsilon must be > 0; {fix}")
    arrays["defense"] = arrays["defense"].astype(str)
    arrays["attack"] = arrays["attack"].astype(str)
    return arrays


# ------------------------------------------------------------------------------------------- the directory
def load_run(run_dir: str | Path) -> RunFiles:
    """All files of a run directory: results.csv and run.json are required, the rest optional.

    A directory with plan.json but no results.csv is a run that has not finished (interrupted, or
    still running): the error says to resume it.
    """
    path = Path(run_dir)
    if not path.exists():
        raise RobenchError(f"run directory {str(path)!r} does not exist; pass the --out DIR of `robench evaluate`")
    if not path.is_dir():
        raise RobenchError(f"run directory {str(path)!r} is not a directory; pass the --out DIR of `robench evaluate`")
    if not (path / RESULTS).exists() and (path / PLAN).is_file():
        raise RobenchError(f"{path} is an unfinished run ({PLAN} but no {RESULTS}): it was interrupted or is still "
                           f"running; finish it with `robench evaluate --resume {path}` and the run's options "
                           f"(they are in {PLAN})")
    hint = repair_hint(path)
    results = read_results(path)
    run = read_run_json(path)
    if results.empty and not run.get("failed_units"):
        raise RobenchError(f"{path / RESULTS} holds no rows; {hint}")
    files = RunFiles(path=path, results=results, run=run)
    if (path / EXAMPLES).exists():
        files.examples = _read_validated(path / EXAMPLES, EXAMPLE_REQUIRED, hint)
        if files.examples.empty and not results.empty:
            raise RobenchError(f"{path / EXAMPLES} holds no rows, though {RESULTS} does; {hint}")
    if (path / DIAGNOSTICS).exists():
        files.diagnostics = _read_validated(path / DIAGNOSTICS, DIAGNOSTIC_REQUIRED, hint)
    if (path / ADVERSARIAL).exists():
        files.adversarial = read_adversarial(path / ADVERSARIAL)
    return files
