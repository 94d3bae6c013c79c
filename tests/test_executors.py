"""Executors (robench/executors.py): the executor changes how fast a run goes, never its numbers."""
from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from robench_testing import TINY_SUITE, write_suite
from robench.cli import main
from robench.errors import RobenchError
from robench.executors import LocalExecutor, make_executor

def test_make_executor_names_the_valid_choices():
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(RobenchError, match="valid choices: local, ray"):
        make_executor("dask")


@pytest.mark.slow
def test_ray_and_local_give_identical_csvs(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'robench[ray]')")
    suite = write_suite(tmp_path, TINY_SUITE)
    outputs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        result = CliRunner().invoke(main, [
            "evaluate", "--defense", "none", "--defense", "bit-depth-3", "--suite", str(suite), "--n-examples", "24",
            "--shard-size", "8", "--epsilon", "0.1", "--no-diagnostics", "--quiet", "--executor", executor,
            "--out", str(out),
        ])
        assert result.exit_code == 0, result.output
        outputs[executor] = out
    for name in ("examples.csv", "diagnostics.csv"):
        assert (outputs["local"] / name).read_text() == (outputs["ray"] / name).read_text(), name
    drop = ["seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(outputs["local"] / "results.csv").drop(columns=drop),
                                  pd.read_csv(outputs["ray"] / "results.csv").drop(columns=drop))


@pytest.mark.slow
def test_ray_workers_find_cards_and_relative_files_as_the_caller_does(tmp_path, monkeypatch):
    """A named card of a ``--cards`` folder (carried in the configuration, not the environment)
    and a suite given by a path relative to the caller's folder: the workers resolve both as the
    caller does, so every unit finishes."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'robench[ray]')")
    monkeypatch.delenv("ROBENCH_CARDS", raising=False)
    cards = tmp_path / "cards"
    (cards / "defenses").mkdir(parents=True)
    (cards / "defenses" / "plain.toml").write_text('name = "plain"\nfactory = "none"\n')
    work = tmp_path / "work"
    work.mkdir()
    write_suite(work, TINY_SUITE)
    monkeypatch.chdir(work)
    suite = "./suite.toml"
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "evaluate", "--cards", str(cards), "--defense", "plain", "--suite", suite, "--n-examples", "8",
        "--shard-size", "4", "--no-diagnostics", "--quiet", "--executor", "ray", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out / "results.csv")["defense"]) == {"plain"}
