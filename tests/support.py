"""Test helpers: a client that checks every answer against the output schema, and the checks the tests share."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pymongo import MongoClient, monitoring

from app import jsontext, responses, schemas, spec, validation
from app.core import Sessions
from app.storage.database import build_indexes
from app.storage.mongo import Collections
from app.storage.store import SessionStore

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
HISTORY_INLINE = 3  # messages kept inline in the tests: most histories reach into the archive
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RESPONSE_VALIDATORS = {t.name: Draft202012Validator(schemas.response_schema(t)) for t in spec.TOOLS}
LEAKS = ("Traceback", "pymongo", 'File "', "$expr", "mongodb://", "127.0.0.1", "neosqlite", "sqlite")


def ok(data: dict) -> dict:
    """A success: no error code and no error message."""
    assert data["error_code"] == "" and data["error"] == "", data
    return data


def fail(data: dict, code: str, *, field: str | None = None) -> dict:
    """The error `code` with a message; with `field`, the (default, Chinese) message names that field."""
    assert data["error_code"] == code, data
    assert data["error"], data
    if field is not None:
        assert data["error"].startswith(f"参数错误：{field} "), data["error"]
    return data


def assert_no_leak(text: str, *, sent: str = "") -> None:
    """No trace, driver name, query operator, database address or engine in an answer, unless the caller `sent` it."""
    for leak in LEAKS:
        if leak not in sent:
            assert leak not in text, (leak, text[:300])


def check_response(tool: spec.Tool, body: Any, fields: dict | None = None) -> None:
    """The body is the tool's output shape: every field, no null, integers as integers; with `fields`
    (a CONTEXT_SCHEMA's output fields, ContextSchema.coze()), typed fields of exactly that shape too."""
    assert isinstance(body, dict), body
    schema = schemas.response_schema(tool, fields=fields) if fields is not None else None
    validator = Draft202012Validator(schema) if schema else RESPONSE_VALIDATORS[tool.name]
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, [e.message for e in errors]
    _no_nulls_and_true_integers(schema or schemas.response_schema(tool), body, "")


def _no_nulls_and_true_integers(schema: dict, value: Any, where: str) -> None:
    assert value is not None, f"null at {where or 'top'}"
    if schema.get("type") == "integer":
        assert type(value) is int, f"{where} is {value!r}, not a JSON integer"
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(value, dict) and name in value:
            _no_nulls_and_true_integers(sub, value[name], f"{where}.{name}")
    if schema.get("type") == "array":
        for i, item in enumerate(value):
            _no_nulls_and_true_integers(schema["items"], item, f"{where}[{i}]")


class Api:
    """Calls tools through the Flask app; every answer is schema-checked before it is returned."""

    def __init__(self, client: Any, fields: dict | None = None) -> None:
        self.client = client
        self.fields = fields  # the output `fields` schema when the app has a CONTEXT_SCHEMA

    def post(self, tool_name: str, body: Any, *, headers: dict | None = None, raw: bytes | None = None):
        tool = spec.TOOLS_BY_NAME[tool_name]
        kwargs: dict[str, Any] = {"headers": {**AUTH, **(headers or {})}}
        if raw is not None:
            kwargs["data"] = raw
            kwargs["content_type"] = kwargs["headers"].pop("Content-Type", "application/json")
        else:
            kwargs["json"] = body
        response = self.client.post(tool.path, **kwargs)
        data = json.loads(response.data)
        check_response(tool, data, self.fields)
        return response.status_code, data

    def call(self, op: str, body: dict | None = None, *, manage: bool = False, **kw: Any) -> dict:
        """Run `op` through its own tool (or the `operation` tool); expects HTTP 200."""
        body = dict(body or {})
        if manage:
            status, data = self.post("session_manage", {"operation": op, **body}, **kw)
        else:
            status, data = self.post(f"session_{op}", body, **kw)
        assert status == 200, (status, data)
        return data

    def create(self, user_id: str = "u1", **body: Any) -> dict:
        return ok(self.call("create", {"user_id": user_id, **body}))


class FakeClock:
    """Epoch milliseconds that only move when told to; starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def stored_context(doc: dict) -> str:
    """The context a stored session document holds: its text with the patch log applied."""
    return jsontext.fold(doc["ctx"], doc.get("cp", []))


def ctx(data: dict) -> dict:
    """The context of an answer, parsed."""
    return json.loads(data["context"])


@contextlib.contextmanager
def fresh_database(mongo_uri: str, prefix: str = "test") -> Iterator[str]:
    """A database name no other test uses; the database is dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        client = MongoClient(mongo_uri, serverSelectionTimeoutMS=3000)
        try:
            client.drop_database(name)
        finally:
            client.close()


DATA_COMMANDS = {"find", "findAndModify", "insert", "update", "delete", "aggregate", "count"}


class CommandLog(monitoring.CommandListener):
    """Every data command a MongoClient sends, as sent (pymongo command monitoring)."""

    def __init__(self) -> None:
        self.commands: list[dict] = []

    @property
    def names(self) -> list[str]:
        return [next(iter(c)) for c in self.commands]

    def clear(self) -> None:
        self.commands.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in DATA_COMMANDS:
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def open_store(mongo_uri: str, db_name: str, clock, log: CommandLog | None = None, **options: Any):
    """A SessionStore on a client of its own (a process of its own, as far as the store knows): (store, client)."""
    client = MongoClient(mongo_uri, event_listeners=[log] if log else [])
    store = SessionStore(Collections(client[db_name]["sessions"], wtimeout_ms=5000), clock, **options)
    build_indexes(store.collections)
    return store, client


def run(core: Sessions, op: str, user_id: str = "u1", **body: Any) -> dict:
    """An operation run on the core directly, answered as the HTTP edge would answer it."""
    return responses.render(core.execute(validation.parse(f"session_{op}", {"user_id": user_id, **body})))
