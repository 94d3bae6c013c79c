"""The run directory is robench's alone (robench/store.py): nothing of the user's is deleted, two
runs never mix, a damaged or edited unit is not trusted, and a resume compares content, not names."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from robench_testing import TINY_SUITE, write_suite
from robench.cli import main
from robench.store import LOCK, RunStore, foreign_files


def _evaluate(*args: str):
    return CliRunner().invoke(main, ["evaluate", "--defense", "none", "--n-examples", "6", "--no-diagnostics", "--quiet", *args])


@pytest.fixture
def suite(tmp_path):
    return write_suite(tmp_path, TINY_SUITE)


def test_out_refuses_a_folder_holding_user_files_and_force_never_deletes_them(tmp_path, suite):
    out = tmp_path / "run"
    (out / "units").mkdir(parents=True)
    notes = out / "units" / "notes.txt"
    notes.write_text("mine")
    refused = _evaluate("--suite", suite, "--out", str(out))
    assert refused.exit_code == 2 and "robench did not write (units/notes.txt)" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    forced = _evaluate("--suite", suite, "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    again = _evaluate("--suite", suite, "--out", str(out), "--force")
    assert again.exit_code == 0 and notes.read_text() == "mine", "a user's file survives every run"
    assert (out / "results.csv").exists()


def test_a_rerun_in_the_same_folder_is_allowed_and_starts_clean(tmp_path, suite):
    out = tmp_path / "run"
    assert _evaluate("--suite", suite, "--out", str(out)).exit_code == 0
    assert foreign_files(out) == [], "everything robench writes is recognised as its own"
    store = RunStore(out)
    store.lock()
    store.clear()  # what a new run does first: the old tables go with the old units
    store.unlock()
    assert not (out / "results.csv").exists() and not (out / "report.html").exists()
    assert not list((out / "units").iterdir())


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, suite):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(str(holder.pid))
        refused = _evaluate("--suite", suite, "--out", str(out))
        assert refused.exit_code == 2 and f"pid {holder.pid}" in refused.output
    finally:
        holder.kill()
        holder.wait()
    (out / LOCK).write_text(str(holder.pid))  # a lock left by a process that is gone: taken over
    assert _evaluate("--suite", suite, "--out", str(out)).exit_code == 0
    assert not (out / LOCK).exists(), "the lock is released when the run ends"


def test_an_edited_or_truncated_unit_runs_again_on_resume(tmp_path, suite):
    out = tmp_path / "run"
    assert _evaluate("--suite", suite, "--out", str(out)).exit_code == 0
    want = pd.read_csv(out / "results.csv")
    units = sorted((out / "units").glob("*.csv"))
    edited = pd.read_csv(units[0])
    edited.loc[0, "broken"] = not bool(edited.loc[0, "broken"])
    edited.iloc[1:].to_csv(units[0], index=False)  # a value changed and a row removed
    units[1].write_bytes(units[1].read_bytes()[:40])  # truncated
    resumed = _evaluate("--suite", suite, "--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv").drop(columns=["seconds"]), want.drop(columns=["seconds"]))


def test_resume_refuses_a_changed_card_or_data_file(tmp_path, suite):
    out = tmp_path / "run"
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((30, 1, 8, 8)).astype(np.float32), y=np.arange(30) % 10)
    assert _evaluate("--suite", suite, "--dataset", str(data), "--out", str(out)).exit_code == 0
    Path(suite).write_text(TINY_SUITE.replace("steps = 10", "steps = 1"))
    changed = _evaluate("--suite", suite, "--dataset", str(data), "--resume", str(out))
    assert changed.exit_code == 2 and "suite 'tiny'" in changed.output and "changed" in changed.output
    Path(suite).write_text(TINY_SUITE)
    np.savez(data, x=rng.random((30, 1, 8, 8)).astype(np.float32), y=np.arange(30) % 10)
    changed = _evaluate("--suite", suite, "--dataset", str(data), "--resume", str(out))
    assert changed.exit_code == 2 and "dataset" in changed.output


def test_out_inside_another_runs_units_is_refused(tmp_path, suite):
    out = tmp_path / "run"
    assert _evaluate("--suite", suite, "--out", str(out)).exit_code == 0
    inside = _evaluate("--suite", suite, "--out", str(out / "units" / "nested"))
    assert inside.exit_code == 2 and "inside another run" in inside.output
    assert not (out / "units" / "nested").exists(), "nothing is created inside the other run"
