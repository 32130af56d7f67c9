"""The package's import graph has no cycle, between modules or between rooms (``videomae.engine``,
``videomae.data``, ``videomae.checkpoint``...): a room that needs another's code imports it, never the other way
round as well. Imports inside functions count; imports under ``if TYPE_CHECKING:`` (annotations only) do not."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "videomae"


def _module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return skipped


def import_graph(root: Path) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` (a ``from pkg import name`` counts as ``pkg.name`` when that
    is a module, else as ``pkg``)."""
    modules = _module_names(root)
    prefix = root.name

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_nodes(tree)
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names if a.name.split(".")[0] == prefix}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == prefix:
                targets |= {owner(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def room_of(module: str) -> str:
    """``videomae.engine.run`` -> ``videomae.engine``; a top-level module is a room of its own."""
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = room_of(module)
        rooms.setdefault(here, set()).update(room_of(t) for t in targets if room_of(t) != here)
    return rooms


def test_no_import_cycle_between_modules_or_rooms():
    graph = import_graph(PACKAGE)
    assert len(graph) > 100 and "videomae.engine.trainer" in graph["videomae.methods.pretrain"]  # the graph is real
    assert cycles(graph) == [], "modules importing each other"
    assert cycles(room_graph(graph)) == [], "rooms importing each other"


def test_a_cycle_is_found_through_a_function_level_import_but_not_an_annotation_import(tmp_path):
    package = tmp_path / "videomae"
    (package / "a").mkdir(parents=True)
    (package / "b").mkdir()
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("")
    (package / "b" / "__init__.py").write_text("")
    (package / "a" / "one.py").write_text("from videomae.b import two\n")
    (package / "b" / "two.py").write_text("def f():\n    from videomae.a.one import g\n")
    (package / "b" / "three.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from videomae.a import one\n"
    )
    graph = import_graph(package)
    assert graph["videomae.a.one"] == {"videomae.b.two"} and graph["videomae.b.three"] == set()
    assert cycles(graph) == [["videomae.a.one", "videomae.b.two"]]
    assert cycles(room_graph(graph)) == [["videomae.a", "videomae.b"]]
