"""The CI gate (robench/reports/gate.py): its statistics, its bookkeeping, and its command."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from robench.errors import RobenchError
from robench.reports.commands import check
from robench.reports.gate import (
    ALPHA, baseline_from_run, check_run, compare, diff_table, junit_xml, read_baseline, regression_p_value, write_baseline,
)
from robench.reports.rundir import load_run


def gate(run_dir_factory, tmp_path, baseline_counts, run_counts, **options):
    """Baseline from one synthetic run, compared with another."""
    base_dir = run_dir_factory(baseline_counts, diagnostics=False, adversarial=False)
    baseline = tmp_path / "baseline.csv"
    write_baseline(baseline, baseline_from_run(load_run(base_dir)))
    run_dir = run_dir_factory(run_counts, diagnostics=False, adversarial=False, **options)
    return check_run(run_dir, baseline)


@pytest.mark.parametrize("k, n", [(0, 20), (7, 20), (20, 20), (16, 30), (500, 1000)])
def test_a_drop_of_zero_passes(run_dir_factory, tmp_path, k, n):
    result = gate(run_dir_factory, tmp_path, {("d", 0.1): (k, n)}, {("d", 0.1): (k, n)})
    assert result.passed and [c.status for c in result.comparisons] == ["pass"]
    assert result.comparisons[0].p_value > 0.5  # equal proportions are nowhere near significance


def test_a_clear_drop_fails(run_dir_factory, tmp_path):
    result = gate(run_dir_factory, tmp_path, {("d", 0.1): (80, 100), ("d", 0.2): (50, 100)},
                  {("d", 0.1): (40, 100), ("d", 0.2): (50, 100)})
    status = {c.epsilon: c.status for c in result.comparisons}
    assert status == {0.1: "regression", 0.2: "pass"} and not result.passed
    assert "REGRESSION" in diff_table(result) and "FAIL" in diff_table(result)


@pytest.mark.parametrize("base, now", [((16, 30), (12, 30)), ((29, 30), (26, 30)), ((5, 10), (2, 10)), ((60, 100), (50, 100))])
def test_small_n_noise_passes(run_dir_factory, tmp_path, base, now):
    assert gate(run_dir_factory, tmp_path, {("d", 0.1): base}, {("d", 0.1): now}).passed


def test_the_false_alarm_rate_under_noise_stays_below_alpha():
    """Two runs with the same true robust rate: the exact test rejects at most alpha of the time."""
    generator = np.random.default_rng(0)
    for p, n in [(0.5, 30), (0.9, 50), (0.2, 100)]:
        draws = generator.binomial(n, p, size=(1500, 2))
        rejected = np.mean([regression_p_value(int(a), n, int(b), n) < ALPHA for a, b in draws])
        assert rejected <= ALPHA, (p, n, rejected)


def test_the_p_value_falls_as_the_run_gets_weaker():
    p_values = [regression_p_value(k, 50, 30, 50) for k in range(30, -1, -1)]
    assert all(a > b for a, b in zip(p_values, p_values[1:]))
    assert regression_p_value(30, 50, 30, 50) > 0.5 and regression_p_value(10, 50, 30, 50) < 1e-4


def test_the_cards_tolerance_absorbs_a_significant_but_small_drop(run_dir_factory, tmp_path):
    counts = ({("d", 0.1): (700, 1000)}, {("d", 0.1): (640, 1000)})
    assert not gate(run_dir_factory, tmp_path, *counts).passed
    assert gate(run_dir_factory, tmp_path, *counts, tolerances={"d": 0.1}).passed
    assert not gate(run_dir_factory, tmp_path, *counts, tolerances={"d": 0.05}).passed


def test_a_significant_rise_passes_as_improved(run_dir_factory, tmp_path):
    result = gate(run_dir_factory, tmp_path, {("d", 0.1): (20, 100)}, {("d", 0.1): (60, 100)})
    assert result.passed and result.comparisons[0].status == "improved"


def test_missing_and_new_rows_are_reported_and_missing_ones_fail(run_dir_factory, tmp_path):
    result = gate(run_dir_factory, tmp_path, {("a", 0.1): (10, 20), ("b", 0.1): (10, 20), ("a", 0.2): (5, 20)},
                  {("a", 0.1): (10, 20), ("c", 0.1): (10, 20)})
    status = {(c.defense, c.epsilon): c.status for c in result.comparisons}
    assert status == {("a", 0.1): "pass", ("a", 0.2): "missing", ("b", 0.1): "missing", ("c", 0.1): "new"}
    assert not result.passed
    table = diff_table(result)
    assert "MISSING" in table and "new" in table and "c eps=0.1" in table


def test_new_rows_alone_do_not_fail(run_dir_factory, tmp_path):
    result = gate(run_dir_factory, tmp_path, {("a", 0.1): (10, 20)}, {("a", 0.1): (10, 20), ("a", 0.3): (1, 20)})
    assert result.passed and sorted(c.status for c in result.comparisons) == ["new", "pass"]


def test_a_failed_unit_fails_its_row(run_dir_factory, tmp_path):
    failed = [{"defense": "a", "epsilon": 0.1, "attack": "spsa", "error": "RuntimeError: out of memory"}]
    result = gate(run_dir_factory, tmp_path, {("a", 0.1): (10, 20), ("a", 0.2): (5, 20)},
                  {("a", 0.1): (10, 20), ("a", 0.2): (5, 20)}, failed_units=failed)
    status = {c.epsilon: c.status for c in result.comparisons}
    assert status == {0.1: "failed", 0.2: "pass"} and not result.passed
    assert "out of memory" in diff_table(result)


def test_junit_is_well_formed_with_one_testcase_per_row(run_dir_factory, tmp_path):
    result = gate(run_dir_factory, tmp_path, {("a", 0.1): (80, 100), ("<b&>", 0.1): (10, 20)},
                  {("a", 0.1): (30, 100), ("new", 0.1): (1, 20)})
    root = ET.fromstring(junit_xml(result))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(result.comparisons) == 3
    assert int(suite.get("tests")) == 3 and int(suite.get("failures")) == 2 and int(suite.get("skipped")) == 1
    failing = {c.get("classname") for c in cases if c.find("failure") is not None}
    assert failing == {"robench.check.a", "robench.check.<b&>"}


def test_update_baseline_rewrites_it_atomically_and_the_run_then_passes(run_dir_factory, tmp_path):
    baseline = tmp_path / "baseline.csv"
    first = run_dir_factory({("a", 0.1): (80, 100)})
    assert check_run(first, baseline, update_baseline=True).comparisons[0].status == "new"
    weaker = run_dir_factory({("a", 0.1): (30, 100), ("a", 0.2): (10, 100)})
    assert not check_run(weaker, baseline).passed
    check_run(weaker, baseline, update_baseline=True)
    assert check_run(weaker, baseline).passed
    frame = read_baseline(baseline)
    assert frame[["defense", "epsilon", "n_examples", "robust"]].values.tolist() == [["a", 0.1, 100, 30], ["a", 0.2, 100, 10]]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["baseline.csv"]  # no temporary files left


def test_update_baseline_refuses_a_run_with_failed_units(run_dir_factory, tmp_path):
    run = run_dir_factory({("a", 0.1): (8, 10)}, failed_units=[{"defense": "a", "epsilon": 0.1, "attack": "pgd", "error": "x"}])
    with pytest.raises(RobenchError, match="failed unit"):
        check_run(run, tmp_path / "baseline.csv", update_baseline=True)
    assert not (tmp_path / "baseline.csv").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(robust_accuracy=0.5), "robust_accuracy"),
    (lambda f: f.drop(columns=["robust"]), "lacks column"),
    (lambda f: f.assign(robust=f["n_examples"] + 1), "0 <= robust"),
    (lambda f: pd.concat([f, f]), "twice"),
])
def test_a_bad_baseline_is_one_clear_error(run_dir_factory, tmp_path, edit, message):
    run = run_dir_factory({("a", 0.1): (8, 10)}, diagnostics=False, adversarial=False)
    path = tmp_path / "baseline.csv"
    edit(baseline_from_run(load_run(run))).to_csv(path, index=False)
    with pytest.raises(RobenchError, match=message):
        read_baseline(path)


def test_check_command_exit_codes(run_dir_factory, tmp_path):
    runner = CliRunner()
    baseline, junit = tmp_path / "baseline.csv", tmp_path / "out" / "junit.xml"
    strong = run_dir_factory({("a", 0.1): (80, 100)}, diagnostics=False, adversarial=False)
    weak = run_dir_factory({("a", 0.1): (40, 100)}, diagnostics=False, adversarial=False)

    missing = runner.invoke(check, [str(strong), "--baseline", str(baseline)])
    assert missing.exit_code == 2 and "--update-baseline" in missing.output and "Traceback" not in missing.output
    assert runner.invoke(check, [str(strong), "--baseline", str(baseline), "--update-baseline"]).exit_code == 0
    passed = runner.invoke(check, [str(strong), "--baseline", str(baseline), "--junit", str(junit)])
    assert passed.exit_code == 0 and "PASS" in passed.output and ET.parse(junit).getroot().tag == "testsuites"
    failed = runner.invoke(check, [str(weak), "--baseline", str(baseline), "--junit", str(junit)])
    assert failed.exit_code == 1 and "REGRESSION" in failed.output
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "1"
    bad = runner.invoke(check, [str(tmp_path / "nowhere"), "--baseline", str(baseline)])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and len(bad.output.strip().splitlines()) == 1
    (weak / "run.json").write_text("{not json")
    assert runner.invoke(check, [str(weak), "--baseline", str(baseline)]).exit_code == 2


def test_the_gate_reads_tolerance_from_the_run_cards(run_dir_factory):
    run = load_run(run_dir_factory({("a", 0.1): (70, 100)}, tolerances={"a": 0.25}, diagnostics=False, adversarial=False))
    baseline = baseline_from_run(load_run(run.path)).assign(robust=90, robust_accuracy=0.9)
    comparison = compare(run, baseline).comparisons[0]
    assert comparison.tolerance == 0.25 and comparison.status == "pass"
    assert json.loads((run.path / "run.json").read_text())["defenses"][0]["tolerance"] == 0.25


def test_the_first_line_says_how_many_rows_matched_and_when_none_did_why():
    from robench.reports.gate import Comparison, GateResult, diff_table

    missing = Comparison("none", "cnn", "digits", "linf", 0.1, "missing", baseline_robust=5, baseline_n=10)
    new = Comparison("none", "mnist-cnn", "mnist", "linf", 0.3, "new", run_robust=1, run_n=10)
    first = diff_table(GateResult([missing, new])).splitlines()[0]
    assert first.startswith("0 of 2 row(s) matched") and "another model, data set or threat model" in first
    assert "cnn/digits/linf/eps 0.1" in first and "mnist-cnn/mnist/linf/eps 0.3" in first
    passed = Comparison("none", "cnn", "digits", "linf", 0.1, "pass", 5, 10, 5, 10)
    assert diff_table(GateResult([passed, new])).splitlines()[0].startswith("1 of 2 row(s) matched")
