"""One registry per kind of thing (models, defenses, attacks, certifiers, datasets).

A new attack or defense is one decorated factory; nothing else changes. Names that contain a
colon (``package.module:callable``) are imported on demand: that is trusted user code, the only
way a card or a command line runs code that robench does not ship. Third-party packages can add
factories through the ``robench.plugins`` entry-point group (each entry point is a module that
registers on import).
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robench.errors import RobenchError, did_you_mean


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str = ""
    #: the input kinds it supports (``robench.target``: "image", "sequence", or "any")
    inputs: tuple[str, ...] = ("any",)
    extra: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Maps names to factories; resolves ``module:callable`` references."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        #: resolves names that are not registered (e.g. ``foolbox.ClassName``); None if unknown
        self.fallback: Callable[[str], Callable[..., Any] | None] | None = None

    def register(self, name: str, *, description: str = "", inputs: tuple[str, ...] | None = None, **extra: Any) -> Callable:
        """Decorate a factory. ``inputs`` declares the input kinds it supports (default: the
        factory's own ``inputs`` attribute, e.g. an attack class's, else any)."""

        def decorate(factory: Callable) -> Callable:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
            kinds = tuple(inputs if inputs is not None else getattr(factory, "inputs", ("any",)))
            self._entries[name] = Entry(name, factory, doc, kinds, dict(extra))
            return factory

        return decorate

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        load_builtins()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        load_builtins()
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            factory = import_reference(name, self.kind)
            return Entry(name, factory, "user code", tuple(getattr(factory, "inputs", ("any",))))
        if self.fallback is not None and (factory := self.fallback(name)) is not None:
            return Entry(name, factory, "resolved dynamically", tuple(getattr(factory, "inputs", ("any",))))
        raise RobenchError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}")

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).factory


def _load_file(path: str, reference: str, kind: str) -> Any:
    """Import a module from a file path (``path/to/mymodels.py:net``), under a name of its own."""
    import hashlib
    import importlib.util
    import sys
    from pathlib import Path

    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise RobenchError(f"{kind} reference {reference!r}: no file {str(file)!r}; give an existing .py file")
    name = f"robench_user_{file.stem}_{hashlib.blake2b(str(file).encode(), digest_size=4).hexdigest()}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RobenchError(f"{kind} reference {reference!r}: cannot load {str(file)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(file.parent))  # its own imports of neighbouring files
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(file.parent))
    return module


def import_reference(reference: str, kind: str = "object") -> Callable[..., Any]:
    """Import ``package.module:attribute`` or ``path/to/file.py:attribute`` (trusted code, by the
    user's own choice: a reference is the one way a card or a command line runs code)."""
    module_name, _, attribute = reference.rpartition(":")
    if not module_name or not attribute:
        raise RobenchError(f"bad {kind} reference {reference!r}: write it as package.module:callable or path/to/file.py:callable")
    try:
        if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
            module = _load_file(module_name, reference, kind)
        else:
            module = importlib.import_module(module_name)
    except RobenchError:
        raise
    except ImportError as exc:
        raise RobenchError(
            f"cannot import module {module_name!r} for {kind} {reference!r} ({exc}); "
            "check the name and that it is on PYTHONPATH, or give the file: path/to/file.py:callable"
        ) from None
    except (Exception, SystemExit) as exc:  # a syntax error, or code that raises or exits at import
        what = f"exited with {exc.code!r}" if isinstance(exc, SystemExit) else f"raised {type(exc).__name__}: {str(exc).strip()[:200]}"
        raise RobenchError(f"importing module {module_name!r} for {kind} {reference!r} {what}; fix the module") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise RobenchError(f"module {module_name!r} has no attribute {attribute!r} (from {kind} {reference!r})")
        target = getattr(target, part)
    if not callable(target):
        raise RobenchError(f"{kind} reference {reference!r} is not callable")
    return target


models = Registry("model")
defenses = Registry("defense factory")
attacks = Registry("attack")
certifiers = Registry("certifier")
datasets = Registry("dataset")

_BUILTIN_MODULES = (
    "robench.data",
    "robench.defenses",
    "robench.attacks",
    "robench.certify",
)
_loaded = False


def load_builtins() -> None:
    """Import the modules whose decorators fill the registries, then any plugins."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    # the zoo lists its model modules itself; imported by name, as plugins are (the registries sit
    # below everything that registers into them)
    for module in importlib.import_module("robench.zoo").MODEL_MODULES:
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for plugin in entry_points(group="robench.plugins"):
        plugin.load()
