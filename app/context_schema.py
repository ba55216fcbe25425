"""Typed context fields: the operator's CONTEXT_SCHEMA, checked once, rendered for Coze, enforced. Pure.

A JSON Schema object (`type: object`, `properties` of string, integer, number, boolean, array with
`items`, object with `properties`; no `$ref`, no combinators, no `format`) declares the context's
shape. Coze then shows typed input and output `fields` on every tool that takes or returns a context,
so a workflow wires `fields.cart_items` directly; every write's resulting context must satisfy the
schema. A schema Coze could not show, or that jsonschema refuses, stops start-up naming the problem.

What an answer renders is checked when it is written: an integral float where an integer is declared
(42.0) is stored as the integer, and a declared field holding an integer outside 64 bits (which no
JSON encoder of the answers can write) is refused, so a stored write is never answered as an error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from app import errors

TYPES = {"string", "integer", "number", "boolean", "array", "object"}
ALLOWED = {
    "type",
    "description",
    "title",
    "properties",
    "items",
    "required",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "additionalProperties",
}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what the answers' JSON encoder (orjson) can write
COZE_KEYS = ("type", "description", "enum", "default", "minimum", "maximum", "items", "properties")


class ContextSchemaError(ValueError):
    """CONTEXT_SCHEMA cannot be used; the message names the variable and the problem."""


class ContextSchema:
    def __init__(self, schema: dict[str, Any], source: str = "CONTEXT_SCHEMA") -> None:
        problems = _problems(schema, "")
        if not problems:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                problems = [f"{_where(exc.absolute_path)}: {exc.message}"]
        if problems:
            raise ContextSchemaError(f"{source}: " + "; ".join(problems))
        self.schema = schema
        self._validator = Draft202012Validator(schema)  # compiled once, at start-up
        self._properties = {name: Draft202012Validator(sub) for name, sub in schema["properties"].items()}

    @classmethod
    def load(cls, path: str) -> ContextSchema:
        try:
            schema = json.loads(Path(path).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ContextSchemaError(f"CONTEXT_SCHEMA: cannot read {path}: {exc}") from None
        return cls(schema, f"CONTEXT_SCHEMA ({path})")

    def check(self, context: dict) -> dict:
        """The context to store: integral floats of integer fields made integers; refused, naming the
        path, if it violates the schema or a declared field holds an integer no answer can render."""
        declared = self.schema["properties"]
        value = {k: _as_declared(declared[k], v) if k in declared else v for k, v in context.items()}
        error = best_match(self._validator.iter_errors(value))
        if error is not None:
            raise errors.InvalidArgument("context" + _where(error.absolute_path), "schema", error.message[:200])
        for name in declared:
            where = _beyond_int64(value.get(name))
            if where is not None:
                raise errors.InvalidArgument(f"context.{name}{where}", "int64", f"{INT64_MIN}..{INT64_MAX}")
        return value

    def check_fields(self, fields: dict | None) -> None:
        """Input `fields` takes exactly the declared properties."""
        for name in fields or ():
            if name not in self.schema["properties"]:
                raise errors.InvalidArgument(f"fields.{name}", "additionalProperties")

    def coze(self, *, for_input: bool = False) -> dict[str, Any]:
        """`fields` as Coze imports it: an object with exactly the declared properties. An input
        declares no defaults: Coze would fill them in for unset fields and overwrite stored values."""
        return {"type": "object", "description": "上下文字段 / Context fields", **_coze(self.schema, for_input)}

    def fields_of(self, context: dict) -> dict[str, Any]:
        """The context's values for the declared properties: absent, null, mistyped or unrenderable
        ones (stored before they were refused at write) left out."""
        out = {}
        for name, validator in self._properties.items():
            value = context.get(name)
            if value is None:
                continue
            value = _as_declared(self.schema["properties"][name], value)
            if validator.is_valid(value) and _beyond_int64(value) is None:
                out[name] = value
        return out


def _as_declared(schema: dict, value: Any) -> Any:
    """`value` with every integral float where `schema` declares an integer made an integer (42.0 -> 42)."""
    kind = schema.get("type")
    if kind == "integer" and type(value) is float and value.is_integer():
        return int(value)
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _as_declared(props[k], v) if k in props else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [_as_declared(schema["items"], v) for v in value]
    return value


def _beyond_int64(value: Any) -> str | None:
    """The path (".a[0]") of the first integer in `value` outside 64 bits; None if there is none."""
    stack = [(value, "")]
    while stack:  # iterative: values nest up to jsontext.MAX_DEPTH
        item, where = stack.pop()
        if type(item) is int and not INT64_MIN <= item <= INT64_MAX:
            return where
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def _where(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _problems(schema: Any, where: str) -> list[str]:
    """What Coze could not show: only plain types, arrays with items, objects with properties."""
    here = where or "the schema"
    if not isinstance(schema, dict):
        return [f"{here} is not a JSON object"]
    if not where and schema.get("type") != "object":
        return ["the schema must have type: object"]
    out = [f"{here}: {key} is not supported" for key in schema if key not in ALLOWED]
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        return [*out, f"{here}: type must be one of {', '.join(sorted(TYPES))}"]
    if kind == "array":
        if not isinstance(schema.get("items"), dict):
            return [*out, f"{here}: an array needs items"]
        out += _problems(schema["items"], f"{where}[]" if where else "[]")
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            return [*out, f"{here}: an object needs properties"]
        for name, sub in props.items():
            out += _problems(sub, f"{where}.{name}")
    return out


def _coze(schema: dict[str, Any], for_input: bool) -> dict[str, Any]:
    skip = ("items", "properties", "default") if for_input else ("items", "properties")
    out = {k: copy.deepcopy(schema[k]) for k in COZE_KEYS if k in schema and k not in skip}
    if "items" in schema:
        out["items"] = _coze(schema["items"], for_input)
    if "properties" in schema:
        out["properties"] = {name: _coze(sub, for_input) for name, sub in schema["properties"].items()}
    return out
