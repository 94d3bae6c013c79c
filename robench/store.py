"""The resumable run store: one file per finished unit, so a crash loses at most the units in flight.

Layout of a run directory, robench's alone::

    DIR/plan.json              the configuration and the content fingerprints the units belong to
    DIR/.robench.lock          held by the one process writing DIR (its pid)
    DIR/units/<id>.csv         a finished unit's rows (examples or diagnostics)
    DIR/units/<id>.npz         a finished attack unit's sample of adversarial examples
    DIR/units/<id>.sha256      the checksums of the two above: written last, it marks the unit done
    DIR/units/<id>.failed.json a unit that raised (rerun on resume)

Every file is written atomically (temporary file, fsync, rename), so a unit is complete or absent.
A unit whose files do not match their checksums (edited, truncated) is not trusted: it runs again.
``--out`` refuses a folder that holds files robench did not write (``force`` writes beside them, and
still never deletes them); a new run removes the previous run's tables before its first unit, so a
folder never mixes two runs.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robench.errors import RobenchError
from robench.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from robench.schema import ADVERSARIAL, DIAGNOSTICS, EXAMPLES, PLAN, REPORT, RESULTS, RUN, UNITS, parse_rows

log = logging.getLogger(__name__)

LOCK = ".robench.lock"
#: the tables of a finished run (robench.output writes them): removed when a new run starts
TABLES = (RESULTS, EXAMPLES, RUN, DIAGNOSTICS, ADVERSARIAL, REPORT)
#: what robench writes at the top of a run directory (``junit.xml``: ``robench check --junit``)
OWN_FILES = {PLAN, LOCK, *TABLES, "junit.xml"}
#: the files robench writes in units/ (and the temporary files of its atomic writes)
UNIT_FILE = re.compile(r"^(\.[^/]+\.tmp|[0-9a-f]{20}(\.csv|\.npz|\.sha256|\.failed\.json))$")
TEMPORARY = re.compile(r"^\..+\.tmp$")


def unit_file_id(key: str) -> str:
    """A filesystem-safe, stable name for a unit key."""
    return hashlib.blake2b(key.encode(), digest_size=10).hexdigest()


def foreign_files(root: Path) -> list[str]:
    """Files and folders in ``root`` that robench did not write (a user's notes, another tool's output)."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.name == UNITS and path.is_dir():
            found += [f"{UNITS}/{p.name}" for p in sorted(path.iterdir()) if not UNIT_FILE.match(p.name)]
        elif path.name not in OWN_FILES and not TEMPORARY.match(path.name):
            found.append(path.name)
    return found


