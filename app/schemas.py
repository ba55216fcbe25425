"""JSON Schemas and the OpenAPI document, generated from app.spec. Pure: no I/O.

Two renderings of the same fields: `strict` (what the service enforces with jsonschema: patterns,
lengths, no unknown fields, context as text or object) and `coze` (what Coze imports: only the
keywords its parameter model understands, no `format`, no `$ref`, context as a JSON string).
"""

from __future__ import annotations

from typing import Any

from app import spec
from app.context_schema import ContextSchema
from app.spec import Field, Tool


def _describe(f: Field) -> str:
    return f"{f.zh} / {f.en}"


def field_schema(f: Field, *, strict: bool) -> dict[str, Any]:
    """One field as a schema; `strict` adds the constraints only the service enforces."""
    out: dict[str, Any] = {"type": f.type, "description": _describe(f)}
    if f.enum:
        out["enum"] = list(f.enum)
    if f.default is not None:
        out["default"] = f.default
    if f.minimum is not None:
        out["minimum"] = f.minimum
    if f.maximum is not None:
        out["maximum"] = f.maximum
    if f.items is not None:
        out["items"] = field_schema(f.items, strict=strict)
    if f.properties:
        out["properties"] = {n: field_schema(p, strict=strict) for n, p in f.properties.items()}
    if strict:
        if f.max_length is not None:
            out["maxLength"] = f.max_length
        if f.pattern is not None:
            out["pattern"] = f.pattern
        if f.max_items is not None:
            out["maxItems"] = f.max_items
        if f.properties:
            out["required"] = list(f.properties)
            out["additionalProperties"] = False
    return out


def request_schema(tool: Tool, *, strict: bool = True, fields: dict | None = None) -> dict[str, Any]:
    """The request body schema of a tool; `fields`, the typed context fields (CONTEXT_SCHEMA) if any."""
    props = {n: field_schema(spec.INPUTS[n], strict=strict) for n in tool.inputs}
    if fields is not None and "context" in props:
        # Any object here: the context a write leaves is what the schema checks (a merge may be partial).
        props["fields"] = {"type": "object"} if strict else fields
    options = tool.options()
    props["options"] = {
        "type": "object",
        "description": "选项 / Options",
        "properties": {n: field_schema(f, strict=strict) for n, f in options.items()},
    }
    if tool.required_options and not strict:
        # what Coze shows as required; the service names a missing one itself (options.upto_seq)
        props["options"]["required"] = list(tool.required_options)
    if strict:
        if "context" in props:
            # Direct HTTP callers may send the object itself; Coze can only carry it as text.
            props["context"]["type"] = ["string", "object"]
        props["options"]["additionalProperties"] = False
    out: dict[str, Any] = {"type": "object", "properties": props}
    required = [n for n in tool.required if not (n == "context" and "fields" in props)]  # either will do
    if tool.required_options and not strict:
        required.append("options")
    if required:
        out["required"] = required
    if strict:
        out["additionalProperties"] = False
    return out


def response_schema(tool: Tool, *, strict: bool = True, fields: dict | None = None) -> dict[str, Any]:
    """The response body schema of a tool: every field required, none nullable."""
    props = {n: field_schema(spec.OUTPUTS[n], strict=strict) for n in tool.outputs}
    if fields is not None:
        props["fields"] = dict(fields, additionalProperties=False) if strict else fields
    out: dict[str, Any] = {"type": "object", "properties": props}
    if strict:
        props["status"]["enum"] = list(spec.STATUSES)
        props["error_code"]["enum"] = ["", *spec.ERRORS]
        out["required"] = list(props)
        out["additionalProperties"] = False
        for name in ("expires_in", "message_count", "dropped", "version", "timeout", "max_history", "tokens"):
            if name in props:
                props[name]["minimum"] = 0
    return out


def openapi_document(server_url: str, context_schema: ContextSchema | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0.1 document Coze imports: one tool per (path, POST); with a context schema,
    typed `fields` in and out wherever a context goes."""
    fields_in = context_schema.coze(for_input=True) if context_schema else None
    fields_out = context_schema.coze() if context_schema else None
    paths = {}
    for tool in spec.TOOLS:
        paths[tool.path] = {
            "post": {
                "operationId": tool.name,
                "summary": f"{tool.zh} / {tool.en}",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request_schema(tool, strict=False, fields=fields_in)}},
                },
                "responses": {
                    "200": {
                        "description": "成功或业务错误（见 error_code） / Success or a business error (see error_code)",
                        "content": {
                            "application/json": {"schema": response_schema(tool, strict=False, fields=fields_out)}
                        },
                    }
                },
            }
        }
    return {
        "openapi": "3.0.1",
        "info": {
            "title": spec.TITLE,
            "description": f"{spec.DESCRIPTION_ZH} / {spec.DESCRIPTION_EN}",
            "version": spec.VERSION,
        },
        "servers": [{"url": server_url.rstrip("/")}],
        "paths": paths,
    }
