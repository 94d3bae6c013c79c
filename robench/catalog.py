"""What ``robench list`` shows of the built-in registries, kept in ``catalog.json`` beside this file.

Filling the registries imports torch and every model module (seconds); listing them should not.
The catalog is regenerated from the registries with ``python -m robench.catalog`` and a test fails
when it differs from them, so it cannot go stale unnoticed. ``robench list`` reads it only when no
plugin (entry point group ``robench.plugins``) could add entries; otherwise it imports everything.
"""
from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).with_name("catalog.json")
SECTIONS = ("datasets", "models", "defense factories", "attacks", "certifiers")


def _threats(entry: Any) -> str:
    epsilons = entry.extra.get("epsilons")
    return f"  [default eps: {', '.join(f'{n} {e:g}' for n, e in epsilons.items())}]" if epsilons else ""


def _norms(entry: Any) -> str:
    norms = getattr(entry.factory, "norms", ())
    return f"  [{', '.join(norms)}{'' if getattr(entry.factory, 'sound', True) else '; not sound'}]" if norms else ""


def _parameters(entries: Any) -> dict[str, list[list[str]]]:
    """Per entry, its declared hyperparameters (``robench.hyperparameters``): [name, default,
    what it admits, doc]."""
    from robench.hyperparameters import declarations

    return {e.name: [[name, repr(d.default), d.expected(), d.doc] for name, d in declarations(e.factory).items()]
            for e in entries}


def build() -> dict[str, Any]:
    """The sections from the live registries (imports torch and the built-in modules), and
    ``parameters``: each attack's and certifier's declared hyperparameters."""
    from robench.registry import attacks, certifiers, datasets, defenses, load_builtins, models

    load_builtins()
    return {
        "datasets": [[e.name, e.description + _threats(e)] for e in datasets.entries()],
        "models": [[e.name, e.description] for e in models.entries()],
        "defense factories": [[e.name, e.description] for e in defenses.entries()],
        "attacks": [[e.name, e.description] for e in attacks.entries()],
        "certifiers": [[e.name, e.description + _norms(e)] for e in certifiers.entries()],
        "parameters": {"attacks": _parameters(attacks.entries()), "certifiers": _parameters(certifiers.entries())},
    }


def has_plugins() -> bool:
    return bool(list(entry_points(group="robench.plugins")))


def sections() -> dict[str, Any]:
    """The catalog file's sections, or the live registries' when a plugin is installed or the
    file is missing or unreadable."""
    if not has_plugins():
        try:
            found = json.loads(CATALOG.read_text())
            if (isinstance(found, dict) and all(isinstance(found.get(s), list) for s in SECTIONS)
                    and isinstance(found.get("parameters"), dict)):
                return found
        except (OSError, ValueError):
            pass
    return build()


def main() -> None:
    CATALOG.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {CATALOG}")


if __name__ == "__main__":
    main()
