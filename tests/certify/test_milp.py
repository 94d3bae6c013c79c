"""Exact verification (robench/certify/milp.py): it agrees with an exhaustive grid on a 2-D toy
ReLU network, its counterexamples verify, it refuses L2, and it times out into unknown."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robench.certify.milp as milp_module
from robench.certify import CERTIFIED, COUNTEREXAMPLE, CROWN, IBP, MILP, UNKNOWN
from robench.errors import RobenchError
from robench.threat import ThreatModel
from robench.verify import verify

GRID = 301  # points per axis: 90,601 inputs per (point, epsilon)


def toy() -> nn.Module:
    """2 inputs in [0, 1]^2, two hidden ReLU layers of 16, 3 classes (seeded)."""
    generator = torch.Generator().manual_seed(11)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 2.0)
    return model.eval()


def _grid_misclassified(model, x, y, eps):
    """Whether some grid point of the box around x (ball ∩ [0, 1]^2, edges included) is misclassified."""
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    a = torch.linspace(float(lo[0]), float(hi[0]), GRID)
    b = torch.linspace(float(lo[1]), float(hi[1]), GRID)
    points = torch.cartesian_prod(a, b)
    with torch.no_grad():
        return bool((model(points).argmax(1) != y).any())


def test_milp_agrees_with_exhaustive_search_on_a_2d_network():
    model = toy()
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(12, 2, generator=generator)
    y = model(x).argmax(1)
    outcomes, programs = [], 0
    solved_only_by_program = beyond_crown = 0
    for eps in (0.02, 0.05, 0.1, 0.2):
        threat = ThreatModel("linf", eps)
        on_grid = [_grid_misclassified(model, x[i], int(y[i]), eps) for i in range(len(x))]
        for corners in (True, False):
            result = MILP(time_limit=20.0, try_corners=corners).certify(model, x, y, threat)
            assert not result.unknown.any()
            found = result.found_counterexample
            check = verify(model, x[found], result.counterexample[found], y[found], threat)
            assert check.broken.all(), "every counterexample is in the ball and misclassified"
            assert found.tolist() == on_grid, (eps, corners)
            outcomes += result.status.tolist()
            if not corners:
                programs += int(result.details["programs"].sum())
                solved_only_by_program += int((result.details["programs"] > 0).sum())
        # MILP never certifies less than CROWN, CROWN never less than IBP
        crown = CROWN().certify(model, x, y, threat).certified
        ibp = IBP().certify(model, x, y, threat).certified
        assert (result.certified | ~crown).all() and (crown | ~ibp).all()
        beyond_crown += int((result.certified & ~crown).sum())
    assert CERTIFIED in outcomes and COUNTEREXAMPLE in outcomes
    assert solved_only_by_program >= 5, "examples that CROWN alone did not settle"
    assert beyond_crown >= 2, "examples only the program certifies (an infeasible program, checked by the grid)"


def _digits_mlp():
    from robench.data import load_digits

    data = load_digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
    return model.eval(), data.x_test[:30], data.y_test[:30]


@pytest.fixture(scope="module")
def digits_mlp():
    return _digits_mlp()


def test_on_a_digits_mlp_milp_settles_every_example_and_crown_beats_ibp(digits_mlp):
    model, x, y = digits_mlp
    threat = ThreatModel("linf", 0.03)
    ibp = IBP().certify(model, x, y, threat)
    crown = CROWN().certify(model, x, y, threat)
    exact = MILP().certify(model, x, y, threat)
    assert not exact.unknown.any()
    # honestly found: this MLP at this epsilon is where intervals fail and CROWN does not
    assert (crown.certified & ~ibp.certified).sum() >= 10
    assert (exact.certified | ~crown.certified).all()
    found = exact.found_counterexample
    assert verify(model, x[found], exact.counterexample[found], y[found], threat).broken.all()
    assert torch.equal(exact.counterexample[~found], x[~found])
    assert (exact.seconds > 0).all() and exact.seconds.max() < 10.0


def test_wrong_labels_are_their_own_counterexamples(digits_mlp):
    model, x, y = digits_mlp
    wrong = (model(x[:4]).argmax(1) + 1) % 10
    threat = ThreatModel("linf", 0.01)
    for certifier in (IBP(), CROWN(), MILP()):
        result = certifier.certify(model, x[:4], wrong, threat)
        assert result.found_counterexample.all()
        assert torch.equal(result.counterexample, x[:4])
        assert verify(model, x[:4], result.counterexample, wrong, threat).broken.all()


def test_time_out_is_unknown(digits_mlp, monkeypatch):
    model, x, y = digits_mlp
    threat = ThreatModel("linf", 0.1)

    class TimedOut:
        status, x = 1, None

    monkeypatch.setattr(milp_module, "milp", lambda *args, **kwargs: TimedOut())
    result = MILP(time_limit=1.0).certify(model, x[:6], y[:6], threat)
    needed = result.details["programs"] > 0
    assert needed.any()
    assert (result.status[needed] == UNKNOWN).all() and result.details["timed_out"][needed].all()


def test_unconfirmed_solutions_are_unknown(digits_mlp, monkeypatch):
    """A solver point that the model's own forward pass classifies correctly is no counterexample."""
    model, x, y = digits_mlp
    threat = ThreatModel("linf", 0.1)
    clean = x[0].flatten().double().numpy()

    class CleanPoint:  # "optimal", at the clean input (which the model classifies correctly)
        status = 0

        def __init__(self, c):
            self.x = np.concatenate([clean, np.zeros(len(c) - len(clean))])

    monkeypatch.setattr(milp_module, "milp", lambda c, **kwargs: CleanPoint(c))
    result = MILP(try_corners=False).certify(model, x[:1], y[:1], threat)
    assert int(result.details["programs"][0]) > 0
    assert result.status.tolist() == [UNKNOWN]


def test_milp_refuses_l2_and_large_layers(digits_mlp):
    model, x, y = digits_mlp
    with pytest.raises(RobenchError, match="milp verifies L-inf balls only"):
        MILP().certify(model, x, y, ThreatModel("l2", 0.5))
    with pytest.raises(RobenchError, match="max_dense"):
        MILP(max_dense=100).certify(model, x, y, ThreatModel("linf", 0.1))
    with pytest.raises(RobenchError, match="time_limit must be a finite number > 0"):
        MILP(time_limit=0)
