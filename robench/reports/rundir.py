"""Read a run directory written by ``robench evaluate --out DIR``, and only that.

The report and the gate are built from these files alone, so that a report can be regenerated
and a run can be checked long after the process that made it is gone. Every problem with the
files is a :class:`~robench.errors.RobenchError` naming the file and the fix. File names, column
names and the CSV reader are robench.schema's (pure pandas: no torch, no runner).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.errors import RobenchError
from robench.schema import (
    ADVERSARIAL, ADVERSARIAL_ARRAYS, DIAGNOSTIC_REQUIRED, DIAGNOSTICS, EXAMPLE_REQUIRED, EXAMPLES, RESULT_REQUIRED,
    RESULTS, RUN, read_table,
)

__all__ = ["RunFiles", "load_run", "read_results", "read_run_json", "read_adversarial", "SEQUENCE_NDIM", "IMAGE_NDIM"]

#: ranks of ``x`` in adversarial.npz: sequences N x C x L, images N x C x H x W
SEQUENCE_NDIM, IMAGE_NDIM = 3, 4


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


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """``results.csv``: one row per (defense, epsilon, attack) plus the worst case."""
    return read_table(Path(run_dir) / RESULTS, RESULT_REQUIRED)


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
    """``adversarial.npz``: a few verified adversarial examples per (defense, epsilon).

    ``x`` and ``x_adv`` are sequences (N x C x L) or images (N x C x H x W); any other rank is refused.
    """
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
    if arrays["x"].ndim not in (SEQUENCE_NDIM, IMAGE_NDIM):
        raise RobenchError(f"{path}: x must be N x C x L (sequences) or N x C x H x W (images), got shape "
                           f"{arrays['x'].shape}; delete it or rerun the evaluation")
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
        files.examples = read_table(path / EXAMPLES, EXAMPLE_REQUIRED)
    if (path / DIAGNOSTICS).exists():
        files.diagnostics = read_table(path / DIAGNOSTICS, DIAGNOSTIC_REQUIRED)
    if (path / ADVERSARIAL).exists():
        files.adversarial = read_adversarial(path / ADVERSARIAL)
    return files