class RunStore:
    """Finished units of one run, on disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.units = self.root / UNITS
        self._locked = False

    # -- ownership and the lock ---------------------------------------------------------------
    def check_owned(self, *, force: bool = False) -> None:
        """Refuse a folder that holds what robench did not write, unless ``force``; refuse a folder
        inside another run's units/."""
        if self.root.resolve().parent.name == UNITS and (self.root.resolve().parent.parent / PLAN).exists():
            raise RobenchError(f"{self.root} lies inside another run's {UNITS}/ folder; choose an --out outside it")
        foreign = foreign_files(self.root)
        if foreign and not force:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise RobenchError(f"--out {self.root} holds files robench did not write ({shown}); choose an empty or new "
                               "folder, or pass --force to write beside them (robench never deletes them)")

    def lock(self) -> None:
        """Take the run directory for this process; refuse while another live process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_pid(path)
                if holder is not None and holder != os.getpid() and _alive(holder):
                    raise RobenchError(f"another robench process (pid {holder}) is writing {self.root}; wait for it, "
                                       "or choose another --out") from None
                path.unlink(missing_ok=True)  # a lock left by a process that is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            self._locked = True
            return
        raise RobenchError(f"cannot take the lock {path}; remove it if no robench process is running")

    def unlock(self) -> None:
        if self._locked:
            (self.root / LOCK).unlink(missing_ok=True)
            self._locked = False

    # -- plan -------------------------------------------------------------------------------
    def write_plan(self, config: dict[str, Any], fingerprints: dict[str, Any] | None = None) -> None:
        atomic_write_json(self.root / PLAN, {"config": config, "fingerprints": fingerprints or {}})

    def _read_plan_file(self) -> dict[str, Any] | None:
        path = self.root / PLAN
        if not path.exists():
            return None
        try:
            payload = json.loads(path.read_text())
            if not isinstance(payload, dict) or not isinstance(payload["config"], dict):
                raise ValueError("not a robench plan")
            return payload
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RobenchError(f"{path} is unreadable ({exc}); start a new run with --out instead of --resume") from None

    def read_plan(self) -> dict[str, Any] | None:
        payload = self._read_plan_file()
        return None if payload is None else payload["config"]

    def check_resumable(self, config: dict[str, Any], fingerprints: dict[str, Any] | None = None) -> None:
        """Refuse to resume a run made with another configuration or other content (a card file,
        the data, the model's weights), naming what differs."""
        payload = self._read_plan_file()
        if payload is None:
            raise RobenchError(f"{self.root} holds no robench run (no {PLAN}); use --out to start one")
        stored = json.loads(json.dumps(payload["config"]))
        current = json.loads(json.dumps(config))
        diffs = [
            f"{key}: run has {stored.get(key)!r}, now {current.get(key)!r}"
            for key in sorted(set(stored) | set(current))
            if stored.get(key) != current.get(key)
        ]
        if fingerprints is not None:
            old = payload.get("fingerprints") or {}
            new = json.loads(json.dumps(fingerprints))
            diffs += [f"the content of {key} changed since the run started" for key in sorted(set(old) | set(new))
                      if old.get(key) != new.get(key)]
        if diffs:
            raise RobenchError(
                f"cannot resume {self.root}: the configuration differs ({'; '.join(diffs)}); "
                "rerun with the run's options and files, or start a new run with --out"
            )

    def clear(self) -> None:
        """Forget a previous run (``--out`` starts anew; ``--resume`` continues): its units, its plan
        and its tables, robench's own files only."""
        if self.units.is_dir():
            for path in self.units.iterdir():
                if UNIT_FILE.match(path.name):
                    path.unlink(missing_ok=True)
        for name in (PLAN, *TABLES):
            (self.root / name).unlink(missing_ok=True)

    def clear_tables(self) -> None:
        """A resumed run rewrites its tables at the end; until then, none that could be stale."""
        for name in TABLES:
            (self.root / name).unlink(missing_ok=True)

    # -- units ------------------------------------------------------------------------------
    def _path(self, key: str, suffix: str) -> Path:
        return self.units / f"{unit_file_id(key)}{suffix}"

    def is_done(self, key: str) -> bool:
        """Finished and intact: its checksums exist and match its files (else it runs again)."""
        sums = self._path(key, ".sha256")
        if not sums.exists():
            return False
        try:
            expected = json.loads(sums.read_text())
            for suffix in (".csv", ".npz"):
                path = self._path(key, suffix)
                want = expected.get(suffix)
                have = _digest(path.read_bytes()) if path.exists() else None
                if want != have:
                    raise ValueError(f"{path.name} does not match its checksum")
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("stored unit %s is damaged (%s): it runs again", sums.stem, exc)
            return False
        return True

    def save(self, key: str, rows: pd.DataFrame, adversarial: dict[str, np.ndarray] | None) -> None:
        sums: dict[str, str | None] = {".csv": None, ".npz": None}
        self._path(key, ".sha256").unlink(missing_ok=True)
        if adversarial:
            buffer = io.BytesIO()
            np.savez(buffer, **adversarial)
            atomic_write_bytes(self._path(key, ".npz"), buffer.getvalue())
            sums[".npz"] = _digest(buffer.getvalue())
        else:
            self._path(key, ".npz").unlink(missing_ok=True)
        text = rows.to_csv(index=False)
        atomic_write_text(self._path(key, ".csv"), text)
        sums[".csv"] = _digest(text.encode("utf-8"))
        self._path(key, ".failed.json").unlink(missing_ok=True)
        atomic_write_json(self._path(key, ".sha256"), sums)  # last: marks the unit done

    def save_failure(self, key: str, record: dict[str, Any]) -> None:
        atomic_write_json(self._path(key, ".failed.json"), record)

    def load(self, key: str) -> tuple[pd.DataFrame, dict[str, np.ndarray] | None]:
        path = self._path(key, ".csv")
        try:
            rows = parse_rows(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise RobenchError(f"stored unit {path} is unreadable ({exc}); delete it and resume again") from None
        npz = self._path(key, ".npz")
        adversarial = None
        if npz.exists():
            try:
                with np.load(npz, allow_pickle=False) as stored:
                    adversarial = {name: stored[name] for name in stored.files}
            except (OSError, ValueError) as exc:
                raise RobenchError(f"stored unit {npz} is unreadable ({exc}); delete it and resume again") from None
        return rows, adversarial


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
