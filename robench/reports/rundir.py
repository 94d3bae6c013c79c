"""Read a run directory written by ``robench evaluate --out DIR``, and only that.

The report and the gate are built from these files alone, so that a report can be regenerated
and a run can be checked long after the process that made it is gone. Every problem with the
files is a :class:`~robench.errors.RobenchError` naming the file and the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.errors import RobenchError

# The same names as robench.output (not imported from there: that module pulls in the runner and
# torch, which `robench report` and `robench check` do not need).
RESULTS, EXAMPLES, RUN = "results.csv", "examples.csv", "run.json"
DIAGNOSTICS, ADVERSARIAL, REPORT = "diagnostics.csv", "adversarial.npz", "report.html"

WORST_CASE = "worst-case"  # robench.risk.WORST_CASE
RESULT_COLUMNS = (
    "defense", "epsilon", "attack", "n_examples", "clean_accuracy",
    "robust_accuracy", "robust_accuracy_low", "robust_accuracy_high",
)
ADVERSARIAL_ARRAYS = ("defense", "epsilon", "attack", "example", "x", "x_adv")


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


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise RobenchError(f"{path} does not exist; point at a directory written by `robench evaluate --out DIR`") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RobenchError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]}); rerun `robench evaluate --out DIR`") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RobenchError(f"{path} lacks column(s) {', '.join(missing)}; was it written by this robench version?")
    if "defense" in frame.columns:
        frame["defense"] = frame["defense"].astype(str)
    return frame


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """``results.csv``: one row per (defense, epsilon, attack) plus the worst case."""
    return _read_csv(Path(run_dir) / RESULTS, RESULT_COLUMNS)


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RobenchError(f"{path} does not exist; point at a directory written by `robench evaluate --out DIR`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RobenchError(f"{path} is not valid JSON ({exc}); rerun `robench evaluate --out DIR`") from None
    if not isinstance(payload, dict):
        raise RobenchError(f"{path} must hold a JSON object; rerun `robench evaluate --out DIR`")
    return payload


def read_adversarial(path: Path) -> dict[str, np.ndarray]:
    """``adversarial.npz``: a few verified adversarial examples per (defense, epsilon)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise RobenchError(f"{path} is not a readable .npz archive ({exc}); delete it or rerun the evaluation") from None
    missing = [a for a in ADVERSARIAL_ARRAYS if a not in arrays]
    if missing:
        raise RobenchError(f"{path} lacks array(s) {', '.join(missing)}; delete it or rerun the evaluation")
    n = len(arrays["example"])
    if any(len(arrays[a]) != n for a in ADVERSARIAL_ARRAYS) or arrays["x"].shape != arrays["x_adv"].shape:
        raise RobenchError(f"{path}: arrays disagree in length or shape; delete it or rerun the evaluation")
    if arrays["x"].ndim != 4:
        raise RobenchError(f"{path}: x must be N x C x H x W, got shape {arrays['x'].shape}; delete it or rerun the evaluation")
    arrays["defense"] = arrays["defense"].astype(str)
    arrays["attack"] = arrays["attack"].astype(str)
    return arrays


def load_run(run_dir: str | Path) -> RunFiles:
    """All files of a run directory: results.csv and run.json are required, the rest optional."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RobenchError(f"run directory {str(path)!r} does not exist; pass the --out DIR of `robench evaluate`")
    files = RunFiles(path=path, results=read_results(path), run=read_run_json(path))
    if (path / EXAMPLES).exists():
        files.examples = _read_csv(path / EXAMPLES, ("defense", "epsilon", "attack", "example", "clean_correct", "broken"))
    if (path / DIAGNOSTICS).exists():
        files.diagnostics = _read_csv(path / DIAGNOSTICS, ("defense", "epsilon", "check", "fired"))
    if (path / ADVERSARIAL).exists():
        files.adversarial = read_adversarial(path / ADVERSARIAL)
    return files
