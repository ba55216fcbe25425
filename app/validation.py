"""Turns a request body into a checked Call, enforcing the generated schemas. Pure: no I/O.

Coze fills top-level inputs the author left empty with "", 0 or false and treats null as missing,
and a workflow variable bound into `options` is often "" or 0 (a paging loop's first cursor, a
counter): so "" and 0 mean "not given" at the top level and in `options` alike (false is literal),
and defaults declared in the spec fill the options. The `operation` tool receives the union of every
operation's options: those its operation does not use are ignored, not validated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from app import errors, jsontext, schemas, spec
from app.errors import InvalidArgument
from app.options import BY_OPERATION, Options

_VALIDATORS = {  # (tool, whether typed context fields are configured)
    (t.name, typed): Draft202012Validator(schemas.request_schema(t, fields={} if typed else None))
    for t in spec.TOOLS
    for typed in (False, True)
}
_OPTIONS = {op: spec.TOOLS_BY_NAME[f"session_{op}"].options() for op in spec.OPERATIONS}  # not per request
_ANY_OPTION = set(spec.OPTIONS)
for _v in _VALIDATORS.values():
    Draft202012Validator.check_schema(_v.schema)
# What the stored state refuses, named in the domain (errors.OutOfRange.value), as the caller's field
DOMAIN_FIELDS = {"compact.upto": "options.upto_seq"}
MAX_INT64 = 2**63 - 1  # what a stored integer (BSON int64) holds


@dataclass(frozen=True)
class Call:
    """One validated request, ready for the core."""

    operation: str
    user_id: str
    session_id: str
    context: dict | None
    messages: tuple[tuple[str, str], ...]
    options: Options  # the operation's own class (app.options)
    request_id: str = ""
    lock_token: str = ""
    summary: str = ""
    fields: dict | None = None  # typed context fields (CONTEXT_SCHEMA), merged after `context`

    @property
    def lang(self) -> str:
        return self.options.lang


def _given(value: Any) -> bool:
    return value is not None and value != "" and value != [] and not (type(value) is int and value == 0)


def _schema_error(error: Any) -> InvalidArgument:
    path = ".".join(str(p) for p in error.absolute_path)
    keyword = error.validator
    expected: Any = error.validator_value
    if keyword == "required":
        missing = [n for n in expected if n not in error.instance]
        path = ".".join(filter(None, [path, missing[0] if missing else ""]))
    elif keyword == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path = ".".join(filter(None, [path, extra[0] if extra else ""]))
    elif keyword == "type":
        expected = "/".join(expected) if isinstance(expected, list) else expected
    elif keyword == "enum":
        expected = ", ".join(str(v) for v in expected)
    if keyword not in spec.REASONS:  # a keyword without its own wording (a bound of the string's form)
        keyword = "pattern"
    return InvalidArgument(path, keyword, expected)


_LANG = re.compile(rb'"lang"\s*:\s*"(en|zh)"')


def lang_hint(raw: bytes, default: str = "zh") -> str:
    """The language asked for by a body not parsed (unauthorised, or sent to no tool), else `default`."""
    found = _LANG.search(raw[:65536])
    return found.group(1).decode() if found else default


def lang_of(body: Any, default: str = "zh") -> str:
    """The language a response should use, read leniently (also for bodies that fail validation)."""
    options = body.get("options") if isinstance(body, dict) else None
    lang = options.get("lang") if isinstance(options, dict) else None
    return lang if lang in ("zh", "en") else default


def parse(
    tool_name: str,
    body: Any,
    connector_user: str = "",
    defaults: dict | None = None,
    *,
    typed: bool = False,
    maxima: dict[str, int] | None = None,
) -> Call:
    """Validate `body` for the tool `tool_name`; raises InvalidArgument naming the field.

    `defaults` replaces the spec's defaults where the server is configured otherwise, `maxima` lowers
    an option's bound where the server is (MAX_TIMEOUT, MAX_HISTORY); `typed`: the tools also take
    `fields` (CONTEXT_SCHEMA is configured), which may stand in for `context`.
    """
    tool = spec.TOOLS_BY_NAME[tool_name]
    if not isinstance(body, dict):
        raise InvalidArgument("", "body")
    data = {k: v for k, v in body.items() if _given(v)}
    if isinstance(data.get("options"), dict):
        named = data.get("operation")
        used = _OPTIONS.get(named) if len(tool.operations) > 1 and isinstance(named, str) else None
        data["options"] = {
            k: v
            for k, v in data["options"].items()
            if _given(v) or v == []  # [] is no option's type: left to be refused
            if used is None or k in used or k not in _ANY_OPTION  # an unknown name is still refused
        }
    if data.get("fields") == {}:  # a Coze node sends the object even with every field unset
        del data["fields"]
    if "user_id" not in data and connector_user:
        data["user_id"] = connector_user
    error = best_match(_VALIDATORS[tool_name, typed].iter_errors(data))
    if error is not None:
        raise _schema_error(error)

    operation = data.get("operation") or tool.operations[0]
    op = spec.OPERATIONS[operation]
    for need in op.needs:
        if need not in data and not (need == "context" and "fields" in data):
            raise InvalidArgument(need, "required")
    fields = _OPTIONS[operation]
    options = {n: f.default for n, f in fields.items() if f.default is not None}
    options.update({k: v for k, v in (defaults or {}).items() if options.get(k) is not None})
    options.update({k: v for k, v in data.get("options", {}).items() if k in fields})
    for name, value in options.items():  # the operation's own bounds (the manage tool's are wider)
        f = fields[name]
        if f.type == "integer" and isinstance(value, float):
            options[name] = value = int(value)  # jsonschema counts 60.0 as an integer; store 60
        if f.maximum is not None and type(value) is int and value > f.maximum:
            raise InvalidArgument(f"options.{name}", "maximum", f.maximum)
    for name, most in (maxima or {}).items():  # the server's own bounds, checked after the spec's
        if type(options.get(name)) is int and options[name] > most:
            raise InvalidArgument(f"options.{name}", "maximum", most)
    summary = data.get("summary", "") if "summary" in op.inputs else ""
    typed_options = _typed_options(operation, fields, options, summary)

    return Call(
        operation=operation,
        user_id=data["user_id"],
        session_id=data.get("session_id", ""),
        context=_context(data["context"]) if "context" in data and "context" in op.inputs else None,
        messages=_messages(data) if operation == "append_messages" else (),
        options=typed_options,
        request_id=data.get("request_id", "") if "request_id" in op.inputs else "",
        lock_token=data.get("lock_token", "") if "lock_token" in op.inputs else "",
        summary=summary,
        fields=data.get("fields") if "context" in op.inputs else None,
    )


def _stored_integer(text: str) -> bool:
    """ASCII digits of a number a stored integer (BSON int64) can hold: a cursor's seq or creation time."""
    return text.isascii() and text.isdigit() and int(text) <= MAX_INT64


