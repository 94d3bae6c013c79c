"""Bad input, tried on purpose: every case is one line on stderr, exit code 2, and nothing lost.

Each row of the table builds its inputs in a temporary directory and gives the command-line
arguments, the words the error must contain, and whether an --out directory should stay empty.
"""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from robench.cli import main

TINY_SUITE = """
name = "tiny"
[[attack]]
attack = "pgd"
[attack.params]
steps = 5
"""

USER_CODE = textwrap.dedent('''
    import torch
    from torch import nn

    class NaNModel(nn.Module):
        def forward(self, x):
            return torch.full((len(x), 10), float("nan"))

    class WrongShape(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10, 2)

    class Flaky(nn.Module):
        """Fine on the two rows the harness validates with, raises on real batches."""
        def __init__(self, model):
            super().__init__()
            self.model = model
        def forward(self, x):
            if len(x) > 2:
                raise RuntimeError("defense blew up mid-run")
            return self.model(x)

    def nan_model():
        return NaNModel()

    def wrong_shape():
        return WrongShape()

    def raises_on_load():
        raise ValueError("weights file not found")

    def wrong_input_size():
        return nn.Sequential(nn.Flatten(), nn.Linear(100, 10))  # digits have 64 features

    def defense_raises_on_build(model, strength=1):
        raise RuntimeError("cannot build")

    def ten_classes():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def not_a_module():
        return 42

    def flaky(model):
        return Flaky(model)
''')

#: modules that fail at import, each imported by name from a --model reference
BROKEN_MODULES = {
    "robench_syntax_error": "def broken(:\n",
    "robench_raises_at_import": "raise RuntimeError('no GPU here')\n",
    "robench_exits_at_import": "import sys\nsys.exit(3)\n",
}


def _write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _npz(tmp: Path, name: str, **arrays: np.ndarray) -> str:
    path = tmp / name
    np.savez(path, **arrays)
    return str(path)


def _card(tmp: Path, body: str) -> str:
    return _write(tmp, "card.toml", body)


rng = np.random.default_rng(0)
GOOD_X = rng.random((40, 1, 8, 8)).astype(np.float32)
GOOD_Y = np.arange(40) % 10

