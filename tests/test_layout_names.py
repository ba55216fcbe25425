"""Only `layout` spells a stored field name: every other storage module goes through `layout.F` and its helpers."""

from __future__ import annotations

import ast
from pathlib import Path

from app.storage import layout

STORAGE = Path(__file__).resolve().parent.parent / "app" / "storage"
# Names of the export format (records.py) that happen to equal a stored field name: a record's "slot"
# and a message record's "seq" are the record's own keys, not the stored fields.
RECORD_NAMES = {"records.py": {"slot", "seq"}, "forking.py": {"slot", "seq"}}  # forking builds a record


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the constant nodes that are docstrings."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def field_spellings(path: Path) -> list[tuple[int, str]]:
    """(line, name) of each string literal and dict-building keyword (`doc.update(n=1)`) that is a stored field."""
    tree = ast.parse(path.read_text(), str(path))
    allowed = RECORD_NAMES.get(path.name, set())
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Call) and _builds_a_dict(node.func):
            found.extend((kw.lineno, kw.arg) for kw in node.keywords if kw.arg is not None)
    return sorted((line, name) for line, name in found if name in layout.FIELDS and name not in allowed)


def _builds_a_dict(func: ast.expr) -> bool:
    """`dict(n=1)` or `x.update(n=1)`: keyword arguments that become a document's keys."""
    return (isinstance(func, ast.Name) and func.id == "dict") or (
        isinstance(func, ast.Attribute) and func.attr == "update"
    )


def test_no_storage_module_but_layout_spells_a_stored_field_name():
    spelled = {path.name: field_spellings(path) for path in sorted(STORAGE.glob("*.py")) if path.name != "layout.py"}
    assert {name: hits for name, hits in spelled.items() if hits} == {}


def test_the_field_table_names_every_field_once_and_indexes_use_only_stored_fields():
    names = [value for attr, value in vars(layout.F).items() if attr.isupper()]
    assert len(names) == len(set(names)) == len(layout.FIELDS)
    assert {field for keys, _ in layout.INDEXES for field, _ in keys} <= layout.FIELDS
