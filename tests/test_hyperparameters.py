"""Every registered attack and certifier declares each keyword of its constructor once
(``robench.hyperparameters``), with the signature's default, and refuses a value out of range with
the one message; a card's values meet the same declarations before a run starts."""
from __future__ import annotations

import inspect
import math
import re

import pytest

from robench.errors import RobenchError
from robench.hyperparameters import Choice, Flag, Float, Hyperparameter, Int, declarations
from robench.registry import attacks, certifiers, load_builtins

load_builtins()
import robench.certify  # noqa: E402,F401  (registers the certifiers)

FACTORIES = [("attack", e.name, e.factory) for e in attacks.entries()] + \
            [("certifier", e.name, e.factory) for e in certifiers.entries()]
IDS = [f"{kind}:{name}" for kind, name, _ in FACTORIES]
#: the one message format
MESSAGE = r"^(?P<owner>.+): (?P<name>\w+) must be (?P<expected>.+), got (?P<value>.+)$"


def keywords(factory) -> dict[str, inspect.Parameter]:
    signature = inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)
    return {n: p for n, p in signature.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def valid(declaration: Hyperparameter):
    """A valid value other than None: the default, else the minimum (or just above it)."""
    if declaration.default is not None:
        return declaration.default
    limit, inclusive = declaration.minimum()
    if declaration.kind is int:
        return int(limit) if inclusive else int(limit) + 1
    return float(limit) if inclusive else float(limit) * 2 or 1.0


@pytest.mark.parametrize("kind, name, factory", FACTORIES, ids=IDS)
def test_every_keyword_is_declared_with_its_default(kind, name, factory):
    declared = declarations(factory)
    assert declared, f"{kind} {name} declares no hyperparameters"
    params = keywords(factory)
    assert set(params) == set(declared), f"{kind} {name}: undeclared {set(params) - set(declared)}, " \
                                         f"declared but no keyword {set(declared) - set(params)}"
    for key, parameter in params.items():
        assert parameter.default is not inspect.Parameter.empty, f"{name}: {key} has no default"
        assert parameter.default == declared[key].default and type(parameter.default) is type(declared[key].default), \
            f"{name}: {key} defaults to {parameter.default!r} but is declared with {declared[key].default!r}"
        assert declared[key].doc, f"{name}: {key} has no doc"
        assert declared[key].check(name, key, declared[key].default) == declared[key].default


@pytest.mark.parametrize("kind, name, factory", FACTORIES, ids=IDS)
def test_just_below_the_minimum_is_refused_with_the_one_message(kind, name, factory):
    built = factory()
    owner = built.name if hasattr(built, "name") else name
    for key, declaration in declarations(factory).items():
        if declaration.kind not in (int, float) or declaration.minimum() is None:
            continue
        bad = declaration.just_below()
        with pytest.raises(RobenchError) as error:
            factory(**{key: bad})
        found = re.match(MESSAGE, str(error.value))
        assert found, str(error.value)
        assert (found["owner"], found["name"], found["expected"], found["value"]) == \
            (owner, key, declaration.expected(), repr(bad))
        good = valid(declaration)
        assert type(getattr(factory(**{key: good}), key, None)) in (declaration.kind, type(None))


@pytest.mark.parametrize("kind, name, factory", FACTORIES, ids=IDS)
def test_bools_are_not_numbers_and_numbers_are_finite(kind, name, factory):
    for key, declaration in declarations(factory).items():
        if declaration.kind in (int, float):
            for bad in (True, math.nan, math.inf, "1"):
                with pytest.raises(RobenchError, match=rf": {key} must be {re.escape(declaration.expected())}, got "):
                    factory(**{key: bad})
        if declaration.kind is int:
            with pytest.raises(RobenchError, match=rf": {key} must be an? (even )?integer"):
                factory(**{key: 1.5})
        if declaration.kind is bool:
            with pytest.raises(RobenchError, match=rf": {key} must be true or false, got 1$"):
                factory(**{key: 1})


def test_the_kit_checks_the_declarations_of_registered_objects():
    from robench.attacks.pgd import PGD
    from robench.certify import Smoothing
    from robench.testing import check_hyperparameters_declared

    check_hyperparameters_declared(PGD())
    check_hyperparameters_declared(Smoothing())

    class Undeclared(PGD):
        def __init__(self, *, steps: int | None = None, extra: int = 1) -> None:
            super().__init__(steps=steps)

    with pytest.raises(AssertionError, match=r"keywords \['extra'\] are not declared"):
        check_hyperparameters_declared(Undeclared())


def test_the_one_message_in_words():
    assert Int(1, "d", ge=1).expected() == "an integer >= 1"
    assert Int(None, "d", ge=1).expected() == "an integer >= 1 or None"
    assert Int(128, "d", ge=2, multiple_of=2).expected() == "an even integer >= 2"
    assert Float(0.001, "d", gt=0, lt=0.5).expected() == "a finite number > 0 and < 0.5"
    assert Flag(True, "d").expected() == "true or false"
    assert Choice("crown", ("crown", "ibp"), "d").expected() == "one of 'crown', 'ibp'"
    with pytest.raises(RobenchError, match=r"^pgd: steps must be an integer >= 1 or None, got 0$"):
        Int(None, "d", ge=1).check("pgd", "steps", 0)
    assert Float(1.0, "d", gt=0).check("x", "y", 2) == 2.0 and type(Float(1.0, "d").check("x", "y", 2)) is float
    assert type(Int(1, "d").check("x", "y", 3)) is int


def test_int_given_for_a_float_is_stored_as_a_float():
    from robench.attacks.pgd import PGD
    from robench.certify import MILP

    assert type(PGD(rel_stepsize=1).rel_stepsize) is float
    assert repr(MILP(time_limit=2)) == ("MILP(time_limit=2.0, mip_rel_gap=1000000000.0, intermediate='crown', "
                                        "max_dense=16777216, try_corners=True)")


@pytest.mark.parametrize("value, expected", [
    ("0", "an integer >= 1 or None, got 0"),
    ("1.5", "an integer >= 1 or None, got 1.5"),
    ("true", "an integer >= 1 or None, got True"),
])
def test_a_card_value_gets_the_one_message_before_anything_is_built(tmp_path, value, expected):
    from robench.cards import load_suite_card
    from robench.resolve import build_attack

    card = tmp_path / "s.toml"
    card.write_text(f'name = "s"\n[[attack]]\nattack = "pgd"\nlabel = "mine"\n[attack.params]\nsteps = {value}\n')
    spec = load_suite_card(str(card)).attacks[0]
    with pytest.raises(RobenchError, match=re.escape(f"attack 'mine' (pgd): steps must be {expected}")):
        build_attack(spec)


def test_a_factory_that_declares_nothing_is_checked_by_its_hints():
    from robench.resolve import check_params

    def user_factory(*, steps: int = 3, rate: float = 0.1, name: str = "a", flag: bool = False, shape: tuple = ()):
        return None

    check_params(user_factory, "attack 'u'", {"steps": 2, "rate": 1, "name": "b", "flag": True, "shape": (1, 2)})
    for params, words in [({"steps": 1.5}, "steps must be an integer, got 1.5"),
                          ({"rate": math.nan}, "rate must be a finite number, got nan"),
                          ({"flag": "yes"}, "flag must be true or false, got 'yes'"),
                          ({"name": 3}, "name must be a string, got 3")]:
        with pytest.raises(RobenchError, match=re.escape(f"attack 'u': {words}")):
            check_params(user_factory, "attack 'u'", params)