# (id, builder(tmp) -> extra args, words the one-line error must contain)
CASES = [
    ("unknown-defense", lambda t: ["--defense", "nope"], "unknown defense 'nope'"),
    ("unknown-suite", lambda t: ["--suite", "nope"], "unknown suite 'nope'"),
    ("unknown-dataset", lambda t: ["--dataset", "nope"], "unknown dataset 'nope'"),
    ("missing-npz", lambda t: ["--dataset", str(t / "missing.npz")], "does not exist"),
    ("epsilon-zero", lambda t: ["--epsilon", "0"], "epsilon must be"),
    ("epsilon-negative", lambda t: ["--epsilon", "-0.1"], "epsilon must be"),
    ("epsilon-nan", lambda t: ["--epsilon", "nan"], "epsilon must be"),
    ("epsilon-too-large", lambda t: ["--epsilon", "1.5"], "larger than the data range"),
    ("norm-unknown", lambda t: ["--norm", "l3"], "unknown norm"),
    ("model-unknown", lambda t: ["--model", "nope"], "unknown model 'nope'"),
    ("model-missing-callable", lambda t: ["--model", "os:nothing_here"], "has no attribute"),
    ("model-missing-module", lambda t: ["--model", "no_such_module_x:f"], "cannot import module"),
    ("model-nan-logits", lambda t: ["--model", "robench_user_code:nan_model"], "NaN"),
    ("model-wrong-shape", lambda t: ["--model", "robench_user_code:wrong_shape"], "shape"),
    ("model-is-an-encoder", lambda t: ["--model", "cpc"], "is an encoder, not a classifier"),
    ("model-raises-on-load", lambda t: ["--model", "robench_user_code:raises_on_load"], "raised ValueError: weights file not found"),
    ("model-wrong-input-size", lambda t: ["--model", "robench_user_code:wrong_input_size"], "check that the model fits the data set"),
    ("defense-raises-on-build", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "robench_user_code:defense_raises_on_build"\n')],
     "raised RuntimeError: cannot build"),
    ("model-not-a-module", lambda t: ["--model", "robench_user_code:not_a_module"], "not a torch.nn.Module"),
    ("n-examples-zero", lambda t: ["--n-examples", "0"], "n-examples must be"),
    ("shard-size-zero", lambda t: ["--shard-size", "0"], "shard-size must be"),
    ("max-batch-zero", lambda t: ["--max-batch", "0"], "max-batch must be"),
    ("device-unknown", lambda t: ["--device", "tpu"], "unknown device"),
    ("malformed-toml-card", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = \n')], "not valid TOML"),
    ("card-unknown-key", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\nbitz = 3\n')], "unknown key 'bitz'"),
    ("card-unknown-param", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\n[params]\nbitz = 3\n')],
     "unknown parameter(s) bitz"),
    ("card-missing-factory", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "no_such_factory"\n')],
     "no_such_factory"),
    ("card-missing-callable", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "robench_user_code:nothing"\n')],
     "has no attribute"),
    ("card-wrong-type", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = 3\n')], "must be a string"),
    ("card-missing-name", lambda t: ["--defense", _card(t, 'factory = "bit_depth"\n')], "missing required key 'name'"),
    ("suite-unknown-attack", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "nope"\n')],
     "unknown attack 'nope'"),
    ("suite-attack-without-this-norm", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "cw"\n')],
     "have no linf version"),
    ("suite-no-attacks", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\nattack = []\n')], "lists no attacks"),
    ("suite-reserved-label", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\nlabel = "worst-case"\n')],
     "reserved"),
    ("npz-mismatched-lengths", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X, y=GOOD_Y[:-1])], "must match"),
    ("npz-wrong-dtype", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X.astype(np.int32), y=GOOD_Y)], "uint8 or float"),
    ("npz-outside-bounds", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X * 3, y=GOOD_Y)], "must lie in [0, 1]"),
    ("npz-negative-labels", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X, y=GOOD_Y - 1)], "labels must be >= 0"),
    ("npz-labels-out-of-range", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X, y=GOOD_Y + 5),
                                                "--model", "robench_user_code:ten_classes"], "labels go up to 14"),
    ("npz-missing-array", lambda t: ["--dataset", _npz(t, "d.npz", images=GOOD_X, y=GOOD_Y)], "lacks array(s) x"),
    ("npz-not-a-zip", lambda t: ["--dataset", _write(t, "d.npz", "not a zip")], "cannot read npz file"),
    ("address-without-ray", lambda t: ["--address", "127.0.0.1:1"], "--address is for --executor ray"),
    # values of the wrong type or range, checked against each parameter's declared type
    ("suite-steps-not-integer", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\n[attack.params]\nsteps = 1.5\n')],
     "steps must be an integer"),
    ("suite-steps-nan", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\n[attack.params]\nrel_stepsize = nan\n')],
     "must be a finite number"),
    ("suite-flag-not-bool", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\n[attack.params]\nrandom_start = "yes"\n')],
     "random_start must be true or false"),
    ("card-bits-not-integer", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\n[params]\nbits = 2.5\n')],
     "bits must be an integer"),
    ("suite-cascade-not-bool", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\ncascade = 1\n[[attack]]\nattack = "pgd"\n')],
     "'cascade' must be a true/false"),
    ("card-nested-deeply", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\nparams = ' + "[" * 1000 + "]" * 1000 + "\n")],
     "card"),
    # user code that fails while it is imported
    ("model-module-syntax-error", lambda t: ["--model", "robench_syntax_error:f"], "raised SyntaxError"),
    ("model-module-raises-at-import", lambda t: ["--model", "robench_raises_at_import:f"], "raised RuntimeError: no GPU here"),
    ("model-module-exits-at-import", lambda t: ["--model", "robench_exits_at_import:f"], "exited with 3"),
    # devices and data
    ("device-cuda-index-without-cuda", lambda t: ["--device", "cuda:0"], "no CUDA device is available"),
    ("npz-x-is-a-scalar", lambda t: ["--dataset", _npz(t, "d.npz", x=np.float32(1.0), y=GOOD_Y)], "one row per example"),
    ("npz-labels-huge", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X, y=GOOD_Y * 10**12)], "class indices below"),
    ("npz-both-forms", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X, y=GOOD_Y, x_test=GOOD_X, y_test=GOOD_Y)], "keep one form"),
    ("npz-test-without-labels", lambda t: ["--dataset", _npz(t, "d.npz", x_test=GOOD_X)], "without y_test"),
    ("normalize-malformed", lambda t: ["--normalize", "0.5"], "--normalize '0.5'"),
    ("normalize-zero-std", lambda t: ["--normalize", "0.5,0"], "stds > 0"),
    ("normalize-wrong-channels", lambda t: ["--normalize", "0.5/0.5/0.5,0.2/0.2/0.2"], "channel(s)"),
    ("cards-dir-missing", lambda t: ["--cards", str(t / "nowhere")], "nowhere"),
]


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "robench_user_code.py").write_text(USER_CODE)
    for name, text in BROKEN_MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    for name in ("robench_user_code", *BROKEN_MODULES):
        sys.modules.pop(name, None)
    yield
    for name in ("robench_user_code", *BROKEN_MODULES):
        sys.modules.pop(name, None)


