"""The package's shape: every module sits in a layer and imports only from its own layer or the
layers below (docs/architecture.md draws them), and no module imports, directly or through
others, a module that imports it back (an import cycle makes the flow unreadable and breaks lazy
imports). Imports under ``if TYPE_CHECKING:`` are annotations only and do not count."""
from __future__ import annotations

import ast
from pathlib import Path

import robench

ROOT = Path(robench.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the robench modules it imports anywhere in its source (top level or in functions)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                       for statement in node.body for inner in ast.walk(statement)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                # a package's __init__ is imported by its submodules implicitly: not an edge back
                if target and target != module and not (modules[target].name == "__init__.py" and module.startswith(target + ".")):
                    graph[module].add(target)
    return graph


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


#: the layers, bottom up: a module imports only from its own layer or one below (a package
#: prefix places all its submodules; the longest prefix wins)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("robench.errors", "robench.schema", "robench.stats", "robench.rng", "robench.hyperparameters", "robench.io",
     "robench.console", "robench.table"),
    ("robench.tags", "robench.threat", "robench.target"),
    ("robench.registry", "robench.cards", "robench.data", "robench.arrays", "robench.verify", "robench.batching",
     "robench.catalog", "robench.method", "robench.discover"),
    ("robench.attacks", "robench.defenses", "robench.zoo", "robench.diagnostics", "robench.certify", "robench.risk"),
    ("robench.spec", "robench.resolve", "robench.plan", "robench.units", "robench.assemble", "robench.store",
     "robench.executors", "robench.budget", "robench.progress"),
    ("robench.runner",),
    ("robench.api", "robench.output", "robench.cli", "robench.reports", "robench.testing", "robench.__main__", "robench"),
)


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """The layer whose longest prefix matches ``module`` (None: the module is in no layer)."""
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            # the package itself ("robench", its __init__) is placed by name only, not as a prefix
            if (module == prefix or (prefix != "robench" and module.startswith(prefix + "."))) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    return [f"{a} (layer {layer_of(a, layers)}) imports {b} (layer {layer_of(b, layers)})"
            for a in sorted(graph) for b in sorted(graph[a])
            if layer_of(a, layers) is not None and layer_of(b, layers) is not None and layer_of(b, layers) > layer_of(a, layers)]


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    def reaches(start: str, goal: str) -> bool:
        stack, seen = [start], set()
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(graph[node])
        return False

    return sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles in robench/: " + "; ".join(f"{a} <-> {b}" for a, b in found)


def test_the_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph), "a -> b -> c -> a is a cycle"
    assert not cycles({"a": {"b"}, "b": set()})


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer of LAYERS (place them, and in docs/architecture.md): {unplaced}"


def test_no_module_imports_from_a_layer_above_its_own():
    found = upward_imports(import_graph())
    assert not found, "imports against the layering: " + "; ".join(found)


def test_the_layer_check_finds_an_upward_import():
    layers = (("p.low",), ("p.high",))
    assert upward_imports({"p.low": {"p.high"}, "p.high": set()}, layers) == ["p.low (layer 0) imports p.high (layer 1)"]
    assert not upward_imports({"p.high": {"p.low"}, "p.low": set()}, layers)


def test_type_checking_imports_are_not_edges(tmp_path):
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n")
    assert _is_type_checking(next(n for n in ast.walk(tree) if isinstance(n, ast.If)).test)
