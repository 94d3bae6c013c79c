"""Certifiers inside an evaluation (robench/units.py, risk.py, assemble.py): the bracket in the tables,
counterexamples verified like attacks, and a loud failure when an attack breaks a certified example."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import robench
from robench.errors import RobenchError
from robench_testing import write_suite

SUITE = """
name = "bracket"
[[attack]]
attack = "pgd"
[attack.params]
steps = 30
rel_stepsize = 0.1
[[certify]]
method = "ibp"
[[certify]]
method = "milp"
[certify.params]
time_limit = 5.0
"""


def _mlp():
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    x = torch.rand(16, 1, 4, 4, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_the_bracket_holds_and_milp_answers_every_example(tmp_path):
    model, x, y = _mlp()
    evaluation = robench.evaluate(model, x, y, defenses=("none",), suite=write_suite(tmp_path, SUITE), epsilons=(0.05,),
                                  diagnostics=True)
    results = evaluation.results.set_index("attack")
    worst = results.loc["worst-case"]
    assert worst["certified_accuracy"] <= worst["robust_accuracy"]
    assert results.loc["ibp", "certified_accuracy"] <= results.loc["milp", "certified_accuracy"]
    assert worst["unknown_fraction"] == pytest.approx(worst["robust_accuracy"] - worst["certified_accuracy"])
    milp = evaluation.examples[evaluation.examples.attack == "milp"]
    assert set(milp["certify_status"]) <= {"certified", "counterexample"}, "milp is exact here: no unknown"
    assert worst["unknown_fraction"] == pytest.approx(0.0), "exact answers close the bracket"
    assert (milp["broken"] == (milp["certify_status"] == "counterexample")).all(), "every counterexample verified"
    assert pd_isnan(results.loc["pgd", "certified_accuracy"])
    by_example = evaluation.examples.groupby("example")["certified"].nunique()
    assert (by_example == 1).all(), "certified is the same on every row of an example"
    recorded = {c["label"]: c["sound"] for c in evaluation.run["suite"]["certifiers"]}
    assert recorded == {"ibp": True, "milp": True}, "run.json records each certifier's declaration"
    checks = set(evaluation.diagnostics["check"])
    assert "attack_misses_counterexample" in checks


def pd_isnan(value) -> bool:
    return value != value


def test_an_attack_that_breaks_a_certified_example_stops_the_run(tmp_path, monkeypatch):
    from robench.certify import CERTIFIED, Certification
    from robench.certify.ibp import IBP

    def certifies_everything(self, target, x, y, threat, *, seeds=None):
        return Certification(torch.full((len(x),), CERTIFIED, dtype=torch.int8), x.clone(), torch.zeros(len(x)), {})

    monkeypatch.setattr(IBP, "certify", certifies_everything)
    model, x, y = _mlp()
    suite = write_suite(tmp_path, SUITE.split("[[certify]]\nmethod = \"milp\"")[0])
    with pytest.raises(RobenchError, match="soundness violation: certifier 'ibp'"):
        robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(0.3,), diagnostics=False)


def test_the_soundness_check_reads_the_declaration_not_the_name(tmp_path, monkeypatch):
    """The same over-certifying ibp, declared not sound (as smoothing is), is exempt: the run goes on."""
    from robench.certify import CERTIFIED, Certification
    from robench.certify.ibp import IBP

    def certifies_everything(self, target, x, y, threat, *, seeds=None):
        return Certification(torch.full((len(x),), CERTIFIED, dtype=torch.int8), x.clone(), torch.zeros(len(x)), {})

    monkeypatch.setattr(IBP, "certify", certifies_everything)
    monkeypatch.setattr(IBP, "sound", False)
    model, x, y = _mlp()
    suite = write_suite(tmp_path, SUITE.split("[[certify]]\nmethod = \"milp\"")[0])
    evaluation = robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(0.3,), diagnostics=False)
    assert evaluation.examples["certified"].all()


def test_a_defense_a_certifier_cannot_bound_is_refused_before_the_run(tmp_path):
    model, x, y = _mlp()
    with pytest.raises(RobenchError, match="certifier 'ibp' cannot certify defense 'bit-depth-3'"):
        robench.evaluate(model, x, y, defenses=("none", "bit-depth-3"), suite=write_suite(tmp_path, SUITE), diagnostics=False)


def test_the_report_draws_the_bracket_band_with_the_unknown_mass(tmp_path):
    model, x, y = _mlp()
    suite = write_suite(tmp_path, SUITE.replace('method = "milp"\n[certify.params]\ntime_limit = 5.0\n', 'method = "crown"\n'))
    out = tmp_path / "run"
    evaluation = robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(0.05, 0.2), diagnostics=False, out=out)
    html = (out / "report.html").read_text()
    assert 'id="bracket-table"' in html and "The bracket: certified and attacked robust accuracy" in html
    worst = evaluation.results[evaluation.results.attack == "worst-case"]
    for _, row in worst.iterrows():
        certified, attacked = row["certified_accuracy"], row["robust_accuracy"]
        assert f'class="certified" style="width: {100 * certified:.2f}%"' in html
        assert f'class="unknown" style="width: {100 * (attacked - certified):.2f}%"' in html
        assert f"{100 * row['unknown_fraction']:.1f}%" in html
    assert (worst["unknown_fraction"] > 0).any(), "IBP/CROWN leave something unknown at 0.2 on a random MLP"


def test_a_report_without_certifiers_has_no_bracket(tmp_path):
    model, x, y = _mlp()
    suite = write_suite(tmp_path, SUITE.split("[[certify]]")[0])
    out = tmp_path / "run"
    robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(0.05,), diagnostics=False, out=out)
    assert 'id="bracket-table"' not in (out / "report.html").read_text()
