"""Progress counts the query budget (robench/budget.py, robench/progress.py): honest shares, lines off a terminal."""
import io
import time

import pytest
import torch
from torch import nn

import robench
from robench.attacks.apgd import APGDCE, APGDT
from robench.attacks.pgd import PGD
from robench.attacks.spsa import SPSA
from robench.attacks.square import Square
from robench.plan import Unit, UnitKind
from robench.progress import Progress, count, duration
from robench.threat import ThreatModel
from robench.units import UnitResult
from robench_testing import TINY_SUITE, write_suite


def test_attack_budgets_are_their_most_queries_per_example():
    threat = ThreatModel("linf", 0.1)
    assert PGD(steps=40, restarts=2).budget(threat) == 82
    assert SPSA(steps=10, samples=32).budget(threat) == 331
    assert Square(queries=500).budget(threat) == 500
    assert APGDCE(steps=100).budget(threat) == 101
    assert APGDT(steps=100, n_target_classes=9).budget(threat) == 1 + 101 * 9


@pytest.mark.parametrize("attack", [PGD(steps=7), SPSA(steps=3, samples=8), Square(queries=50), APGDCE(steps=9)],
                         ids=["pgd", "spsa", "square", "apgd"])
def test_no_attack_spends_more_than_its_budget(attack):
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(6, 1, 4, 4, generator=generator)
    y = torch.zeros(6, dtype=torch.long)
    threat = ThreatModel("linf", 0.3)
    result = attack.run(model, x, y, threat, seeds=torch.arange(6))
    assert int(result.queries.max()) <= attack.budget(threat)


def _result(unit: Unit) -> UnitResult:
    return UnitResult(unit)


def test_lines_off_a_terminal_give_the_budget_share_and_time_left():
    stream = io.StringIO()
    units = [Unit("none", 0.1, "pgd", 0, 10), Unit("none", 0.1, "spsa", 0, 10)]
    progress = Progress(stream=stream, tty=False, interval=0.05)
    progress.start(units, 0, {units[0].store_key: 100, units[1].store_key: 900})
    progress.update(_result(units[0]))
    assert progress.status().startswith("robench: 10% of the query budget (1/2 units)")
    time.sleep(0.3)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "2 unit(s) to run" in lines[0] and "1.0k model queries" in lines[0]
    assert len(lines) >= 3 and all("of the query budget" in line for line in lines[1:])
    assert "left" in lines[-1] and "last finished: none eps=0.1 pgd" in lines[-1]
    after = len(stream.getvalue())
    time.sleep(0.15)
    assert len(stream.getvalue()) == after, "close stops the lines"


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    progress = Progress(enabled=False, stream=stream, tty=False, interval=0.01)
    unit = Unit("none", 0.1, "pgd", 0, 10)
    progress.start([unit], 0, {unit.store_key: 5})
    progress.update(_result(unit))
    progress.close()
    assert stream.getvalue() == ""


def test_formatting():
    assert duration(42) == "42s" and duration(190) == "3m10s" and duration(3720) == "1h02m"
    assert count(512) == "512" and count(35_000) == "35.0k" and count(1_200_000) == "1.2M"


def test_the_api_prints_progress_when_asked(tmp_path, capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    robench.evaluate(model, x, y, suite=write_suite(tmp_path, TINY_SUITE), epsilons=(0.1,), diagnostics=False, progress=True)
    assert "unit(s) to run" in capsys.readouterr().err  # stderr is no terminal here: lines, not a bar
    robench.evaluate(model, x, y, suite=write_suite(tmp_path, TINY_SUITE), epsilons=(0.1,), diagnostics=False, progress=False)
    assert "unit(s) to run" not in capsys.readouterr().err


def test_units_whose_cost_the_budget_does_not_measure_are_named():
    stream = io.StringIO()
    attack, certify = Unit("none", 0.1, "pgd", 0, 10), Unit("none", 0.1, "milp", 0, 10, UnitKind.CERTIFY)
    progress = Progress(stream=stream, tty=False, interval=60)
    progress.start([attack, certify], 0, {attack.store_key: 400, certify.store_key: 0})
    progress.update(_result(attack))
    status = progress.status()
    assert "100% of the query budget" in status and "the query budget is spent" in status
    assert "1 certifier unit(s) to go" in status
    progress.update(_result(certify))
    assert "certifier" not in progress.status()
    progress.close()
