"""Resumable runs (robench/store.py, runner.evaluate_config): kill a run, resume it, get the same numbers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robench_testing import TINY_SUITE, write_suite
from robench.cli import main

def _args(suite: Path, *extra: str) -> list[str]:
    return ["evaluate", "--defense", "none", "--defense", "bit-depth-3", "--suite", str(suite), "--n-examples", "40",
            "--shard-size", "10", "--epsilon", "0.1", "--no-diagnostics", "--quiet", *extra]


def _numbers(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Everything but wall-clock timings."""
    results = pd.read_csv(run / "results.csv").drop(columns=["seconds"])
    examples = pd.read_csv(run / "examples.csv")
    return results, examples


def _assert_same_numbers(first, second) -> None:
    """Every decision (clean, broken, rejected, queries, the counts and intervals) exactly equal. The
    margins are a float32 forward pass, and a convolution's kernel, hence its last bits, may change
    with the batch size (measured: 1e-6 relative between shards of 7 and 40): close, not equal."""
    for got, want in zip(first, second):
        floats = [c for c in ("margin", "distance") if c in got.columns]
        pd.testing.assert_frame_equal(got.drop(columns=floats), want.drop(columns=floats))
        pd.testing.assert_frame_equal(got[floats], want[floats], check_exact=False, rtol=1e-4, atol=1e-5)


@pytest.fixture
def suite(tmp_path):
    return Path(write_suite(tmp_path, TINY_SUITE))


def _default_sigint() -> None:
    """A shell's background job ignores SIGINT, and a Python started that way keeps ignoring it:
    give the child the default handling, so that Ctrl-C reaches it wherever the tests run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_default_sigint)


def _wait_for_units(run: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((run / "units").glob("*.csv"))) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"run ended before it could be interrupted: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("no units finished in time")


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_numbers(tmp_path, suite):
    whole = tmp_path / "whole"
    result = CliRunner().invoke(main, _args(suite, "--out", str(whole)))
    assert result.exit_code == 0, result.output

    run = tmp_path / "killed"
    process = _start(_args(suite, "--out", str(run)))
    _wait_for_units(run, 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list((run / "units").glob("*.csv")))
    assert 3 <= done < 8, "the kill must land part-way"
    assert not (run / "results.csv").exists()

    resumed = CliRunner().invoke(main, _args(suite, "--resume", str(run)))
    assert resumed.exit_code == 0, resumed.output
    for got, want in zip(_numbers(run), _numbers(whole)):
        pd.testing.assert_frame_equal(got, want)


@pytest.mark.slow
def test_ctrl_c_keeps_finished_units_and_says_how_to_resume(tmp_path, suite):
    run = tmp_path / "interrupted"
    # 160 units: the run cannot finish between the first stored unit and the signal, however fast
    # the machine (with 16 it sometimes did, and exited 0)
    process = _start(_args(suite, "--out", str(run), "--n-examples", "200", "--shard-size", "5"))
    _wait_for_units(run, 1, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"--resume {run}" in stderr and "Traceback" not in stderr
    assert list((run / "units").glob("*.csv"))


def test_resume_refuses_another_configuration_and_names_the_difference(tmp_path, suite):
    run = tmp_path / "run"
    first = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--suite", str(suite), "--n-examples", "5",
                                      "--no-diagnostics", "--quiet", "--out", str(run)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--suite", str(suite), "--n-examples", "6",
                                      "--no-diagnostics", "--quiet", "--resume", str(run)])
    assert again.exit_code == 2
    assert "configuration differs" in again.output and "n_examples: run has 5, now 6" in again.output


def test_resume_of_a_directory_without_a_run_is_refused(tmp_path, suite):
    result = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--suite", str(suite), "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "holds no robench run" in result.output


def test_results_do_not_depend_on_the_shard_size(tmp_path, suite):
    tables = []
    for shard in ("7", "40"):
        out = tmp_path / shard
        result = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--suite", str(suite), "--n-examples", "20",
                                           "--shard-size", shard, "--no-diagnostics", "--quiet", "--out", str(out)])
        assert result.exit_code == 0, result.output
        tables.append(_numbers(out))
    _assert_same_numbers(*tables)


def test_results_do_not_depend_on_the_forward_chunk_size(tmp_path, suite):
    """--max-batch 3 against the default chunk: every decision and query count exactly the same."""
    tables = []
    for chunk in ([], ["--max-batch", "3"]):
        out = tmp_path / f"chunk{len(chunk)}"
        result = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--defense", "bit-depth-3", "--suite", str(suite),
                                           "--n-examples", "12", "--no-diagnostics", "--quiet", "--out", str(out), *chunk])
        assert result.exit_code == 0, result.output
        tables.append(_numbers(out))
    _assert_same_numbers(*tables)


def test_the_default_chunk_depends_on_the_input_size_alone():
    import torch

    from robench.batching import chunk_rows

    assert chunk_rows(torch.zeros(5, 1, 8, 8)) == chunk_rows(torch.zeros(1, 8, 8)) == 4096
    assert chunk_rows(torch.zeros(1, 1, 28, 28)) == 1024 and chunk_rows(torch.zeros(2, 3, 32, 32)) == 256
    assert chunk_rows(torch.zeros(1, 3, 224, 224)) == 64
