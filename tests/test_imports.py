"""The runtime package's shape: no import cycle (counting imports inside functions and under TYPE_CHECKING),
and no module but the declarative spec over 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every app module and the app modules it imports anywhere in its text (`from a import b` is a.b if b is one)."""
    modules = {_module_name(p): p for p in APP.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as the list of its modules (first repeated last), or [] if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_no_app_module_imports_itself_through_another_anywhere_in_its_text():
    graph = import_graph()
    assert "app.storage.store" in graph["app.storage.database"]  # the graph sees what it should
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


MAX_MODULE_LINES = 300  # the declarative spec excepted: it is data, one entry per tool and field


def test_no_app_module_but_the_spec_passes_300_lines():
    sizes = {str(p.relative_to(APP.parent)): len(p.read_text().splitlines()) for p in APP.rglob("*.py")}
    assert sizes["app/spec.py"] > MAX_MODULE_LINES  # the walk sees every module, the one excepted too
    too_long = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES and name != "app/spec.py"}
    assert too_long == {}
