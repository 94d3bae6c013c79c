"""The Python entry point (robench/api.py): a model object and tensors in, the same tables out."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import robench
from robench_testing import TINY_SUITE, write_suite
from robench.errors import RobenchError
from robench.registry import datasets, models


def _toy():
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    x = torch.rand(12, 1, 4, 4, generator=generator)
    return model, x, model(x).argmax(1).detach()


def test_evaluate_a_model_object_on_tensors(tmp_path):
    model, x, y = _toy()
    suite = write_suite(tmp_path, TINY_SUITE)
    before = (set(models.names()), set(datasets.names()))
    evaluation = robench.evaluate(model, x, y, defenses=("none", "bit-depth-3"), suite=suite, epsilons=(0.05, 0.3),
                                  diagnostics=False, out=tmp_path / "run")
    worst = evaluation.results[evaluation.results.attack == "worst-case"].set_index(["defense", "epsilon"])
    assert (worst["clean_accuracy"] == 1.0).all() and (worst["n_examples"] == 12).all()
    assert worst.loc[("none", 0.3), "robust_accuracy"] <= worst.loc[("none", 0.05), "robust_accuracy"]
    assert (tmp_path / "run" / "report.html").exists()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run" / "results.csv")[["robust"]],
                                  evaluation.results[["robust"]].reset_index(drop=True))
    assert (set(models.names()), set(datasets.names())) == before, "temporary registrations are removed"


def test_numpy_uint8_nhwc_inputs_are_accepted(tmp_path):
    model, x, y = _toy()
    images = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    evaluation = robench.evaluate(model, images, y.numpy(), suite=write_suite(tmp_path, TINY_SUITE), diagnostics=False)
    assert int(evaluation.results["n_examples"].iloc[0]) == 12


@pytest.mark.parametrize("args, message", [
    (lambda m, x, y: ("not a model", x, y), "must be a torch.nn.Module"),
    (lambda m, x, y: (m, x * 3, y), "must lie in [0, 1]"),
    (lambda m, x, y: (m, x, y[:-1]), "they must match"),
    (lambda m, x, y: (m, x, [1, 2]), "must be a torch.Tensor or a numpy array"),
])
def test_bad_arguments_are_robench_errors(args, message):
    model, x, y = _toy()
    with pytest.raises(RobenchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        robench.evaluate(*args(model, x, y), diagnostics=False)


def _import_order_probe(first: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    code = (f"import {first}\nimport robench, torch, json\nimport robench.api as api\n"
            "torch.set_num_threads(2)\n"
            "print(json.dumps({'spin': robench.SPIN_WAIT, 'warning': api.spin_wait_warning(), "
            "'signature': str(__import__('inspect').signature(robench.evaluate))}))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_torch_first_is_said_not_silently_slow():
    """Issue 26: with torch imported first OMP_WAIT_POLICY cannot take effect any more, and the API
    says so (with the fix) instead of running several times slower unseen; robench first: silent."""
    torch_first = _import_order_probe("torch")
    assert torch_first["spin"] is True and "import robench before torch" in torch_first["warning"]
    robench_first = _import_order_probe("robench")
    assert robench_first["spin"] is False and robench_first["warning"] is None
    assert "defenses" in robench_first["signature"] and "suite" in robench_first["signature"], "help() shows the real signature"


@pytest.mark.parametrize("kwargs, names", [
    ({"defenses": 3}, "defenses"), ({"defenses": []}, "defenses"), ({"suite": 1.5}, "suite"),
    ({"epsilons": "0.1"}, "epsilons"), ({"epsilons": (0.1, float("nan"))}, "epsilons"), ({"epsilons": -0.1}, "epsilons"),
    ({"normalize": (0.5,)}, "normalize"), ({"normalize": ((0.5, 0.4), (0.2,))}, "normalize"), ({"seed": 1.5}, "seed"),
    ({"norm": 2}, "norm"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_every_argument_is_checked_before_any_work(kwargs, names, tmp_path):
    """Issue 25, class 9: one RobenchError naming the argument, before the model runs once."""
    import robench
    from robench.errors import RobenchError

    class Counted(torch.nn.Module):
        calls = 0

        def forward(self, x):
            Counted.calls += 1
            return torch.zeros(len(x), 10)

    with pytest.raises(RobenchError, match=names):
        robench.evaluate(Counted(), torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), progress=False, **kwargs)
    assert Counted.calls == 0


def test_lenient_forms_are_read_as_meant(tmp_path):
    """A lone name is one defense (not its letters), a lone epsilon one epsilon, a Path a suite, a
    bfloat16 x is widened; an existing file as out is refused before any work."""
    import robench
    from robench.api import _check_arguments, _numpy
    from robench.errors import RobenchError

    names, suite, eps, norm = _check_arguments(defenses="none", suite=tmp_path / "s.toml", norm="linf", epsilons=0.1,
                                               seed=0, normalize=(0.5, 0.5), out=None)
    assert names == ("none",) and suite == str(tmp_path / "s.toml") and eps == (0.1,) and norm == ((0.5,), (0.5,))
    assert _numpy(torch.ones(2, dtype=torch.bfloat16), "x").dtype == np.float32
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RobenchError, match="out="):
        robench.evaluate(torch.nn.Flatten(), torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), out=blocker, progress=False)
