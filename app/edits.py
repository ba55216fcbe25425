"""Context edits: JSON Pointer paths (RFC 6901) and the edit ops of `update`. Pure: no I/O.

An edit list is checked once, at the edge (`parse`: ops, pointers, values as JSON text), into
`Edit` values; `apply_edits` then runs the whole list on a copy of a context, in order, all or nothing:
the storage calls it on the stored context inside its compare-and-set, and again on a fresher
state when another write got there first. Every error names the edit by its index (`edits[3]`).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

from app import errors, jsontext

OPS = ("set", "remove", "increment", "append", "extend", "remove_value", "test")
NEEDS_VALUE = frozenset(OPS) - {"remove"}
KEEPS_LAST = frozenset(("append", "extend"))
MAX_EDITS = 100
_INDEX = re.compile(r"(0|[1-9][0-9]*)\Z")
_MISSING = object()


@dataclass(frozen=True)
class Edit:
    """One checked edit: `tokens` is the JSON Pointer split and unescaped; `value` is parsed JSON."""

    index: int
    op: str
    tokens: tuple[str, ...]
    value: Any = None
    keep_last: int = 0

    @property
    def where(self) -> str:
        return f"edits[{self.index}]"


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901: "" is the whole document, else "/"-separated tokens with ~1 for "/" and ~0 for "~"."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(pointer)
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search("~[^01]|~\\Z", token):
            raise ValueError(pointer)
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def parse(rows: list[dict]) -> tuple[Edit, ...]:
    """The edits of a request (rows already shaped by the request schema); InvalidArgument naming edits[i]."""
    if len(rows) > MAX_EDITS:
        raise errors.InvalidArgument("edits", "maxItems", MAX_EDITS)
    out = []
    for i, row in enumerate(rows):
        where = f"edits[{i}]"
        op = row.get("op", "")
        if op not in OPS:
            raise errors.InvalidArgument(f"{where}.op", "enum", ", ".join(OPS))
        try:
            tokens = parse_pointer(row.get("path", ""))
        except ValueError:
            raise errors.InvalidArgument(f"{where}.path", "pointer") from None
        if not tokens and op != "test":
            raise errors.InvalidArgument(f"{where}.path", "pointer_root")
        value = None
        text = row.get("value", "")
        if op in NEEDS_VALUE:
            if text in ("", None):
                raise errors.InvalidArgument(f"{where}.value", "required")
            try:
                value = jsontext.loads(text)
            except jsontext.JSONTextError as exc:
                reason = "nesting" if exc.reason == "nesting" else "json_value"
                raise errors.InvalidArgument(f"{where}.value", reason, exc.expected) from None
            if op == "increment" and not _is_number(value):
                raise errors.InvalidArgument(f"{where}.value", "edit_number")
            if op == "extend" and not isinstance(value, list):
                raise errors.InvalidArgument(f"{where}.value", "edit_array")
        keep = row.get("keep_last") or 0
        out.append(Edit(i, op, tokens, value, keep if op in KEEPS_LAST else 0))
    return tuple(out)


def apply_edits(context: dict, edits: tuple[Edit, ...]) -> dict:
    """The context with every edit applied in order; the input is never changed (all or nothing)."""
    if not edits:
        return context
    doc = copy.deepcopy(context)
    for edit in edits:
        _apply_one(doc, edit)
    try:  # a value set deep down may nest the context past what its text may hold
        jsontext.check_depth(doc)
    except jsontext.JSONTextError as exc:
        raise errors.InvalidArgument("edits", exc.reason, exc.expected) from None
    return doc


def _apply_one(doc: dict, edit: Edit) -> None:
    op = edit.op
    if op == "test":
        found = _get(doc, edit.tokens)
        if not json_equal(None if found is _MISSING else found, edit.value):
            raise errors.ConditionFailed(field=edit.where)
        return
    if op == "remove":
        parent = _get(doc, edit.tokens[:-1])
        last = edit.tokens[-1]
        if isinstance(parent, dict):
            parent.pop(last, None)
        elif isinstance(parent, list) and _INDEX.match(last) and int(last) < len(parent):
            del parent[int(last)]
        return
    if op == "remove_value" and _get(doc, edit.tokens) is _MISSING:
        return  # nothing to remove (and no parent objects created for it)
    parent, last = _parent(doc, edit)
    current = _child(parent, last)
    if op == "set":
        _put(parent, last, edit.value, edit)
    elif op == "increment":
        if current is _MISSING:
            _put(parent, last, edit.value, edit)
        elif not _is_number(current):
            raise errors.InvalidArgument(edit.where, "edit_not_number")
        else:
            _put(parent, last, _sum(current, edit), edit)
    elif op == "remove_value":
        if not isinstance(current, list):
            raise errors.InvalidArgument(edit.where, "edit_not_array")
        current[:] = [item for item in current if not json_equal(item, edit.value)]
    else:  # append, extend
        if current is _MISSING:
            current = []
            _put(parent, last, current, edit)
        elif not isinstance(current, list):
            raise errors.InvalidArgument(edit.where, "edit_not_array")
        current.extend(edit.value if op == "extend" else [edit.value])
        if edit.keep_last and len(current) > edit.keep_last:
            del current[: len(current) - edit.keep_last]


def _get(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at `tokens`, or _MISSING when any step does not exist."""
    for token in tokens:
        doc = _child(doc, token)
        if doc is _MISSING:
            return _MISSING
    return doc


def _child(container: Any, token: str) -> Any:
    if isinstance(container, dict):
        return container.get(token, _MISSING)
    if isinstance(container, list) and _INDEX.match(token) and int(token) < len(container):
        return container[int(token)]
    return _MISSING


def _parent(doc: dict, edit: Edit) -> tuple[Any, str]:
    """The container the edit's last token is in, creating missing objects on the way (for a write)."""
    node: Any = doc
    for depth, token in enumerate(edit.tokens[:-1]):
        child = _child(node, token)
        if child is _MISSING or child is None:
            if not isinstance(node, dict):
                raise errors.InvalidArgument(edit.where, "edit_path", _pointer(edit.tokens[: depth + 1]))
            child = node[token] = {}
        elif not isinstance(child, dict | list):
            raise errors.InvalidArgument(edit.where, "edit_path", _pointer(edit.tokens[: depth + 1]))
        node = child
    return node, edit.tokens[-1]


def _put(parent: Any, token: str, value: Any, edit: Edit) -> None:
    if isinstance(parent, dict):
        parent[token] = value
        return
    if token == "-" or (_INDEX.match(token) and int(token) == len(parent)):
        parent.append(value)
    elif _INDEX.match(token) and int(token) < len(parent):
        parent[int(token)] = value
    else:
        raise errors.InvalidArgument(edit.where, "edit_path", _pointer(edit.tokens))


def _sum(current: int | float, edit: Edit) -> int | float:
    """current + value, refused where JSON text cannot hold the result (a float past 1.8e308)."""
    try:
        total: int | float = current + edit.value
    except OverflowError:  # a huge integer plus a float
        raise errors.InvalidArgument(edit.where, "edit_overflow") from None
    if isinstance(total, float) and not math.isfinite(total):
        raise errors.InvalidArgument(edit.where, "edit_overflow")
    return total


def _pointer(tokens: tuple[str, ...]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), booleans never numbers, objects by keys, arrays in order."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return bool(a.keys() == b.keys()) and all(json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
