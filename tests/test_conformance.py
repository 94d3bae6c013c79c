"""Every registered attack honours the contract, on toy targets (DESIGN.md: one conformance test).

For each attack in the registry and each norm it supports: the proposals have the inputs' shape,
lie in the threat model's ball and in the data bounds, query counts are one non-negative integer
per example, the same seeds give the same proposals, and an example's proposal does not depend on
the other examples of its batch. A new attack is covered the moment it is registered; give it a
small budget in SMALL below if its defaults are slow.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robench import rng
from robench_testing import SignalNet
from robench.errors import RobenchError
from robench.method import Method
from robench.registry import attacks, load_builtins
from robench.target import is_differentiable, is_randomized
from robench.testing import ToyImageNet
from robench.threat import ThreatModel

load_builtins()

#: a small budget per attack, so the whole registry runs in seconds
SMALL = {
    "spsa": {"steps": 3, "samples": 8},
    "square": {"queries": 30},
    "apgd-ce": {"steps": 5},
    "apgd-dlr": {"steps": 5},
    "apgd-t": {"steps": 5, "n_target_classes": 2},
    "fab-t": {"steps": 5},
    "pgd": {"steps": 5},
    "bim": {"steps": 3},
    "mifgsm": {"steps": 3},
    "deepfool": {"steps": 3},
    "fmn": {"steps": 5},
    "cw": {"steps": 5, "binary_search_steps": 1},
    "ddn": {"steps": 5},
    "random-search": {"samples": 300},
    "hop-skip-jump": {"steps": 3, "initial_gradient_eval_steps": 20, "max_gradient_eval_steps": 40},
}
EPSILON = {"linf": 0.1, "l2": 0.5}


#: three classes from 1x6x6 inputs: small, smooth, deterministic (the kit's own toy)
ToyCNN = ToyImageNet


def _cases():
    for name in attacks.names():
        for norm in ("linf", "l2"):
            yield pytest.param(name, norm, id=f"{name}-{norm}")


@pytest.fixture(scope="module")
def toy():
    generator = torch.Generator().manual_seed(1)
    model = ToyCNN().eval()
    x = torch.rand(6, 1, 6, 6, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _run(name, norm, model, x, y, ids):
    threat = ThreatModel(norm, EPSILON[norm], (0.0, 1.0))
    attack = attacks.get(name)(**SMALL.get(name, {}))
    seeds = rng.example_seeds(0, f"conformance|{name}", ids)
    return threat, attack.run(model, x, y, threat, seeds=seeds)


@pytest.mark.parametrize("name, norm", list(_cases()))
def test_attack_contract(toy, name, norm):
    model, x, y = toy
    ids = torch.arange(len(x))
    try:
        threat, result = _run(name, norm, model, x, y, ids)
    except RobenchError as error:
        assert f"no {norm} version" in str(error), error  # the only acceptable refusal: an unsupported norm
        pytest.skip(str(error))
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert threat.contains(result.x_adv, x, tolerance=1e-6).all(), "proposals must lie in the ball and the bounds"
    assert result.queries.shape == (len(x),) and not result.queries.is_floating_point()
    assert (result.queries >= 0).all() and (result.queries > 0).any()
    declared = attacks.get(name)(**SMALL.get(name, {}))
    assert isinstance(declared, Method) and declared.sound is False, "an attack declares the method contract and certifies nothing"

    _, again = _run(name, norm, model, x, y, ids)
    assert torch.equal(again.x_adv, result.x_adv), "same seeds, same proposals"

    _, alone = _run(name, norm, model, x[2:3], y[2:3], ids[2:3])
    assert torch.allclose(alone.x_adv, result.x_adv[2:3], atol=1e-5), "an example's proposal must not depend on its batch"


def _defense_cards():
    """Every registered defense card (defenses/*.toml and any on the card path), on each kind of
    input its factory declares: no hand-written list."""
    from robench.cards import all_defense_cards
    from robench.registry import defenses
    from robench.target import supports_input

    for card in all_defense_cards():
        slow = [pytest.mark.slow] if not card.default else []  # cards that opt out of the default set are slow
        for kind in ("image", "sequence"):
            if supports_input(defenses.entry(card.factory).inputs, kind):
                yield pytest.param(card, kind, id=f"{card.name}-{kind}", marks=slow)


def _toy_data(kind: str):
    """A tiny data set labelled by a toy model: images 1 x 6 x 6 or sequences 1 x 12."""
    from robench.data import Dataset

    model = (ToyCNN() if kind == "image" else SignalNet()).eval()
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(48, 1, 6, 6, generator=generator) if kind == "image" else torch.rand(48, 1, 12, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, Dataset(f"toy-{kind}", x[:36], y[:36], x[36:], y[36:], num_classes=3)


@pytest.mark.parametrize("card, kind", list(_defense_cards()))
def test_defense_card_contract(card, kind):
    """Each card builds on a model and data set of a kind it declares; logits of the right shape and
    finite; flags are booleans (as the card says, where it says); BPDA/EOT give a usable gradient."""
    from robench.attacks.adaptive import adaptive_target
    from robench.resolve import build_defense

    model, data = _toy_data(kind)
    target = build_defense(card, model, data)
    x, y = data.x_test[:6], data.y_test[:6]
    with torch.no_grad():
        logits = target(x)
    assert logits.shape == (len(x), 3) and torch.isfinite(logits).all()
    assert isinstance(is_differentiable(target), bool) and isinstance(is_randomized(target), bool)
    if card.differentiable is not None:
        assert is_differentiable(target) is card.differentiable
    if card.randomized is not None:
        assert is_randomized(target) is card.randomized
    attackable = adaptive_target(target, eot_samples=2)
    x_grad = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(attackable(x_grad), y).backward()
    assert x_grad.grad is not None and torch.isfinite(x_grad.grad).all()
    if not is_differentiable(target):
        assert x_grad.grad.abs().sum() > 0, "BPDA must give a non-zero gradient where the raw one is masked"


def _untrained_defense_factories():
    """Registered defenses that wrap a model without training anything (trained ones have their own tests)."""
    import inspect

    from robench.registry import defenses

    for name in defenses.names():
        params = inspect.signature(defenses.get(name)).parameters
        if "data" not in params:
            yield pytest.param(name, id=name)


@pytest.mark.parametrize("name", list(_untrained_defense_factories()))
def test_defense_contract(toy, name):
    """Logits of the right shape and finite; flags are booleans; BPDA/EOT give a usable gradient."""
    from robench.attacks.adaptive import adaptive_target
    from robench.registry import defenses
    from robench.target import is_differentiable, is_randomized

    model, x, y = toy
    target = defenses.get(name)(model).eval()
    with torch.no_grad():
        logits = target(x)
    assert logits.shape == (len(x), 3) and torch.isfinite(logits).all()
    assert isinstance(is_differentiable(target), bool) and isinstance(is_randomized(target), bool)
    attackable = adaptive_target(target, eot_samples=2)
    x_grad = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(attackable(x_grad), y).backward()
    assert x_grad.grad is not None and torch.isfinite(x_grad.grad).all()
