"""TOML cards: registered defenses (``defenses/*.toml``) and attack suites (``attacks/*.toml``).

A card is a declaration, not code: it names a registered factory, or a ``package.module:callable``
reference (trusted code, run only because the card's author asked for it), and its parameters.
Unknown keys are an error that names the key and the valid ones, so a typo never silently falls
back to a default.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from robench.errors import RobenchError, did_you_mean

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class DefenseCard:
    name: str
    factory: str
    params: dict[str, Any] = field(default_factory=dict)
    paper: str = ""
    description: str = ""
    differentiable: bool | None = None
    randomized: bool | None = None
    tolerance: float | None = None
    #: in the default set (``robench evaluate`` with no --defense); slow defenses opt out
    default: bool = True
    source: str = ""


@dataclass(frozen=True)
class AttackSpec:
    attack: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    #: gradient attacks: BPDA/EOT where the target masks or randomizes gradients (Athalye et al. 2018)
    adaptive: bool = True
    #: EOT draws per gradient on randomized targets (None: the runner's default)
    eot_samples: int | None = None


@dataclass(frozen=True)
class CertifySpec:
    """A ``[[certify]]`` table of a suite: a certifier (``method``: a registered name, a
    ``package.module:Class``, or a ``file.py:Class`` found beside the card) and its parameters."""

    method: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteCard:
    name: str
    attacks: tuple[AttackSpec, ...]
    description: str = ""
    source: str = ""
    #: each attack runs only on the examples no earlier attack of the suite broke (AutoAttack's way)
    cascade: bool = False
    #: certifiers run beside the attacks: the other side of the bracket
    certifiers: tuple[CertifySpec, ...] = ()


DEFENSE_KEYS = {
    "name": str, "factory": str, "params": dict, "paper": str, "description": str,
    "differentiable": bool, "randomized": bool, "tolerance": (int, float),
    "default": bool,
}
SUITE_KEYS = {"name": str, "description": str, "attack": list, "cascade": bool, "certify": list}
CERTIFY_KEYS = {"method": str, "label": str, "params": dict}
ATTACK_KEYS = {"attack": str, "label": str, "params": dict, "adaptive": bool, "eot_samples": int}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RobenchError(f"card {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RobenchError(f"cannot read card {str(path)!r}: {exc}") from None
    return parse_toml(text, str(path))


def parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise RobenchError(f"card {where!r} is nested too deeply to be a card; see the README's 'Cards' section") from None
    except tomllib.TOMLDecodeError as exc:
        raise RobenchError(f"card {where!r} is not valid TOML: {exc}; see the README's 'Cards' section for the format") from None


def _check_keys(table: dict[str, Any], schema: dict[str, Any], where: str, required: tuple[str, ...]) -> None:
    for key, value in table.items():
        if key not in schema:
            raise RobenchError(f"{where}: unknown key {key!r}{did_you_mean(key, list(schema))}")
        expected = schema[key]
        if not isinstance(value, expected) or (expected in (int, float, (int, float)) and isinstance(value, bool)):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            kind = {"dict": "table", "list": "array of tables", "str": "string", "bool": "true/false"}.get(names, names)
            raise RobenchError(f"{where}: key {key!r} must be a {kind}, got {type(value).__name__} {value!r}")
    for key in required:
        if key not in table:
            raise RobenchError(f"{where}: missing required key {key!r}")
    name = table.get("name")
    if name is not None and not _NAME.match(name):
        raise RobenchError(f"{where}: name {name!r} must be letters, digits, '.', '_', '+' or '-'")


def parse_defense_card(data: dict[str, Any], where: str) -> DefenseCard:
    _check_keys(data, DEFENSE_KEYS, f"defense card {where}", ("name", "factory"))
    tolerance = data.get("tolerance")
    if tolerance is not None and not 0 <= tolerance <= 1:
        raise RobenchError(f"defense card {where}: tolerance must lie in [0, 1], got {tolerance}")
    return DefenseCard(
        name=data["name"], factory=_beside_card(data["factory"], where), params=dict(data.get("params", {})),
        paper=data.get("paper", ""), description=data.get("description", ""),
        differentiable=data.get("differentiable"), randomized=data.get("randomized"),
        tolerance=None if tolerance is None else float(tolerance), default=data.get("default", True),
        source=where,
    )


def _beside_card(factory: str, where: str) -> str:
    """A relative ``file.py:callable`` found next to the card is that file (cards travel with their
    code); anything else is left as written (a module path, or a file relative to the current directory)."""
    module, _, attribute = factory.rpartition(":")
    if not module.endswith(".py") or Path(module).is_absolute():
        return factory
    beside = Path(where).parent / module
    return f"{beside}:{attribute}" if Path(where).is_file() and beside.is_file() else factory


def _method_beside_card(method: str, where: str) -> str:
    """A ``file.py:Class`` certifier is the file beside the card, never one in the current
    directory (a card names code to run; its code travels with it). Absolute paths and module
    references are left as written."""
    module, _, attribute = method.rpartition(":")
    if not module.endswith(".py") or Path(module).is_absolute():
        return method
    if not Path(where).is_file():
        raise RobenchError(f"suite card {where}: certifier {method!r} names a file relative to the card, but the card "
                           "is not a file; give the file's absolute path")
    return f"{(Path(where).resolve().parent / module)}:{attribute}"


def _labelled_tables(data: dict[str, Any], kind: str, schema: dict[str, Any], where: str):
    """Each ``[[attack]]`` or ``[[certify]]`` table, checked, with where it is and its label
    (default: the name of what it runs, ``attack`` or ``method``)."""
    named_by = "attack" if kind == "attack" else "method"
    for i, entry in enumerate(data.get(kind, [])):
        at = f"suite card {where}, {kind} #{i + 1}"
        if not isinstance(entry, dict):
            raise RobenchError(f"{at}: each [[{kind}]] must be a table")
        _check_keys(entry, schema, at, (named_by,))
        label = entry.get("label", str(entry[named_by]).rpartition(":")[2])  # a reference: its callable's name
        if not _NAME.match(label):
            raise RobenchError(f"{at}: label {label!r} must be letters, digits, '.', '_', '+' or '-'")
        yield at, entry, label


def parse_suite_card(data: dict[str, Any], where: str) -> SuiteCard:
    _check_keys(data, SUITE_KEYS, f"suite card {where}", ("name",))
    if "attack" not in data and "certify" not in data:
        raise RobenchError(f"suite card {where}: missing required key 'attack'; list [[attack]] (or [[certify]]) tables")
    specs: list[AttackSpec] = []
    for at, entry, label in _labelled_tables(data, "attack", ATTACK_KEYS, where):
        eot = entry.get("eot_samples")
        if eot is not None and eot < 1:
            raise RobenchError(f"{at}: eot_samples must be >= 1, got {eot}")
        specs.append(AttackSpec(entry["attack"], label, dict(entry.get("params", {})),
                                adaptive=entry.get("adaptive", True), eot_samples=eot))
    certifiers: list[CertifySpec] = []
    for _, entry, label in _labelled_tables(data, "certify", CERTIFY_KEYS, where):
        certifiers.append(CertifySpec(_method_beside_card(entry["method"], where), label, dict(entry.get("params", {}))))
    if not specs and not certifiers:
        raise RobenchError(f"suite card {where}: lists no attacks; add at least one [[attack]] table")
    labels = [s.label for s in specs] + [c.label for c in certifiers]
    duplicates = sorted({l for l in labels if labels.count(l) > 1})
    if duplicates:
        raise RobenchError(f"suite card {where}: label(s) {', '.join(duplicates)} used twice; give each attack a distinct label")
    if "worst-case" in labels:
        raise RobenchError(f"suite card {where}: 'worst-case' is reserved for the combined result; pick another label")
    return SuiteCard(data["name"], tuple(specs), data.get("description", ""), where, cascade=data.get("cascade", False),
                     certifiers=tuple(certifiers))


#: the environment variable that names extra card folders (os.pathsep-separated), each holding
#: defenses/ and attacks/; ``robench evaluate`` reads it once, into the configuration's ``card_dirs``
CARDS_ENV = "ROBENCH_CARDS"


def env_card_dirs() -> tuple[str, ...]:
    """The folders ``$ROBENCH_CARDS`` names, as absolute paths."""
    return tuple(str(Path(p).resolve()) for p in os.environ.get(CARDS_ENV, "").split(os.pathsep) if p)


def card_dirs(kind: str, folders: tuple[str, ...] = ()) -> list[Path]:
    """Where named cards are looked up: the folders the user named (``folders``: ``--cards DIR``,
    the configuration's ``card_dirs``; then ``$ROBENCH_CARDS``), then robench's own. Never the
    current directory by default: a card names code to run, and a card that merely lies in the
    folder one works in was not named by the user."""
    dirs: list[Path] = [Path(p) / kind for p in (*folders, *env_card_dirs())]
    dirs.append(Path(__file__).resolve().parent.parent / kind)  # the source tree (an editable install)
    dirs.append(Path(sys.prefix) / "share" / "robench" / kind)  # a wheel's copy (setup.cfg data_files)
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def _named_cards(kind: str, folders: tuple[str, ...] = ()) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in card_dirs(kind, folders):
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".toml") or os.sep in spec or "/" in spec


def load_defense_card(spec: str, folders: tuple[str, ...] = ()) -> DefenseCard:
    """``spec`` is a card path, or the name of a card in a card directory (``card_dirs``)."""
    if _looks_like_path(spec):
        return parse_defense_card(_read_toml(Path(spec)), spec)
    cards = _named_cards("defenses", folders)
    if spec in cards:
        return parse_defense_card(_read_toml(cards[spec]), str(cards[spec]))
    raise RobenchError(f"unknown defense {spec!r}{did_you_mean(spec, list(cards))}; or give the path of a card")


def load_suite_card(spec: str, folders: tuple[str, ...] = ()) -> SuiteCard:
    if _looks_like_path(spec):
        return parse_suite_card(_read_toml(Path(spec)), spec)
    cards = _named_cards("attacks", folders)
    if spec in cards:
        return parse_suite_card(_read_toml(cards[spec]), str(cards[spec]))
    raise RobenchError(f"unknown suite {spec!r}{did_you_mean(spec, list(cards))}; or give the path of a card")


def all_defense_cards(*, default_only: bool = False, folders: tuple[str, ...] = ()) -> list[DefenseCard]:
    """Every defense card found; ``default_only`` drops cards with ``default = false``."""
    cards = [parse_defense_card(_read_toml(p), str(p)) for p in _named_cards("defenses", folders).values()]
    return [c for c in cards if c.default or not default_only]


def defense_card_names() -> list[str]:
    return sorted(_named_cards("defenses"))


def suite_card_names() -> list[str]:
    return sorted(_named_cards("attacks"))
