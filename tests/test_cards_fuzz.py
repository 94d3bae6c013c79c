"""Property-based fuzzing of the card parser (robench/cards.py): any text, any table, only two outcomes.

A card is either parsed into a card object or rejected with a RobenchError whose message is one
line; no other exception ever escapes, whatever the bytes.
"""
from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robench.cards import (
    ATTACK_KEYS,
    DEFENSE_KEYS,
    DefenseCard,
    SuiteCard,
    parse_defense_card,
    parse_suite_card,
    parse_toml,
)
from robench.errors import RobenchError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=10)
defense_tables = st.dictionaries(st.one_of(st.sampled_from(sorted(DEFENSE_KEYS)), st.text(max_size=10)), values, max_size=8)
attack_entries = st.dictionaries(st.one_of(st.sampled_from(sorted(ATTACK_KEYS)), st.text(max_size=10)), values, max_size=6)
suite_tables = st.fixed_dictionaries(
    {"name": st.one_of(st.text(alphabet=string.ascii_letters + "-_.", min_size=1, max_size=10), values),
     "attack": st.one_of(st.lists(attack_entries, max_size=4), values)},
    optional={"description": values, "extra": values},
)
toml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(['name = "x"', 'factory = "bit_depth"', "[params]", "bits = 3", "bits = 'a'",
                              "[[attack]]", 'attack = "pgd"', "label = 1", "= =", "[params", 'name = """',
                              "default = false", "tolerance = 2.0", "x = [1, {", "\x00"]), max_size=8).map("\n".join),
)


def _one_line(error: RobenchError) -> bool:
    return "\n" not in str(error).strip()


@FUZZ
@given(defense_tables)
def test_defense_tables_parse_or_fail_cleanly(table):
    try:
        card = parse_defense_card(table, "fuzz.toml")
    except RobenchError as error:
        assert _one_line(error)
    else:
        assert isinstance(card, DefenseCard) and isinstance(card.name, str) and isinstance(card.factory, str)


@FUZZ
@given(suite_tables)
def test_suite_tables_parse_or_fail_cleanly(table):
    try:
        suite = parse_suite_card(table, "fuzz.toml")
    except RobenchError as error:
        assert _one_line(error)
    else:
        assert isinstance(suite, SuiteCard) and suite.attacks
        labels = [a.label for a in suite.attacks]
        assert len(set(labels)) == len(labels) and "worst-case" not in labels


@FUZZ
@given(toml_text)
def test_any_text_parses_or_fails_cleanly(text):
    try:
        data = parse_toml(text, "fuzz.toml")
        parse_defense_card(data, "fuzz.toml")
    except RobenchError as error:
        assert _one_line(error)
