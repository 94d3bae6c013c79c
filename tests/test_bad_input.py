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

    class Tuple(nn.Module):
        def forward(self, x):
            return (torch.zeros(len(x), 10),)

    class Infinite(nn.Module):
        def forward(self, x):
            return torch.full((len(x), 10), float("inf"))

    class RaisesInForward(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom in forward")

    def returns_tuple():
        return Tuple()

    def infinite_logits():
        return Infinite()

    def raises_in_forward():
        return RaisesInForward()

    def needs_an_argument(weights):
        return ten_classes()

    def returns_none():
        return None

    def mark_ran(*args, **kwargs):
        """A factory that must never run: it leaves a mark in the current directory."""
        import pathlib
        pathlib.Path("CODE-RAN").write_text("a card nobody named ran")
        return ten_classes()
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


def _write_bytes(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _folder(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cwd_card(tmp: Path, kind: str, name: str, body: str) -> list[str]:
    """A card in ``./defenses`` or ``./attacks`` of the directory the command runs in (the test's tmp)."""
    _folder(tmp, kind)
    (tmp / kind / f"{name}.toml").write_text(body)
    return []


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
    # cards lying in the current directory are not named by the user: they are never looked up
    ("cwd-defense-card-not-loaded", lambda t: [*_cwd_card(t, "defenses", "evil", 'name = "evil"\nfactory = "robench_user_code:mark_ran"\n'),
                                               "--defense", "evil"], "unknown defense 'evil'"),
    ("cwd-suite-card-not-loaded", lambda t: [*_cwd_card(t, "attacks", "evil", 'name = "evil"\n[[attack]]\nattack = "pgd"\n'),
                                             "--suite", "evil"], "unknown suite 'evil'"),
    ("cwd-cards-ignored-even-with-cards-elsewhere", lambda t: [*_cwd_card(t, "defenses", "evil", 'name = "evil"\nfactory = "robench_user_code:mark_ran"\n'),
                                                               "--cards", str(_folder(t, "mine")), "--defense", "evil"], "unknown defense 'evil'"),
    # more files and values robench cannot read: one line each
    ("card-is-a-directory", lambda t: ["--defense", str(_folder(t, "dir.toml"))], "cannot read card"),
    ("card-not-utf8", lambda t: ["--defense", _write_bytes(t, "bin.toml", b"\xff\xfe\x00garbage")], "cannot read card"),
    ("suite-not-utf8", lambda t: ["--suite", _write_bytes(t, "bin.toml", b"\xff\xfe\x00garbage")], "cannot read card"),
    ("suite-file-missing", lambda t: ["--suite", str(t / "nope.toml")], "does not exist"),
    ("suite-nested-deeply", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\nattack = ' + "[" * 1000 + "]" * 1000 + "\n")],
     "nested too deeply"),
    ("suite-attack-not-a-table", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\nattack = [1]\n')], "must be a table"),
    ("suite-foolbox-unknown", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "foolbox.Nope"\n')],
     "unknown attack 'foolbox.Nope'"),
    ("suite-param-is-a-table", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\n[attack.params]\nsteps = {a = 1}\n')],
     "steps must be an integer"),
    ("npz-object-array", lambda t: ["--dataset", _npz(t, "d.npz", x=np.array([GOOD_X[0], "a"], dtype=object), y=GOOD_Y)],
     "cannot read npz file"),
    ("npz-zero-bytes", lambda t: ["--dataset", _write(t, "d.npz", "")], "cannot read npz file"),
    ("npz-no-examples", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X[:0], y=GOOD_Y[:0])], "need at least 4"),
    ("npz-x-test-empty", lambda t: ["--dataset", _npz(t, "d.npz", x_test=GOOD_X[:0], y_test=GOOD_Y[:0])], "x_test is empty"),
    ("npz-train-shape-differs", lambda t: ["--dataset", _npz(t, "d.npz", x_test=GOOD_X, y_test=GOOD_Y, x_train=GOOD_X[:, :, :4], y_train=GOOD_Y)],
     "they must match"),
    ("npz-x-five-dims", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X[:, None], y=GOOD_Y)], "must have shape"),
    ("npz-x-flat-features", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X.reshape(40, -1), y=GOOD_Y)], "must have shape"),
    ("npz-x-strings", lambda t: ["--dataset", _npz(t, "d.npz", x=np.array(["a"] * 40), y=GOOD_Y)], "uint8 or float"),
    ("npz-examples-without-values", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X[:, :, :0], y=GOOD_Y)], "with no values"),
    ("npz-x-float-overflows", lambda t: ["--dataset", _npz(t, "d.npz", x=np.full((40, 1, 8, 8), 1e300), y=GOOD_Y)], "must lie in [0, 1]"),
    ("model-needs-an-argument", lambda t: ["--model", "robench_user_code:needs_an_argument"], "raised TypeError"),
    ("model-returns-none", lambda t: ["--model", "robench_user_code:returns_none"], "not a torch.nn.Module"),
    ("model-returns-a-tuple", lambda t: ["--model", "robench_user_code:returns_tuple"], "must return logits"),
    ("model-infinite-logits", lambda t: ["--model", "robench_user_code:infinite_logits"], "NaN or infinite logits"),
    ("model-raises-in-forward", lambda t: ["--model", "robench_user_code:raises_in_forward"], "raised RuntimeError: boom in forward"),
    # values that would otherwise be misread, clamped or guessed without a word
    ("npz-labels-one-hot", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X, y=np.eye(10, dtype=np.int64)[GOOD_Y])], "1-D integer array"),
    ("npz-labels-bool", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X, y=GOOD_Y > 4)], "1-D integer array"),
    ("npz-x-bool", lambda t: ["--dataset", _npz(t, "d.npz", x=GOOD_X > 0.5, y=GOOD_Y)], "uint8 or float"),
    ("npz-x-nan", lambda t: ["--dataset", _npz(t, "d.npz", x=np.where(GOOD_X > 0.5, np.nan, GOOD_X), y=GOOD_Y)], "NaN or infinite"),
    ("npz-x-infinite", lambda t: ["--dataset", _npz(t, "d.npz", x=np.full_like(GOOD_X, np.inf), y=GOOD_Y)], "NaN or infinite"),
    ("npz-layout-ambiguous", lambda t: ["--dataset", _npz(t, "d.npz", x=rng.random((40, 3, 32, 3)).astype(np.float32), y=GOOD_Y)],
     "does not guess"),
    ("npz-layout-channels-last-of-4", lambda t: ["--dataset", _npz(t, "d.npz", x=rng.random((40, 8, 8, 4)).astype(np.float32), y=GOOD_Y)],
     "numpy.transpose(x, (0, 3, 1, 2))"),
    ("npz-layout-cube", lambda t: ["--dataset", _npz(t, "d.npz", x=rng.random((40, 8, 8, 8)).astype(np.float32), y=GOOD_Y)],
     "does not look like images"),
    ("npz-train-labels-without-images", lambda t: ["--dataset", _npz(t, "d.npz", x_test=GOOD_X, y_test=GOOD_Y, y_train=GOOD_Y)],
     "holds y_train without x_train"),
    ("card-tolerance-nan", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\ntolerance = nan\n')], "tolerance must lie in [0, 1]"),
    ("card-name-empty", lambda t: ["--defense", _card(t, 'name = ""\nfactory = "bit_depth"\n')], "must be letters"),
    ("card-bits-text", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\n[params]\nbits = "a"\n')], "bits must be an integer"),
    ("card-bits-negative", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\n[params]\nbits = -3\n')], "from 1 to 16"),
    ("card-bits-huge", lambda t: ["--defense", _card(t, 'name = "x"\nfactory = "bit_depth"\n[params]\nbits = 100000000000\n')], "from 1 to 16"),
    ("suite-steps-negative", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\n[attack.params]\nsteps = -1\n')],
     "steps must be an integer >= 1"),
    ("suite-eot-zero", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\neot_samples = 0\n')],
     "eot_samples must be >= 1"),
    ("suite-duplicate-label", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\n[[attack]]\nattack = "pgd"\n')],
     "used twice"),
    ("suite-stepsize-negative", lambda t: ["--suite", _write(t, "s.toml", 'name = "s"\n[[attack]]\nattack = "pgd"\n[attack.params]\nrel_stepsize = -1.0\n')],
     "rel_stepsize must be a finite number > 0"),
    ("epsilon-infinite", lambda t: ["--epsilon", "inf"], "epsilon must be"),
    ("normalize-nan", lambda t: ["--normalize", "nan,nan"], "finite means"),
    ("device-empty", lambda t: ["--device", ""], "unknown device ''"),
    ("device-with-index-on-cpu", lambda t: ["--device", "cpu:0"], "unknown device 'cpu:0'"),
    # integrity: a resume needs a run to resume
    ("resume-a-folder-without-a-run", lambda t: ["--resume", str(t / "out")], "holds no robench run"),
    ("resume-and-another-out", lambda t: ["--resume", str(t / "elsewhere")], "drop --out or give the same directory"),
]

#: the classes of issue 13 each row of CASES tries (every row is in exactly one)
CLASSES: dict[str, tuple[str, ...]] = {
    "tracebacks": (
        "unknown-defense", "unknown-suite", "unknown-dataset", "missing-npz", "norm-unknown", "model-unknown",
        "model-missing-callable", "model-missing-module", "model-nan-logits", "model-wrong-shape", "model-is-an-encoder",
        "model-raises-on-load", "model-wrong-input-size", "defense-raises-on-build", "model-not-a-module", "device-unknown",
        "malformed-toml-card", "card-missing-factory", "card-missing-callable", "card-wrong-type", "card-missing-name",
        "suite-unknown-attack", "suite-attack-without-this-norm", "suite-no-attacks", "npz-mismatched-lengths",
        "npz-wrong-dtype", "npz-outside-bounds", "npz-negative-labels", "npz-labels-out-of-range", "npz-missing-array",
        "npz-not-a-zip", "card-nested-deeply", "model-module-syntax-error", "model-module-raises-at-import",
        "model-module-exits-at-import", "device-cuda-index-without-cuda", "npz-x-is-a-scalar", "npz-labels-huge",
        "normalize-malformed", "normalize-zero-std", "normalize-wrong-channels",
        "card-is-a-directory", "card-not-utf8", "suite-not-utf8", "suite-file-missing", "suite-nested-deeply",
        "suite-attack-not-a-table", "suite-foolbox-unknown", "suite-param-is-a-table", "npz-object-array", "npz-zero-bytes",
        "npz-no-examples", "npz-x-test-empty", "npz-train-shape-differs", "npz-x-five-dims", "npz-x-flat-features",
        "npz-x-strings", "npz-examples-without-values", "npz-x-float-overflows", "model-needs-an-argument",
        "model-returns-none", "model-returns-a-tuple", "model-infinite-logits", "model-raises-in-forward",
    ),
    "silent surprises": (
        "epsilon-zero", "epsilon-negative", "epsilon-nan", "epsilon-too-large", "n-examples-zero", "shard-size-zero",
        "max-batch-zero", "card-unknown-key", "card-unknown-param", "suite-reserved-label", "address-without-ray",
        "suite-steps-not-integer", "suite-steps-nan", "suite-flag-not-bool", "card-bits-not-integer",
        "suite-cascade-not-bool", "npz-both-forms", "npz-test-without-labels",
        "npz-labels-one-hot", "npz-labels-bool", "npz-x-bool", "npz-x-nan", "npz-x-infinite", "npz-layout-ambiguous",
        "npz-layout-channels-last-of-4", "npz-layout-cube", "npz-train-labels-without-images", "card-tolerance-nan",
        "card-name-empty", "card-bits-text", "card-bits-negative", "card-bits-huge", "suite-steps-negative",
        "suite-eot-zero", "suite-duplicate-label", "suite-stepsize-negative", "epsilon-infinite", "normalize-nan",
        "device-empty", "device-with-index-on-cpu",
    ),
    "code run by surprise": (
        "cards-dir-missing", "cwd-defense-card-not-loaded", "cwd-suite-card-not-loaded",
        "cwd-cards-ignored-even-with-cards-elsewhere",
    ),
    "integrity": ("resume-a-folder-without-a-run", "resume-and-another-out"),
}


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
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, user_code, monkeypatch, build, message):
    monkeypatch.chdir(tmp_path)  # the folder the command runs in: a card lying here is never loaded
    monkeypatch.delenv("ROBENCH_CARDS", raising=False)  # a card folder of the caller's environment: none here
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
    assert not (tmp_path / "CODE-RAN").exists(), "a card nobody named ran"


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


# =============================================================================================
# Damaged run directories: `robench report DIR`, `robench check DIR --baseline B`, and
# `robench evaluate --out/--resume DIR` on a real run whose files were edited, cut or replaced.
# Each row: exit 2, one line naming the problem and the fix, no traceback, and nothing lost:
# every file there was before is there after, byte for byte, and nothing new appears.
# =============================================================================================

#: the options of the module's run (a resume must repeat them); the suite card is ./suite.toml
RUN_OPTIONS = ["--defense", "none", "--suite", "suite.toml", "--n-examples", "6", "--no-diagnostics", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A real run directory (and its baseline), made once: ``robench evaluate`` of the tiny suite."""
    from robench_testing import TINY_SUITE as RUN_SUITE

    home = tmp_path_factory.mktemp("pristine")
    (home / "suite.toml").write_text(RUN_SUITE)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(home)
        made = CliRunner().invoke(main, ["evaluate", *RUN_OPTIONS, "--out", str(home / "run")])
        assert made.exit_code == 0, made.output
        based = CliRunner().invoke(main, ["check", str(home / "run"), "--baseline", str(home / "baseline.csv"), "--update-baseline"])
        assert based.exit_code == 0, based.output
    return home


@pytest.fixture
def damaged(pristine, tmp_path, monkeypatch):
    """A copy of the pristine run in ``tmp_path/run`` (with ./suite.toml and ./baseline.csv), the
    current directory set to ``tmp_path``."""
    import shutil

    shutil.copytree(pristine / "run", tmp_path / "run")
    for name in ("suite.toml", "baseline.csv"):
        shutil.copy(pristine / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _table(name: str, edit):
    """Damage: read a CSV of the run (or ``baseline.csv``) as text cells, ``edit`` the frame, write it back."""
    def damage(t: Path) -> None:
        path = t / name if name == "baseline.csv" else t / "run" / name
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        edit(frame).to_csv(path, index=False)
    return damage


def _cell(name: str, column: str, value: str, row: int = 0):
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame
    return _table(name, edit)


def _replace(name: str, data: bytes | str):
    def damage(t: Path) -> None:
        path = t / name if name == "baseline.csv" else t / "run" / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return damage


def _delete(*names: str):
    def damage(t: Path) -> None:
        for name in names:
            (t / "run" / name).unlink()
    return damage


def _run_json(edit):
    def damage(t: Path) -> None:
        path = t / "run" / "run.json"
        payload = json.loads(path.read_text())
        edit(payload)
        path.write_text(json.dumps(payload))
    return damage


def _adversarial(**changes):
    """Damage: rewrite adversarial.npz with some arrays changed (a callable gets the stored ones)."""
    def damage(t: Path) -> None:
        path = t / "run" / "adversarial.npz"
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files}
        for key, value in changes.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value(arrays) if callable(value) else value
        np.savez(path, **arrays)
    return damage


def _both(*damages):
    def damage(t: Path) -> None:
        for d in damages:
            d(t)
    return damage


def _mkdir(*parts: str):
    def damage(t: Path) -> None:
        path = t.joinpath(*parts)
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True)
    return damage


def _note(*parts: str):
    def damage(t: Path) -> None:
        t.joinpath(*parts).write_text("the user's own notes")
    return damage


def _edit_suite(t: Path) -> None:
    (t / "suite.toml").write_text((t / "suite.toml").read_text().replace("steps = 10", "steps = 1"))


def _held_lock(t: Path) -> None:
    import os

    (t / "run" / ".robench.lock").write_text(str(os.getppid()))  # a live process that is not this one


REPORT = lambda t: ["report", str(t / "run")]  # noqa: E731
CHECK = lambda t, *extra: ["check", str(t / "run"), "--baseline", str(t / "baseline.csv"), *extra]  # noqa: E731
RESUME = lambda t, *extra: ["evaluate", *RUN_OPTIONS, "--resume", str(t / "run"), *extra]  # noqa: E731
OUT = lambda t, out: ["evaluate", *RUN_OPTIONS, "--out", str(out)]  # noqa: E731
REBUILD = "--resume"  # what the fix of a damaged table says to run
# (id, class, damage(tmp), argv(tmp), words the one line must hold)
RUN_CASES = [
    # results.csv edited by hand: text, NaN, duplicates, nothing, values out of range
    ("results-text-in-a-rate", "tracebacks", _cell("results.csv", "robust_accuracy", "abc"), REPORT, "column 'robust_accuracy'"),
    ("results-text-in-a-count", "tracebacks", _cell("results.csv", "n_examples", "six"), CHECK, "column 'n_examples'"),
    ("results-text-in-epsilon", "tracebacks", _cell("results.csv", "epsilon", "big"), REPORT, "column 'epsilon'"),
    ("results-text-in-queries", "tracebacks", _cell("results.csv", "queries_mean", "lots"), REPORT, "column 'queries_mean'"),
    ("results-nan-count", "tracebacks", _cell("results.csv", "robust", "nan"), REPORT, "column 'robust'"),
    ("results-nan-count-check", "tracebacks", _cell("results.csv", "robust", "nan"), CHECK, "column 'robust'"),
    ("results-empty-count", "tracebacks", _cell("results.csv", "robust", ""), CHECK, "holds nothing"),
    ("results-infinite-rate", "tracebacks", _cell("results.csv", "clean_accuracy", "inf"), REPORT, "column 'clean_accuracy'"),
    ("results-header-only", "tracebacks", _table("results.csv", lambda f: f.iloc[:0]), REPORT, "holds no rows"),
    ("results-header-only-check", "tracebacks", _table("results.csv", lambda f: f.iloc[:0]), CHECK, "holds no rows"),
    ("results-empty-file", "tracebacks", _replace("results.csv", ""), REPORT, "not a readable CSV"),
    ("results-binary", "tracebacks", _replace("results.csv", b"\xff\xfe\x00\x01"), REPORT, "not readable"),
    ("results-empty-defense", "tracebacks", _cell("results.csv", "defense", ""), REPORT, "column 'defense' must hold a name"),
    ("results-empty-attack", "tracebacks", _cell("results.csv", "attack", ""), CHECK, "column 'attack' must hold a name"),
    ("results-lacks-a-column", "tracebacks", _table("results.csv", lambda f: f.drop(columns=["robust_accuracy"])), REPORT, "lacks column"),
    ("results-duplicate-row", "integrity", _table("results.csv", lambda f: pd.concat([f, f.iloc[:1]])), REPORT, "are the same row"),
    ("results-duplicate-row-check", "integrity", _table("results.csv", lambda f: pd.concat([f, f.iloc[2:]])), CHECK, "are the same row"),
    ("results-rate-above-one", "silent surprises", _cell("results.csv", "robust_accuracy", "1.5"), REPORT, "a number in [0, 1]"),
    ("results-negative-count", "silent surprises", _cell("results.csv", "robust", "-1"), REPORT, "a whole number >= 0"),
    ("results-fractional-count", "silent surprises", _cell("results.csv", "n_examples", "2.5"), CHECK, "a whole number >= 0"),
    ("results-more-robust-than-examples", "silent surprises", _cell("results.csv", "robust", "7"), REPORT, "robust 7 of only 6"),
    ("results-rate-disagrees-with-count", "silent surprises", _cell("results.csv", "robust_accuracy", "0.9"), REPORT,
     "but robust/n_examples is"),
    ("results-count-beyond-int64", "silent surprises", _cell("results.csv", "n_examples", "1e30"), CHECK, "a whole number >= 0"),
    ("results-negative-seconds", "silent surprises", _cell("results.csv", "seconds", "-1"), REPORT, "column 'seconds'"),
    ("results-zero-examples", "silent surprises", _both(_cell("results.csv", "n_examples", "0"), _cell("results.csv", "robust", "0"),
                                                        _cell("results.csv", "attacked", "0")), REPORT, "n_examples 0"),
    # run.json: missing, garbage, or of the wrong shape
    ("run-json-missing", "integrity", _delete("run.json"), REPORT, "run.json does not exist, though results.csv does"),
    ("run-json-garbage", "integrity", _replace("run.json", "{not json"), REPORT, "is not valid JSON"),
    ("run-json-garbage-check", "integrity", _replace("run.json", "{not json"), CHECK, "is not valid JSON"),
    ("run-json-binary", "integrity", _replace("run.json", b"\xff\xfe"), REPORT, "is not valid JSON"),
    ("run-json-a-list", "integrity", _replace("run.json", "[1, 2]"), REPORT, "must hold a JSON object"),
    ("run-json-suite-is-text", "tracebacks", _run_json(lambda j: j.update(suite="tiny")), REPORT, "'suite' must be an object"),
    ("run-json-failed-units-a-number", "tracebacks", _run_json(lambda j: j.update(failed_units=3)), CHECK, "'failed_units' must be a list"),
    ("run-json-failed-unit-epsilon-text", "tracebacks", _run_json(lambda j: j.update(failed_units=[{"defense": "none", "epsilon": "abc"}])),
     CHECK, "'epsilon' must be a number"),
    ("run-json-defenses-text", "silent surprises", _run_json(lambda j: j.update(defenses="none")), REPORT, "'defenses' must be a list"),
    ("run-json-tolerance-text", "tracebacks", _run_json(lambda j: j["defenses"][0].update(tolerance="lots")), CHECK, "'tolerance' must be"),
    ("run-json-timings-a-list", "tracebacks", _run_json(lambda j: j.update(timings=[1])), REPORT, "'timings' must be an object"),
    ("run-json-versions-a-list", "tracebacks", _run_json(lambda j: j.update(versions=[1])), REPORT, "'versions' must be an object"),
    ("run-json-seconds-nan", "silent surprises", _replace("run.json", '{"timings": {"seconds": NaN}}'), REPORT, "'timings.seconds'"),
    # adversarial.npz: garbage, the wrong rank, arrays missing or of the wrong kind
    ("adversarial-garbage", "integrity", _replace("adversarial.npz", "garbage"), REPORT, "not a readable .npz"),
    ("adversarial-truncated", "integrity", lambda t: (t / "run" / "adversarial.npz").write_bytes((t / "run" / "adversarial.npz").read_bytes()[:300]),
     REPORT, "not a readable .npz"),
    ("adversarial-wrong-rank", "integrity", _adversarial(x=lambda a: a["x"].reshape(len(a["x"]), -1), x_adv=lambda a: a["x_adv"].reshape(len(a["x"]), -1)),
     REPORT, "x must be N x C x L (sequences) or N x C x H x W (images)"),
    ("adversarial-rank-five", "integrity", _adversarial(x=lambda a: a["x"][:, None], x_adv=lambda a: a["x_adv"][:, None]), REPORT, "N x C x H x W"),
    ("adversarial-array-missing", "integrity", _adversarial(x_adv=None), REPORT, "lacks array(s) x_adv"),
    ("adversarial-lengths-differ", "integrity", _adversarial(example=lambda a: a["example"][:-1]), REPORT, "disagree in length"),
    ("adversarial-nan", "silent surprises", _adversarial(x_adv=lambda a: np.full_like(a["x_adv"], np.nan)), REPORT, "finite numbers"),
    ("adversarial-example-fractional", "silent surprises", _adversarial(example=lambda a: np.full(len(a["x"]), 0.5)), REPORT, "example indices"),
    ("adversarial-example-a-scalar", "tracebacks", _adversarial(example=np.int64(3)), REPORT, "must be 1-D"),
    ("adversarial-epsilon-text", "tracebacks", _adversarial(epsilon=lambda a: np.array(["a"] * len(a["x"]))), REPORT, "epsilon must hold finite numbers"),
    ("adversarial-empty-examples", "tracebacks", _adversarial(x=lambda a: a["x"][:, :, :0], x_adv=lambda a: a["x_adv"][:, :, :0]), REPORT, "empty examples"),
    # examples.csv and diagnostics.csv
    ("examples-flag-text", "silent surprises", _cell("examples.csv", "broken", "maybe"), REPORT, "column 'broken' must hold true or false"),
    ("examples-index-text", "silent surprises", _cell("examples.csv", "example", "abc"), REPORT, "column 'example'"),
    ("examples-header-only", "silent surprises", _table("examples.csv", lambda f: f.iloc[:0]), REPORT, "holds no rows, though results.csv does"),
    ("examples-duplicate-row", "integrity", _table("examples.csv", lambda f: pd.concat([f, f.iloc[:1]])), REPORT, "are the same row"),
    ("examples-binary", "integrity", _replace("examples.csv", b"\x00\x01\xff"), REPORT, "not readable"),
    ("diagnostics-flag-text", "silent surprises", _replace("diagnostics.csv", "defense,epsilon,check,fired,detail\nnone,0.1,x,maybe,d\n"), REPORT,
     "column 'fired'"),
    ("diagnostics-epsilon-text", "tracebacks", _replace("diagnostics.csv", "defense,epsilon,check,fired,detail\nnone,abc,x,True,d\n"), REPORT,
     "column 'epsilon'"),
    # the folder itself
    ("report-html-is-a-folder", "tracebacks", _both(_delete("report.html"), _mkdir("run", "report.html")), REPORT, "cannot write"),
    ("run-dir-is-a-file", "tracebacks", lambda t: None, lambda t: ["report", str(t / "run" / "results.csv")], "is not a directory"),
    ("run-dir-missing", "tracebacks", lambda t: None, lambda t: ["check", str(t / "nowhere"), "--baseline", str(t / "baseline.csv")],
     "does not exist"),
    ("unfinished-run-report", "data lost", _delete("results.csv", "examples.csv", "run.json", "diagnostics.csv", "adversarial.npz", "report.html"),
     REPORT, "unfinished run"),
    ("unfinished-run-check", "data lost", _delete("results.csv", "examples.csv", "run.json", "diagnostics.csv", "adversarial.npz", "report.html"),
     CHECK, "finish it with `robench evaluate --resume"),
    ("unfinished-run-with-an-old-report", "data lost", _delete("results.csv", "run.json"), REPORT, "unfinished run"),
    # the baseline
    ("baseline-text", "tracebacks", _cell("baseline.csv", "robust", "abc"), CHECK, "must be numbers"),
    ("baseline-nan-count", "tracebacks", _cell("baseline.csv", "robust", "nan"), CHECK, "finite numbers"),
    ("baseline-nan-rate", "silent surprises", _cell("baseline.csv", "robust_accuracy", "nan"), CHECK, "finite numbers"),
    ("baseline-nan-epsilon", "silent surprises", _cell("baseline.csv", "epsilon", "nan"), CHECK, "finite numbers"),
    ("baseline-infinite-epsilon", "silent surprises", _cell("baseline.csv", "epsilon", "inf"), CHECK, "finite numbers"),
    ("baseline-fractional-count", "silent surprises", _table("baseline.csv", lambda f: f.assign(robust="2.5", robust_accuracy=str(2.5 / 6))),
     CHECK, "must be whole numbers"),
    ("baseline-negative-examples", "silent surprises", _cell("baseline.csv", "n_examples", "-6"), CHECK, "n_examples >= 1"),
    ("baseline-empty-defense", "silent surprises", _cell("baseline.csv", "defense", ""), CHECK, "defense must not be empty"),
    ("baseline-header-only", "silent surprises", _table("baseline.csv", lambda f: f.iloc[:0]), CHECK, "holds no rows"),
    ("baseline-duplicate-row", "integrity", _table("baseline.csv", lambda f: pd.concat([f, f])), CHECK, "twice"),
    ("baseline-lacks-columns", "tracebacks", _table("baseline.csv", lambda f: f.drop(columns=["n_examples"])), CHECK, "lacks column(s) n_examples"),
    ("baseline-empty-file", "tracebacks", _replace("baseline.csv", ""), CHECK, "not a readable CSV"),
    ("baseline-binary", "tracebacks", _replace("baseline.csv", b"\xff\xfe\x00"), CHECK, "not a readable CSV"),
    ("baseline-missing", "tracebacks", lambda t: (t / "baseline.csv").unlink(), CHECK, "--update-baseline"),
    ("baseline-is-a-folder", "tracebacks", _mkdir("baseline.csv"), CHECK, "is a directory"),
    # what check writes never replaces what the run or the user still needs
    ("junit-onto-results", "data lost", lambda t: None, lambda t: CHECK(t, "--junit", str(t / "run" / "results.csv")),
     "would overwrite results.csv"),
    ("junit-into-units", "data lost", lambda t: None, lambda t: CHECK(t, "--junit", str(t / "run" / "units" / "x.xml")),
     "would write units/x.xml"),
    ("junit-onto-the-baseline", "data lost", lambda t: None, lambda t: CHECK(t, "--junit", str(t / "baseline.csv")), "is the baseline file"),
    ("update-baseline-onto-run-json", "data lost", lambda t: None,
     lambda t: ["check", str(t / "run"), "--baseline", str(t / "run" / "run.json"), "--update-baseline"], "would overwrite run.json"),
    ("junit-under-a-file", "tracebacks", lambda t: None, lambda t: CHECK(t, "--junit", str(t / "suite.toml" / "j.xml")), "cannot write the JUnit XML"),
    ("alpha-out-of-range", "silent surprises", lambda t: None, lambda t: CHECK(t, "--alpha", "2"), "--alpha must lie in (0, 1)"),
    ("alpha-nan", "silent surprises", lambda t: None, lambda t: CHECK(t, "--alpha", "nan"), "--alpha must lie in (0, 1)"),
    # evaluate on an existing run: the folder is the run's, a resume is the same run or nothing
    ("out-holds-a-users-file", "data lost", _note("run", "notes.txt"), lambda t: OUT(t, t / "run"), "robench did not write (notes.txt)"),
    ("out-units-hold-a-users-file", "data lost", _note("run", "units", "notes.txt"), lambda t: OUT(t, t / "run"), "units/notes.txt"),
    ("out-inside-another-runs-units", "data lost", lambda t: None, lambda t: OUT(t, t / "run" / "units" / "nested"), "inside another run"),
    ("resume-with-the-suite-changed", "integrity", _edit_suite, RESUME, "the content of suite 'tiny' changed"),
    ("resume-with-other-n-examples", "integrity", lambda t: None, lambda t: RESUME(t, "--n-examples", "5"), "n_examples: run has 6, now 5"),
    ("resume-with-another-seed", "integrity", lambda t: None, lambda t: RESUME(t, "--seed", "1"), "seed: run has 0, now 1"),
    ("resume-with-plan-garbage", "integrity", _replace("plan.json", "{garbage"), RESUME, "plan.json is unreadable"),
    ("resume-with-plan-a-list", "integrity", _replace("plan.json", "[]"), RESUME, "plan.json is unreadable"),
    ("resume-without-a-plan", "integrity", _delete("plan.json"), RESUME, "holds no robench run"),
    ("out-while-another-process-writes", "concurrency", _held_lock, lambda t: OUT(t, t / "run"), "another robench process"),
    ("resume-while-another-process-writes", "concurrency", _held_lock, RESUME, "another robench process"),
]


def _row_id(row) -> str:
    return row.values[0] if hasattr(row, "values") else row[0]


def _row_class(row) -> str:
    return (row.values if hasattr(row, "values") else row)[1]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, or None for a folder."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("klass, damage, argv, words", [
    pytest.param(*(r.values if hasattr(r, "values") else r)[1:], marks=getattr(r, "marks", ()), id=_row_id(r)) for r in RUN_CASES])
def test_a_damaged_run_is_one_line_exit_2_and_nothing_is_lost(damaged, klass, damage, argv, words):
    damage(damaged)
    before = _snapshot(damaged)
    result = CliRunner().invoke(main, argv(damaged))
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output
    assert "Traceback" not in result.output and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1, result.output
    after = _snapshot(damaged)
    assert sorted(after) == sorted(before), "nothing may be created or removed"
    for name, content in before.items():
        if name == "run/report.html" and after[name] != content:  # rewritten: then whole
            assert after[name].rstrip().endswith(b"</html>"), "report.html is whole or untouched"
        else:
            assert after[name] == content, f"{name} changed"


def test_a_damaged_table_says_how_to_rebuild_it_and_the_rebuild_works(damaged):
    """The fix a damaged table's error names (``--resume`` with the run's options) gives the run back."""
    want = pd.read_csv(damaged / "run" / "results.csv").drop(columns=["seconds"])
    _cell("results.csv", "robust", "nan")(damaged)
    refused = CliRunner().invoke(main, REPORT(damaged))
    assert refused.exit_code == 2 and f"robench evaluate --resume {damaged / 'run'}" in refused.output
    rebuilt = CliRunner().invoke(main, RESUME(damaged))
    assert rebuilt.exit_code == 0, rebuilt.output
    pd.testing.assert_frame_equal(pd.read_csv(damaged / "run" / "results.csv").drop(columns=["seconds"]), want)
    assert CliRunner().invoke(main, REPORT(damaged)).exit_code == 0


def test_junit_through_a_symlink_writes_its_target_and_keeps_the_link(damaged):
    """``--junit LINK`` follows the link, as shell redirection does: the target is replaced whole
    (atomically, beside itself) and the link stays a link; replacing the link would cut it silently."""
    import os
    import xml.etree.ElementTree as ET

    (damaged / "reports").mkdir()
    target = damaged / "reports" / "junit.xml"
    target.write_text("old")
    link = damaged / "junit-link.xml"
    link.symlink_to(target)
    result = CliRunner().invoke(main, CHECK(damaged, "--junit", str(link)))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert ET.parse(target).getroot().tag == "testsuites"
    assert sorted(p.name for p in (damaged / "reports").iterdir()) == ["junit.xml"], "no temporary file left"
    baseline_link = damaged / "baseline-link.csv"
    baseline_link.symlink_to(damaged / "baseline.csv")
    updated = CliRunner().invoke(main, ["check", str(damaged / "run"), "--baseline", str(baseline_link), "--update-baseline"])
    assert updated.exit_code == 0, updated.output
    assert baseline_link.is_symlink(), "an updated baseline keeps its link too"


def test_update_baseline_replaces_bad_rows_but_never_a_file_that_is_no_baseline(damaged):
    """A baseline's error says: regenerate it with --update-baseline; that must then work. But a
    path that holds no baseline at all (a typo: the README) is refused and left as it is."""
    _cell("baseline.csv", "robust", "nan")(damaged)
    refused = CliRunner().invoke(main, CHECK(damaged))
    assert refused.exit_code == 2 and "regenerate it with --update-baseline" in refused.output
    updated = CliRunner().invoke(main, CHECK(damaged, "--update-baseline"))
    assert updated.exit_code == 0, updated.output
    assert "the old baseline's rows were unreadable and are replaced" in updated.output
    assert CliRunner().invoke(main, CHECK(damaged)).exit_code == 0
    readme = damaged / "README.md"
    readme.write_text("# my notes\n\nnot a baseline, but a typo in the path\n")
    typo = CliRunner().invoke(main, ["check", str(damaged / "run"), "--baseline", str(readme), "--update-baseline"])
    assert typo.exit_code == 2 and "check the path" in typo.output and _one_line_text(typo.output)
    assert readme.read_text().startswith("# my notes"), "a file that is no baseline is never overwritten"


def _one_line_text(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


def test_a_baseline_folder_is_one_clear_error_in_the_library(tmp_path):
    from robench.errors import RobenchError
    from robench.reports.gate import read_baseline

    with pytest.raises(RobenchError, match="is a directory"):
        read_baseline(tmp_path)


# =============================================================================================
# Other commands
# =============================================================================================
OTHER_CASES = [
    ("zoo-train-unknown-model", "tracebacks", ["zoo", "train", "no-such-model"], "unknown model 'no-such-model'"),
    ("zoo-train-close-name", "tracebacks", ["zoo", "train", "cpc-prob"], "did you mean 'cpc-probe'"),
    ("zoo-train-unknown-dataset", "tracebacks", ["zoo", "train", "cnn", "--dataset", "nope"], "unknown dataset 'nope'"),
    ("report-missing-dir", "tracebacks", ["report", "no/such/run"], "does not exist"),
]


@pytest.mark.parametrize("argv, words", [(a, w) for _, _, a, w in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_other_commands_answer_bad_input_in_one_line(argv, words):
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert words in result.output and result.output.startswith("error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_more_examples_than_the_test_split_holds_is_said(tmp_path, user_code, caplog):
    """--n-examples above the test split's size attacks them all, and says so (it was silent)."""
    data = _npz(tmp_path, "d.npz", x_test=GOOD_X[:5], y_test=GOOD_Y[:5])
    result = CliRunner().invoke(main, ["evaluate", "--dataset", data, "--model", "robench_user_code:ten_classes", "--defense", "none",
                                       "--suite", _write(tmp_path, "tiny.toml", TINY_SUITE), "--n-examples", "50",
                                       "--no-diagnostics", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "--n-examples 50 is more than the 5 test examples of d: attacking all 5" in caplog.text


def test_every_row_has_one_class_and_the_tables_hold_at_least_100():
    evaluate_ids = [c[0] for c in CASES]
    classified = [i for ids in CLASSES.values() for i in ids]
    assert sorted(classified) == sorted(evaluate_ids) and len(set(evaluate_ids)) == len(evaluate_ids)
    run_ids = [_row_id(r) for r in RUN_CASES]
    assert len(set(run_ids)) == len(run_ids)
    sizes: dict[str, int] = {k: len(v) for k, v in CLASSES.items()}
    for row in RUN_CASES:
        sizes[_row_class(row)] = sizes.get(_row_class(row), 0) + 1
    for _, klass, _, _ in OTHER_CASES:
        sizes[klass] += 1
    assert set(sizes) <= {"data lost", "integrity", "concurrency", "code run by surprise", "tracebacks", "silent surprises"}
    assert sum(sizes.values()) == len(CASES) + len(RUN_CASES) + len(OTHER_CASES) >= 100
    print("bad-input rows by class:", dict(sorted(sizes.items())), "total", sum(sizes.values()))


def test_a_data_set_without_a_training_split_cannot_train_a_zoo_model(tmp_path):
    """Issue 25, class 1: an .npz with only x_test/y_test and the default --model cnn used to train
    the CNN on nothing and report its 'robust accuracy'; now one line names the two fixes."""
    generator = np.random.default_rng(0)
    path = tmp_path / "test-only.npz"
    np.savez(path, x_test=generator.random((20, 8, 8), dtype=np.float32), y_test=generator.integers(0, 10, 20))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--dataset", str(path), "--defense", "none", "--n-examples", "4",
                                       "--epsilon", "0.1", "--no-diagnostics", "--out", str(out)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "no training split" in line and "--model file.py:callable" in line and "x_train" in line
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
