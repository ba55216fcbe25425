"""The import rules of docs/coze.md (What Coze imports) as a checker: problems in a manifest or OpenAPI document. Pure.

Used by the tests (the committed files must pass) and by the registration script (what it sends
and exports must pass).
"""

from __future__ import annotations

import re
from typing import Any

COZE_FORMATS = {
    "file_url",
    "image_url",
    "doc_url",
    "ppt_url",
    "code_url",
    "excel_url",
    "zip_url",
    "video_url",
    "audio_url",
    "txt_url",
}
SCHEMA_TYPES = {"string", "integer", "number", "boolean", "object", "array"}
SCHEMA_KEYS = {
    "type",
    "description",
    "enum",
    "default",
    "items",
    "properties",
    "required",
    "minimum",
    "maximum",
    "format",
    "title",
    "example",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "additionalProperties",
    "nullable",
    "readOnly",
    "writeOnly",
}
OPERATION_ID = re.compile(r"^[a-zA-Z0-9_]{1,30}$")
RESERVED_OUTPUTS = {"errorBody", "isSuccess"}


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """What Coze's manifest validator would refuse."""
    out = []
    if manifest.get("schema_version") != "v1":
        out.append("schema_version must be v1")
    for key in ("name_for_model", "name_for_human", "description_for_model", "description_for_human"):
        if not str(manifest.get(key) or "").strip():
            out.append(f"{key} must not be empty")
    name = str(manifest.get("name_for_human") or "")
    if len(name) > 30 or not re.fullmatch(r"[\w \u4e00-\u9fff]*", name):
        out.append("name_for_human: at most 30 letters, digits, _, spaces or CJK")
    for key in ("description_for_model", "description_for_human"):
        if len(str(manifest.get(key) or "")) > 600:
            out.append(f"{key}: at most 600 characters")
    if (manifest.get("api") or {}).get("type") != "openapi":
        out.append("api.type must be openapi")
    auth = manifest.get("auth")
    if not isinstance(auth, dict):
        out.append("auth must be present")
    elif auth.get("type") == "service_http":
        if auth.get("location") not in ("Header", "Query") or not auth.get("key"):
            out.append("auth service_http needs location Header|Query and key")
    elif auth.get("type") not in ("none", "oauth"):
        out.append("auth.type must be none, service_http or oauth")
    return out


def _schema_problems(schema: Any, where: str) -> list[str]:
    out = []
    if not isinstance(schema, dict):
        return [f"{where}: schema must be an object"]
    for key in schema:
        if key not in SCHEMA_KEYS and not key.startswith("x-"):
            out.append(f"{where}: key {key!r} is not understood")
    if "$ref" in schema or any(k in schema for k in ("oneOf", "anyOf", "allOf")):
        out.append(f"{where}: $ref/oneOf/anyOf/allOf are not supported")
    if schema.get("type") not in SCHEMA_TYPES:
        out.append(f"{where}: type must be one of {sorted(SCHEMA_TYPES)}")
    if "format" in schema and schema["format"] not in COZE_FORMATS:
        out.append(f"{where}: format {schema['format']!r} breaks Coze's tool list")
    if schema.get("type") == "array":
        out += _schema_problems(schema.get("items"), f"{where}.items")
    for name, sub in (schema.get("properties") or {}).items():
        out += _schema_problems(sub, f"{where}.{name}")
    return out


def openapi_problems(doc: dict[str, Any]) -> list[str]:
    """What Coze's OpenAPI import would refuse, or accept and then break on."""
    out = []
    if not str(doc.get("openapi", "")).startswith("3.0."):
        out.append("openapi must be 3.0.x")
    info = doc.get("info") or {}
    for key in ("title", "description", "version"):
        if not info.get(key):
            out.append(f"info.{key} is required")
    servers = doc.get("servers") or []
    if len(servers) != 1:
        out.append("exactly one servers entry")
    elif not re.match(r"^https?://[^/]+", str(servers[0].get("url", ""))) or len(servers[0]["url"]) > 512:
        out.append("servers[0].url needs a scheme and host, at most 512 characters")
    for key in doc:
        if key not in ("openapi", "info", "servers", "paths", "components", "tags") and not key.startswith("x-"):
            out.append(f"top-level key {key!r} is not OpenAPI 3.0")
    seen_ids = set()
    for path, item in (doc.get("paths") or {}).items():
        if "parameters" in item:
            out.append(f"{path}: path-level parameters are dropped")
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            if method not in ("get", "post", "put", "delete", "patch"):
                out.append(f"{where}: method not supported")
                continue
            op_id = op.get("operationId", "")
            if not OPERATION_ID.match(op_id):
                out.append(f"{where}: operationId must match ^[a-zA-Z0-9_]+$, at most 30")
            if op_id in seen_ids:
                out.append(f"{where}: operationId {op_id} is not unique")
            seen_ids.add(op_id)
            if not op.get("summary") or len(op["summary"]) > 600:
                out.append(f"{where}: summary required, at most 600 characters")
            body = op.get("requestBody")
            if body is not None:
                content = body.get("content") or {}
                if list(content) != ["application/json"]:
                    out.append(f"{where}: request body must be exactly application/json")
                else:
                    schema = content["application/json"].get("schema") or {}
                    if schema.get("type") != "object":
                        out.append(f"{where}: request body schema must be an object")
                    out += _schema_problems(schema, f"{where} request")
            responses = op.get("responses") or {}
            if set(responses) - {"200", "default"} or "200" not in responses:
                out.append(f"{where}: only a 200 (and default) response")
            content = (responses.get("200") or {}).get("content") or {}
            if list(content) != ["application/json"]:
                out.append(f"{where}: 200 response must be exactly application/json")
            else:
                schema = content["application/json"].get("schema") or {}
                if schema.get("type") != "object" or not schema.get("properties"):
                    out.append(f"{where}: response schema must be an object with properties")
                if RESERVED_OUTPUTS & set(schema.get("properties") or {}):
                    out.append(f"{where}: errorBody and isSuccess are reserved by Coze")
                out += _schema_problems(schema, f"{where} response")
    if "$ref" in repr(doc):
        out.append("$ref is not allowed: inline every schema")
    return out
