"""The package's import graph, read statically (ast): no circle, and no arrow up.

Every import counts, the ones inside functions too (a lazy import only hides a circle). A node is
a module; ``from .pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``'s
``__init__``. "Up" is measured between the top-level modules and the ``attacks`` subpackage taken
as one layer: the attacks may use the modules below them (errors, registry, pixels, models, ...),
and the modules above them (tables, runner's storage, api, cli) use the attacks, never both ways.

One allowed exception, by design: ``attacks/runner.py`` is the storage-facing runner (checkpoints,
data, result files, stored adversarials), so it sits in the layer above the attacks although it
lives in their folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

import robench

PACKAGE = Path(robench.__file__).parent
ABOVE_ITS_FOLDER = {"robench.attacks.runner"}  # the one documented exception (see the docstring)


def module_name(path: Path) -> str:
    parts = ("robench", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def layer(name: str) -> str:
    """A module's node in the layered graph: the attacks subpackage is one node."""
    if name.startswith("robench.attacks") and name not in ABOVE_ITS_FOLDER:
        return "robench.attacks"
    return name


def test_the_cycle_finder_finds_a_circle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "robench.tables" in graph["robench.cli"]  # imported inside a command function
    assert "robench.attacks.spec" in graph["robench.attacks.options"]  # from .spec import ...
    assert "robench.attacks.gradient" in graph["robench.attacks"]  # from . import gradient


def test_no_module_imports_itself_back():
    assert find_cycle(import_graph()) is None


def test_no_arrow_points_up_between_the_attacks_and_the_modules_around_them():
    layered: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        layered.setdefault(layer(name), set()).update(layer(t) for t in targets if layer(t) != layer(name))
    assert find_cycle(layered) is None


def test_no_module_reaches_up_to_the_package_facade():
    """``robench/__init__.py`` is the public API on top of everything; nothing inside imports it."""
    graph = import_graph()
    assert not [name for name, targets in graph.items() if "robench" in targets]
