"""Cards (robench/cards.py): strict parsing with errors that name the key and the fix."""
from pathlib import Path

import pytest

from robench.cards import load_defense_card, load_suite_card, parse_defense_card, parse_suite_card, parse_toml
from robench.errors import RobenchError
from robench.resolve import build_attack


def test_repository_cards_parse():
    assert load_defense_card("bit-depth-3").params == {"bits": 3}
    suite = load_suite_card("quick")
    assert [s.label for s in suite.attacks] == ["pgd-plain", "pgd", "spsa"]
    assert [s.adaptive for s in suite.attacks] == [False, True, True]


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "attacks").glob("*.toml")), ids=lambda p: p.stem)
def test_every_repository_suite_builds_its_attacks(path):
    """A shipped suite card names registered attacks with parameters they accept."""
    suite = load_suite_card(path.stem)
    assert suite.name == path.stem and (suite.attacks or suite.certifiers)
    for spec in suite.attacks:
        build_attack(spec)


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\nfactory = "none"\nparms = {}', "unknown key 'parms'.*did you mean 'params'"),
        ('name = "x"', "missing required key 'factory'"),
        ('name = "x"\nfactory = 3', "'factory' must be a string"),
        ('name = "x"\nfactory = "none"\nparams = 3', "'params' must be a table"),
        ('name = "bad name!"\nfactory = "none"', "must be letters"),
        ('name = "x"\nfactory = "none"\ntolerance = 2.0', "tolerance must lie in"),
        ('name = "x"\nfactory = "none"\ndifferentiable = "no"', "true/false"),
    ],
)
def test_bad_defense_cards(text, message):
    with pytest.raises(RobenchError, match=message):
        parse_defense_card(parse_toml(text, "t.toml"), "t.toml")


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "s"', "missing required key 'attack'"),
        ('name = "s"\nattack = []', "lists no attacks"),
        ('name = "s"\n[[attack]]\nattack = "pgd"\n[[attack]]\nattack = "pgd"', "used twice"),
        ('name = "s"\n[[attack]]\nattack = "pgd"\nlabel = "worst-case"', "reserved"),
        ('name = "s"\n[[attack]]\nattak = "pgd"', "unknown key 'attak'"),
    ],
)
def test_bad_suite_cards(text, message):
    with pytest.raises(RobenchError, match=message):
        parse_suite_card(parse_toml(text, "s.toml"), "s.toml")


def test_malformed_toml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(RobenchError, match="not valid TOML"):
        load_defense_card(str(bad))
    with pytest.raises(RobenchError, match="does not exist"):
        load_suite_card(str(tmp_path / "missing.toml"))
    with pytest.raises(RobenchError, match="unknown defense 'bit-depth-4'.*did you mean 'bit-depth-3'"):
        load_defense_card("bit-depth-4")
