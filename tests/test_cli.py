"""The command line (robench/cli.py), end to end on digits with a small n."""
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from robench_testing import TINY_SUITE, write_suite
from robench.cli import main

@pytest.fixture
def tiny_suite(tmp_path):
    return write_suite(tmp_path, TINY_SUITE)


def test_evaluate_end_to_end_writes_the_output_contract(tmp_path, tiny_suite):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "evaluate", "--defense", "none", "--defense", "bit-depth-3", "--suite", tiny_suite,
        "--epsilon", "0.1", "--epsilon", "0.2", "--n-examples", "30", "--out", str(out), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert "worst-case" in result.output and "bit-depth-3" in result.output
    results = pd.read_csv(out / "results.csv")
    required = {"defense", "model", "dataset", "norm", "epsilon", "attack", "n_examples", "clean_accuracy",
                "robust_accuracy", "robust_accuracy_low", "robust_accuracy_high", "adversarial_risk", "queries_mean", "seconds"}
    assert required <= set(results.columns)
    assert len(results) == 2 * 2 * 3  # defenses x epsilons x (2 attacks + worst case)
    examples = pd.read_csv(out / "examples.csv")
    assert {"example", "clean_correct", "broken", "queries", "distance", "margin", "defense", "epsilon", "attack"} <= set(examples.columns)
    assert len(examples) == 2 * 2 * 2 * 30
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and run["versions"]["torch"] and run["device"] == "cpu"
    undefended = results[(results.defense == "none") & (results.attack == "worst-case")].set_index("epsilon")
    assert undefended.loc[0.1, "clean_accuracy"] >= 0.95
    # a larger ball can only break more (same examples, the worst case is monotone in practice here)
    assert undefended.loc[0.2, "robust_accuracy"] <= undefended.loc[0.1, "robust_accuracy"]
    # the broken examples' distances respect the threat model
    broken = examples[examples.broken & examples.clean_correct]
    assert (broken.distance <= broken.epsilon + 1e-6).all()


def test_same_seed_same_numbers(tmp_path, tiny_suite):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--suite", tiny_suite,
                                           "--n-examples", "10", "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        outputs.append(pd.read_csv(out / "examples.csv"))
    pd.testing.assert_frame_equal(outputs[0], outputs[1])


def test_list_shows_every_kind():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    for word in ("digits", "cnn", "bit_depth", "bit-depth-3", "spsa", "pgd", "quick"):
        assert word in result.output


def test_malformed_card_is_a_one_line_error(tmp_path):
    card = tmp_path / "broken.toml"
    card.write_text('name = "x"\nfactory = "bit_depth"\n[params]\nbitz = 3\n')
    result = CliRunner().invoke(main, ["evaluate", "--defense", str(card), "--n-examples", "5"])
    assert result.exit_code == 2
    assert "unknown parameter(s) bitz" in result.output and "valid: bits" in result.output


def test_a_run_that_fails_to_start_leaves_no_folder_it_made(tmp_path):
    out = tmp_path / "new" / "run"
    result = CliRunner().invoke(main, ["evaluate", "--model", "no-such-model", "--out", str(out)])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output
    assert not out.exists() and not out.parent.exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    result = CliRunner().invoke(main, ["evaluate", "--model", "no-such-model", "--out", str(kept)])
    assert result.exit_code == 2 and kept.is_dir(), "a folder the user made is never removed"


def test_a_model_and_a_defense_from_files_of_ones_own(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    (folder / "cards").mkdir(parents=True)
    (folder / "mymodels.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def net(data):\n    torch.manual_seed(0)\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()\n")
    (folder / "cards" / "mydefenses.py").write_text(
        "from torch import nn\nclass Clip(nn.Module):\n    def forward(self, x):\n        return x.clamp(0.1, 0.9)\n"
        "def clip(model, *, low=0.1):\n    return nn.Sequential(Clip(), model)\n")
    (folder / "cards" / "clip.toml").write_text('name = "clip"\nfactory = "mydefenses.py:clip"\n[params]\nlow = 0.1\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the card's code is found beside the card, the model by its path
    result = CliRunner().invoke(main, ["evaluate", "--model", str(folder / "mymodels.py") + ":net", "--defense",
                                       str(folder / "cards" / "clip.toml"), "--suite", "quick", "--n-examples", "4",
                                       "--no-diagnostics", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(results["defense"]) == {"clip"} and "worst-case" in set(results["attack"])


def test_cards_travel_in_the_configuration_not_the_environment(tmp_path, monkeypatch):
    """``--cards DIR`` is part of the configuration (plan.json), so a Ray worker that gets the
    configuration finds the same cards; the process environment is left as it was."""
    monkeypatch.delenv("ROBENCH_CARDS", raising=False)
    folder = tmp_path / "mine"
    (folder / "defenses").mkdir(parents=True)
    (folder / "defenses" / "clip-mine.toml").write_text('name = "clip-mine"\nfactory = "none"\n')
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["evaluate", "--cards", str(folder), "--defense", "clip-mine", "--suite", "quick",
                                       "--n-examples", "4", "--no-diagnostics", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    import os

    assert "ROBENCH_CARDS" not in os.environ
    plan = json.loads((out / "plan.json").read_text())
    assert plan["config"]["card_dirs"] == [str(folder.resolve())]


CERTIFIER_FILE = '''
import torch
from robench.certify import Certification, Certifier


class Nothing(Certifier):
    """Certifies nothing: every example unknown."""

    name = "nothing"

    def certify(self, target, x, y, threat, *, seeds=None):
        n = len(x)
        return Certification(torch.zeros(n, dtype=torch.int8), x.clone(), torch.zeros(n))
'''


def test_a_certifier_from_a_file_beside_the_suite_card(tmp_path, monkeypatch):
    """``method = "file.py:Class"`` in a ``[[certify]]`` table is the file beside the card; a file
    of that name in the current directory is never loaded."""
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "mycert.py").write_text(CERTIFIER_FILE)
    card = folder / "mine.toml"
    card.write_text('name = "mine"\n[[attack]]\nattack = "pgd"\n[attack.params]\nsteps = 2\n'
                    '[[certify]]\nmethod = "mycert.py:Nothing"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mycert.py").write_text("raise SystemExit('the current directory was searched')\n")
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--suite", str(card), "--n-examples", "4",
                                       "--no-diagnostics", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    examples = pd.read_csv(out / "examples.csv", keep_default_na=False)
    mine = examples[examples["attack"] == "Nothing"]
    assert len(mine) == 4 and set(mine.loc[mine["clean_correct"], "certify_status"]) == {"unknown"}
