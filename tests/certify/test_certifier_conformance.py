"""Every registered certifier honours the contract (DESIGN.md: one conformance test per registry).

For each certifier in ``robench.registry.certifiers`` and each norm it supports, on a toy target:
one status per example from the schema's vocabulary; every counterexample lies in the ball and
the data bounds and changes the prediction; and, for a certifier that declares itself ``sound``,
no point of a densely sampled ball (random points, and the box's corners under L-inf) changes the
prediction of an example it certified. A certifier that is not sound (smoothing: a probabilistic
certificate of the smoothed classifier) must still certify only examples the target classifies
correctly. A new certifier is covered the moment it is registered; give it a small budget in
SMALL, and a target in TARGETS if it needs a particular kind of defense.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robench import schema
from robench.certify import COUNTEREXAMPLE, make_certifier
from robench.defenses.noise import GaussianNoiseVote
from robench.method import Method
from robench.registry import certifiers, load_builtins
from robench.threat import ThreatModel

load_builtins()

#: a small budget per certifier, so the registry runs in seconds
SMALL = {"milp": {"time_limit": 5.0}, "smoothing": {"n0": 20, "n": 200, "batch": 200}}
#: epsilons that leave some examples certified and some not on the toy net
EPSILON = {"linf": 0.02, "l2": 0.1}
#: points sampled in each certified example's ball
BALL_SAMPLES = 2000


def toy_mlp() -> nn.Sequential:
    """Three classes from 1x4x4 inputs, Linear/ReLU only: what every bound-propagation certifier reads."""
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return net


def _smoothed(model: nn.Module) -> nn.Module:
    return GaussianNoiseVote(model, sigma=0.25, votes=64, seed=0).eval()


#: what a certifier is run on, when not the plain network
TARGETS = {"smoothing": _smoothed}


def _cases():
    for name in certifiers.names():
        for norm in ("linf", "l2"):
            if make_certifier(name, **SMALL.get(name, {})).supports(norm):
                yield name, norm


@pytest.fixture(scope="module")
def toy():
    model = toy_mlp().eval()
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 3  # two examples misclassified at x: never certified
    return model, x, y


def _ball_points(threat: ThreatModel, x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points of the ball around one example ``x`` (1 x ...), inside the data bounds: random
    directions at random radii, the ball's surface, and (L-inf) the box's corners."""
    shape = (n, *x.shape[1:])
    if threat.norm == "linf":
        uniform = (torch.rand(shape, generator=generator) * 2 - 1) * threat.epsilon
        corners = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0) * threat.epsilon
        delta = torch.cat([uniform, corners])
    else:
        direction = torch.randn(shape, generator=generator)
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, *[1] * (len(shape) - 1))
        radius = torch.rand(n, generator=generator).sqrt().view(-1, *[1] * (len(shape) - 1))
        delta = torch.cat([direction * radius, direction]) * threat.epsilon
    points = (x + delta).clamp(*threat.bounds)
    assert bool(threat.contains(points, x.expand_as(points), tolerance=1e-5).all())
    return points


@pytest.mark.parametrize("name, norm", list(_cases()))
def test_certifier_contract(toy, name, norm):
    model, x, y = toy
    certifier = make_certifier(name, **SMALL.get(name, {}))
    target = TARGETS.get(name, lambda m: m)(model)
    threat = ThreatModel(norm, EPSILON[norm])
    certifier.check(target, threat, tuple(x.shape[1:]))
    seeds = torch.arange(len(x), dtype=torch.long)
    result = certifier.certify(target, x, y, threat, seeds=seeds)

    assert result.status.shape == (len(x),) and result.counterexample.shape == x.shape
    names = result.names()
    assert set(names) <= set(schema.CERTIFY_STATUSES) - {schema.NOT_CERTIFIED}
    assert isinstance(certifier, Method), "a certifier declares the method contract (robench.method)"
    assert isinstance(certifier.sound, bool) and certifier.budget(threat) >= 0

    with torch.no_grad():
        for i in (result.status == COUNTEREXAMPLE).nonzero().flatten().tolist():
            proposal = result.counterexample[i:i + 1]
            assert bool(threat.contains(proposal, x[i:i + 1]).all()), f"{name}: counterexample {i} leaves the ball"
            assert int(target(proposal).argmax(1)) != int(y[i]), f"{name}: counterexample {i} is classified correctly"

        certified = result.certified.nonzero().flatten().tolist()
        assert not {0, 1} & set(certified), f"{name} certified an example misclassified at x"
        generator = torch.Generator().manual_seed(2)
        for i in certified:
            if not certifier.sound:
                assert int(target(x[i:i + 1]).argmax(1)) == int(y[i])
                continue
            points = _ball_points(threat, x[i:i + 1], BALL_SAMPLES, generator)
            changed = int((model(points).argmax(1) != y[i]).sum())
            assert changed == 0, f"{name} certified example {i}, but {changed} sampled points of its ball change the prediction"


def test_the_toy_cases_reach_every_answer(toy):
    """The contract test above is not vacuous: on the toy net some examples are certified and some are not."""
    model, x, y = toy
    result = make_certifier("milp", **SMALL["milp"]).certify(model, x, y, ThreatModel("linf", EPSILON["linf"]))
    assert result.certified.any() and not result.certified.all()