def test_the_table_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("build, message", [(b, m) for _, b, m in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, user_code, build, message):
    suite = _write(tmp_path, "tiny.toml", TINY_SUITE)
    out = tmp_path / "out"
    args = build(tmp_path)
    defaults = [] if "--suite" in args else ["--suite", suite]
    defaults += [] if "--defense" in args else ["--defense", "none"]
    result = CliRunner().invoke(main, ["evaluate", "--out", str(out), "--n-examples", "4", "--no-diagnostics", *defaults, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not [p for p in out.rglob("*") if p.is_file()], "nothing may be written for bad input"


def test_unwritable_out_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["evaluate", "--out", str(blocker / "run"), "--n-examples", "4"])
    assert result.exit_code == 2 and "choose another --out" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_defense_that_raises_mid_run_fails_its_units_and_the_rest_completes(tmp_path, user_code):
    suite = _write(tmp_path, "tiny.toml", TINY_SUITE)
    card = _write(tmp_path, "flaky.toml", 'name = "flaky"\nfactory = "robench_user_code:flaky"\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--defense", "none", "--defense", card, "--suite", suite,
                                       "--n-examples", "6", "--no-diagnostics", "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: 1 unit(s) failed") and "defense blew up mid-run" in last and "--resume" in last
    results = pd.read_csv(out / "results.csv")
    assert set(results.defense) == {"none"}  # the healthy defense's numbers are all there
    run = json.loads((out / "run.json").read_text())
    assert [f["defense"] for f in run["failed_units"]] == ["flaky"]
    assert "flaky" in (out / "report.html").read_text()  # the report says so


def test_a_corrupted_cache_file_is_retrained_not_crashed(tmp_path, monkeypatch):
    from robench.data import load_digits
    from robench.zoo.cache import cache_dir
    from robench.zoo.cnn import cnn

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "cache"))
    data = load_digits()
    first = cnn(data, epochs=1)
    [path] = cache_dir().glob("cnn-*.pt")
    path.write_bytes(b"garbage, not a checkpoint")
    again = cnn(data, epochs=1)
    assert path.stat().st_size > 1000
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert (a == b).all()  # seeded training: the retrained model is the same model
