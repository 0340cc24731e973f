"""No import circle anywhere in the package, counting the imports made inside functions
(deferred to keep a command's start light) and those under ``if TYPE_CHECKING:``, which
run only under a type checker but are as much a need of one module for another: a circle
there is a type that lives a floor too high (issue 51). A circle means two modules each
need the other: one of them holds two concerns, or a part of it belongs a floor lower
(issue 34)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in (root / "assembler").rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


class _Imports(ast.NodeVisitor):
    """The package's modules one module imports, anywhere in it (``if TYPE_CHECKING:`` too)."""

    def __init__(self, modules: dict[str, Path]) -> None:
        self.modules, self.found = modules, set[str]()

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(a.name for a in node.names if a.name in self.modules)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            if full in self.modules:
                self.found.add(full)
            elif node.module in self.modules:
                self.found.add(node.module)


def _graph(root: Path) -> dict[str, set[str]]:
    modules = _modules(root)
    graph = {}
    for name, path in modules.items():
        visitor = _Imports(modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[name] = visitor.found - {name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that reach one another (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph(ROOT)
    circles = _circles(graph)
    shown = [
        " <-> ".join(group) + ": " + "; ".join(f"{a} -> {b}" for a in group for b in sorted(graph[a]) if b in group)
        for group in circles
    ]
    assert not circles, "\n".join(shown)


def test_the_check_sees_a_circle_through_a_deferred_import_and_one_of_types(tmp_path: Path) -> None:
    package = tmp_path / "assembler"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from assembler.b import f\n")
    (package / "b.py").write_text("def f():\n    from assembler import a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from assembler import d\n")
    (package / "d.py").write_text("from assembler import c\n")
    (package / "e.py").write_text("from assembler import a\n")
    assert _circles(_graph(tmp_path)) == [["assembler.a", "assembler.b"], ["assembler.c", "assembler.d"]]
