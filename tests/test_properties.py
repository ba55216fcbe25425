"""Property-based: contexts of arbitrary JSON numbers, keys and nesting through every write tool, with
and without CONTEXT_SCHEMA. Never a 5xx; every answer valid against its tool's output schema (typed
`fields` included); a write answered as an error stored nothing, and one answered as a success is
what every later read shows."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Api, ctx
from tests.test_hardening import SCHEMA

NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=-3, max_value=3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 2**63 - 1, -(2**63), 1e308, 5e-324, -0.0, 42.0, 1e20]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=6))
KEYS = st.one_of(st.text(max_size=6), st.sampled_from(["", "$set", "a.b", "count", "score", "items", "vip", "qty"]))
VALUES = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=3), max_leaves=10
)
CONTEXTS = st.dictionaries(KEYS, VALUES, max_size=4)
ITEMS = st.lists(st.fixed_dictionaries({}, optional={"sku": st.text(max_size=3), "qty": NUMBERS}), max_size=2)
FIELDS = st.fixed_dictionaries({}, optional={"count": NUMBERS, "score": NUMBERS, "vip": st.booleans(), "items": ITEMS})
PROPERTIES = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def merged(target, patch):
    """RFC 7396, written again here as the oracle."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merged(out.get(k), v)
    return out


def post(api: Api, op: str, body: dict) -> dict:
    status, data = api.post(f"session_{op}", body)  # schema-checked, typed fields included
    assert status < 500, (op, status, data)
    assert status == 200, (op, status, data)
    return data


def walk_session(api: Api, user: str, sid: str, expected: dict, version: int) -> None:
    """Every read and the writes that carry no context answer the session as stored."""
    base = {"user_id": user, "session_id": sid}
    seen = post(api, "get", base)
    assert (seen["error_code"], seen["version"], ctx(seen)) == ("", version, expected)
    for op, extra in (
        ("append_messages", {"role": "user", "content": "hi"}),
        ("history", {"options": {"format": "transcript"}}),
        ("touch", {}),
        ("compact", {"summary": "s", "options": {"upto_seq": 1}}),
    ):
        answer = post(api, op, {**base, **extra})
        assert answer["error_code"] == "" and ctx(answer) == expected, (op, answer)
    token = post(api, "lock", base)["lock_token"]
    assert post(api, "unlock", {**base, "lock_token": token})["error_code"] == ""
    assert post(api, "list", {"user_id": user})["sessions"]
    assert post(api, "close", base)["status"] == "closed"
    assert post(api, "delete", base)["status"] == "deleted"


def run_writes(api: Api, first: dict, patch: dict, replace: dict, fields: dict | None) -> None:
    user = "p-" + uuid.uuid4().hex[:10]
    body = {"user_id": user, "context": json.dumps(first)}
    if fields is not None:
        body["fields"] = fields
    made = post(api, "create", body)
    if made["error_code"]:
        assert made["error_code"] == "INVALID_ARGUMENT", made
        assert post(api, "list", {"user_id": user})["sessions"] == []  # refused: nothing stored, no slot taken
        return
    sid, expected, version = made["session_id"], ctx(made), 1
    assert fields is not None or expected == first
    base = {"user_id": user, "session_id": sid}
    for context, merge in ((patch, True), (replace, False)):
        body = {**base, "context": json.dumps(context), "options": {"merge": merge}}
        if fields is not None:
            body["fields"] = fields
        answer = post(api, "update", body)
        if answer["error_code"]:
            assert answer["error_code"] in ("INVALID_ARGUMENT", "CONTEXT_TOO_LARGE"), answer
            continue  # refused: the reads below show the session as it was
        version += 1
        if fields is None:
            assert ctx(answer) == (merged(expected, context) if merge else context)
        expected = ctx(answer)
        assert answer["version"] == version
    walk_session(api, user, sid, expected, version)


@PROPERTIES
@given(first=CONTEXTS, patch=CONTEXTS, replace=CONTEXTS)
def test_any_context_through_every_write_tool_without_a_schema(api, first, patch, replace):
    run_writes(api, first, patch, replace, None)


@pytest.fixture
def typed(settings, make_app, tmp_path) -> Api:
    path = tmp_path / "context.schema.json"
    path.write_text(json.dumps(SCHEMA))
    app = make_app(dataclasses.replace(settings, context_schema_path=str(path)))
    return Api(app.test_client(), app.config["CONTEXT_SCHEMA"].coze())


@PROPERTIES
@given(first=CONTEXTS, patch=CONTEXTS, replace=CONTEXTS, fields=FIELDS)
def test_any_context_and_typed_fields_through_every_write_tool_with_a_schema(typed, first, patch, replace, fields):
    run_writes(typed, first, patch, replace, fields)
