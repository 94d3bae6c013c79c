"""The resumable run store: one file per finished unit, so a crash loses at most the units in flight.

Layout of a run directory::

    DIR/plan.json              the configuration the units belong to (resume refuses another)
    DIR/units/<id>.csv         a finished unit's rows (examples or diagnostics)
    DIR/units/<id>.npz         a finished attack unit's sample of adversarial examples
    DIR/units/<id>.failed.json a unit that raised (rerun on resume)

Every file is written atomically (temporary file, fsync, rename), and the CSV that marks a unit
done is written last, so a unit is either complete or absent.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.errors import RobenchError
from robench.io import atomic_write_bytes, atomic_write_csv, atomic_write_json
from robench.schema import PLAN, UNITS, parse_rows


def unit_file_id(key: str) -> str:
    """A filesystem-safe, stable name for a unit key."""
    return hashlib.blake2b(key.encode(), digest_size=10).hexdigest()


class RunStore:
    """Finished units of one run, on disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.units = self.root / UNITS

    # -- plan -------------------------------------------------------------------------------
    def write_plan(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.root / PLAN, {"config": config})

    def read_plan(self) -> dict[str, Any] | None:
        path = self.root / PLAN
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RobenchError(f"{path} is unreadable ({exc}); start a new run with --out instead of --resume") from None

    def check_resumable(self, config: dict[str, Any]) -> None:
        """Refuse to resume a run made with another configuration, naming what differs."""
        stored = self.read_plan()
        if stored is None:
            raise RobenchError(f"{self.root} holds no robench run (no {PLAN}); use --out to start one")
        stored = json.loads(json.dumps(stored))
        current = json.loads(json.dumps(config))
        diffs = [
            f"{key}: run has {stored.get(key)!r}, now {current.get(key)!r}"
            for key in sorted(set(stored) | set(current))
            if stored.get(key) != current.get(key)
        ]
        if diffs:
            raise RobenchError(
                f"cannot resume {self.root}: the configuration differs ({'; '.join(diffs)}); "
                "rerun with the run's options or start a new run with --out"
            )

    def clear(self) -> None:
        """Forget a previous run's units (``--out`` starts anew; ``--resume`` continues)."""
        if self.units.is_dir():
            for path in self.units.iterdir():
                path.unlink(missing_ok=True)
        (self.root / PLAN).unlink(missing_ok=True)

    # -- units ------------------------------------------------------------------------------
    def _path(self, key: str, suffix: str) -> Path:
        return self.units / f"{unit_file_id(key)}{suffix}"

    def is_done(self, key: str) -> bool:
        return self._path(key, ".csv").exists()

    def save(self, key: str, rows: pd.DataFrame, adversarial: dict[str, np.ndarray] | None) -> None:
        if adversarial:
            buffer = io.BytesIO()
            np.savez(buffer, **adversarial)
            atomic_write_bytes(self._path(key, ".npz"), buffer.getvalue())
        self._path(key, ".failed.json").unlink(missing_ok=True)
        atomic_write_csv(self._path(key, ".csv"), rows)  # last: marks the unit done

    def save_failure(self, key: str, record: dict[str, Any]) -> None:
        atomic_write_json(self._path(key, ".failed.json"), record)

    def load(self, key: str) -> tuple[pd.DataFrame, dict[str, np.ndarray] | None]:
        path = self._path(key, ".csv")
        try:
            rows = parse_rows(path.read_text())
        except (OSError, ValueError) as exc:
            raise RobenchError(f"stored unit {path} is unreadable ({exc}); delete it and resume again") from None
        npz = self._path(key, ".npz")
        adversarial = None
        if npz.exists():
            with np.load(npz, allow_pickle=False) as stored:
                adversarial = {name: stored[name] for name in stored.files}
        return rows, adversarial