def _typed_options(operation: str, fields: dict, options: dict[str, Any], summary: str) -> Options:
    """The operation's options as its class in app.options: cursors parsed, compact's own rules checked."""
    values: dict[str, Any] = {name: options.get(name) for name in fields}
    cursor = values.get("cursor")
    if operation == "history":
        if cursor is not None and not _stored_integer(cursor):
            raise InvalidArgument("options.cursor", "pattern")
        values["cursor"] = int(cursor) if cursor is not None else None
        values["roles"] = frozenset(r.strip() for r in (values["roles"] or "").split(",") if r.strip())
    elif operation == "list" and cursor is not None:
        created, _, sid = cursor.partition(":")
        if not _stored_integer(created) or not sid:
            raise InvalidArgument("options.cursor", "pattern")
        values["cursor"] = (int(created), sid)
    elif operation == "compact":
        if values["upto_seq"] is None:
            raise InvalidArgument("options.upto_seq", "required")
        if len(summary.encode("utf-8")) > spec.MAX_SUMMARY_BYTES:
            raise InvalidArgument("summary", "message_size", spec.MAX_SUMMARY_BYTES)
    return BY_OPERATION[operation](**values)


def field_error(exc: errors.OutOfRange) -> InvalidArgument:
    """What the stored state refused, as the caller's field: the one place a domain name becomes a field path."""
    return InvalidArgument(DOMAIN_FIELDS[exc.value], exc.reason, exc.expected)


def _context(value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = jsontext.loads(value)
        except jsontext.JSONTextError as exc:
            raise InvalidArgument("context", exc.reason, exc.expected) from None
    else:
        try:
            jsontext.check_depth(value)
        except jsontext.JSONTextError as exc:
            raise InvalidArgument("context", exc.reason, exc.expected) from None
    if not isinstance(value, dict):
        raise InvalidArgument("context", "json_object")
    return value


def _messages(data: dict) -> tuple[tuple[str, str], ...]:
    if "messages" in data:
        pairs = [(m["role"], m["content"]) for m in data["messages"]]
        where = "messages.{i}.content"
    elif "role" in data or "content" in data:
        if "content" not in data:
            raise InvalidArgument("content", "required")
        if "role" not in data:
            raise InvalidArgument("role", "required")
        pairs = [(data["role"], data["content"])]
        where = "content"
    else:
        raise InvalidArgument("messages", "role_content")
    for i, (_, content) in enumerate(pairs):
        if len(content) * 4 > spec.MAX_MESSAGE_BYTES and message_bytes(content) > spec.MAX_MESSAGE_BYTES:
            raise InvalidArgument(where.format(i=i), "message_size", spec.MAX_MESSAGE_BYTES)
    return tuple(pairs)


def message_bytes(content: str) -> int:
    """A message's size as stored: its UTF-8 bytes, with NUL and \\x01 (stored escaped) counted twice."""
    return len(content.encode("utf-8")) + content.count("\x00") + content.count("\x01")
