"""Inputs as Coze sends them: "" and 0 for unset inputs, null as missing, the end user in a header."""

from __future__ import annotations

import re

import pytest

from app import validation
from tests.support import ctx, fail, ok

CONNECTOR = {"X-Aiplugin-Connector-Identifier": "coze-end-user-7"}


@pytest.mark.parametrize("manage", [False, True])
@pytest.mark.parametrize("empty", ["", 0, None])
def test_an_empty_session_id_on_create_generates_one_and_empty_context_gives_an_empty_object(api, manage, empty):
    data = ok(api.call("create", {"user_id": "u1", "session_id": empty, "context": empty}, manage=manage))
    assert re.fullmatch(r"sess_[0-9a-f]{32}", data["session_id"])
    assert (data["created"], data["context"]) == (True, "{}")


def test_a_manage_call_filled_with_cozes_zero_values_works_for_every_operation(api):
    blank = {"user_id": "u1", "session_id": "", "context": "", "messages": [], "role": "", "content": ""}
    sid = ok(api.call("create", blank, manage=True))["session_id"]
    for op in ("get", "history", "clear_history", "touch", "close", "get"):
        assert ok(api.call(op, {**blank, "session_id": sid}, manage=True))["session_id"] == sid
    assert ok(api.call("list", blank, manage=True))["sessions"][0]["session_id"] == sid


def test_empty_role_and_content_are_ignored_when_messages_are_given(api):
    sid = api.create("u1")["session_id"]
    body = {
        "user_id": "u1",
        "session_id": sid,
        "messages": [{"role": "user", "content": "hi"}],
        "role": "",
        "content": "",
    }
    data = ok(api.call("append_messages", body))
    assert [(m["role"], m["content"]) for m in data["messages"]] == [("user", "hi")]


def test_empty_messages_are_ignored_when_role_and_content_are_given(api):
    sid = api.create("u1")["session_id"]
    body = {"user_id": "u1", "session_id": sid, "messages": [], "role": "assistant", "content": "ok"}
    assert [m["content"] for m in ok(api.call("append_messages", body, manage=True))["messages"]] == ["ok"]


def test_an_append_with_nothing_to_append_is_refused(api):
    sid = api.create("u1")["session_id"]
    data = api.call("append_messages", {"user_id": "u1", "session_id": sid, "messages": [], "role": "", "content": ""})
    fail(data, "INVALID_ARGUMENT", field="messages")


@pytest.mark.parametrize("op", ["get", "history", "touch", "close", "delete"])
def test_a_needed_session_id_left_empty_is_refused_naming_it(api, op):
    for empty in ("", 0, None):
        fail(api.call(op, {"user_id": "u1", "session_id": empty}), "INVALID_ARGUMENT", field="session_id")
        fail(api.call(op, {"user_id": "u1", "session_id": empty}, manage=True), "INVALID_ARGUMENT", field="session_id")


def test_an_update_with_empty_context_is_refused_naming_it(api):
    sid = api.create("u1")["session_id"]
    fail(api.call("update", {"user_id": "u1", "session_id": sid, "context": ""}), "INVALID_ARGUMENT", field="context")


def test_omitted_options_get_their_declared_defaults(api, collection):
    data = ok(api.call("create", {"user_id": "u1", "context": '{"a": {"b": 1}}'}))
    assert data["expires_in"] == 1800
    stored = collection.find_one({"_id": f"{data['session_id']}@u1"})
    assert stored["ac"] is True and "pa" in stored
    assert stored["mh"] == 1000
    merged = ok(api.call("update", {"user_id": "u1", "session_id": data["session_id"], "context": '{"a": {"c": 2}}'}))
    assert ctx(merged) == {"a": {"b": 1, "c": 2}}
    update_body = {"user_id": "u1", "session_id": "s", "context": "{}"}
    for tool, body in (
        ("session_create", {"user_id": "u1"}),
        ("session_update", update_body),
        ("session_manage", {"operation": "update", **update_body}),
    ):
        assert validation.parse(tool, body).options.persist is True, tool


def test_null_values_are_treated_as_missing(api, collection):
    body = {"user_id": "u1", "session_id": None, "context": None, "options": {"timeout": None, "auto_clean": None}}
    data = ok(api.call("create", body))
    assert (data["context"], data["expires_in"]) == ("{}", 1800)
    assert "pa" in collection.find_one({"_id": f"{data['session_id']}@u1"})
    update = {"user_id": "u1", "session_id": data["session_id"], "context": '{"x": 1}', "options": {"merge": None}}
    assert ctx(ok(api.call("update", update))) == {"x": 1}
    assert ok(api.call("get", {"user_id": "u1", "session_id": data["session_id"], "options": None}))["version"] == 2


@pytest.mark.parametrize("manage", [False, True])
def test_an_empty_user_id_is_taken_from_the_coze_connector_header(api, manage):
    body = {"user_id": "", "session_id": "s1"}
    tool = "session_manage" if manage else "session_create"
    status, data = api.post(tool, {"operation": "create", **body} if manage else body, headers=CONNECTOR)
    assert status == 200
    ok(data)
    got = ok(api.call("get", {"user_id": "coze-end-user-7", "session_id": "s1"}))
    assert got["session_id"] == "s1"
    status, data = api.post("session_get", {"session_id": "s1"}, headers=CONNECTOR)
    assert (status, data["error_code"], data["status"]) == (200, "", "active")


def test_a_given_user_id_wins_over_the_connector_header(api):
    status, data = api.post("session_create", {"user_id": "explicit", "session_id": "s1"}, headers=CONNECTOR)
    assert (status, data["error_code"]) == (200, "")
    assert ok(api.call("get", {"user_id": "explicit", "session_id": "s1"}))["status"] == "active"
    assert api.call("get", {"user_id": "coze-end-user-7", "session_id": "s1"})["error_code"] == "SESSION_NOT_FOUND"


@pytest.mark.parametrize("tool", ["session_create", "session_list", "session_get", "session_manage"])
def test_no_user_id_and_no_header_is_refused_naming_user_id(api, tool):
    body = (
        {"operation": "create"} if tool == "session_manage" else {} if tool == "session_list" else {"session_id": "s1"}
    )
    for user_id in (None, "", 0):
        status, data = api.post(tool, {**body, "user_id": user_id})
        assert status == 200
        fail(data, "INVALID_ARGUMENT", field="user_id")


@pytest.mark.parametrize(
    ("tool", "body", "field"),
    [
        ("session_create", {"user_id": "u1", "colour": "red"}, "colour"),
        ("session_get", {"user_id": "u1", "session_id": "s", "context": "{}"}, "context"),
        ("session_create", {"user_id": "u1", "options": {"ttl": 5}}, "options.ttl"),
        ("session_get", {"user_id": "u1", "session_id": "s", "options": {"merge": True}}, "options.merge"),
        ("session_manage", {"operation": "get", "user_id": "u1", "extra": 1}, "extra"),
    ],
)
def test_an_unknown_field_is_refused_naming_it(api, tool, body, field):
    status, data = api.post(tool, body)
    assert status == 200
    fail(data, "INVALID_ARGUMENT", field=field)


@pytest.mark.parametrize(
    ("op", "body", "field"),
    [
        ("create", {"options": {"timeout": "60"}}, "options.timeout"),
        ("create", {"options": {"timeout": 1.5}}, "options.timeout"),
        ("create", {"options": {"timeout": -5}}, "options.timeout"),
        ("create", {"options": {"auto_clean": "false"}}, "options.auto_clean"),
        ("create", {"options": {"max_history": 1001}}, "options.max_history"),
        ("create", {"session_id": 5}, "session_id"),
        ("create", {"session_id": "has space"}, "session_id"),
        ("create", {"session_id": "x" * 129}, "session_id"),
        ("create", {"options": "fast"}, "options"),
        ("append_messages", {"session_id": "s", "messages": "hi"}, "messages"),
        ("append_messages", {"session_id": "s", "messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
        ("append_messages", {"session_id": "s", "messages": [{"role": "user", "content": 1}]}, "messages.0.content"),
        ("append_messages", {"session_id": "s", "messages": [{"role": "user"}]}, "messages.0.content"),
        ("update", {"session_id": "s", "context": "{}", "options": {"merge": "yes"}}, "options.merge"),
        ("history", {"session_id": "s", "options": {"limit": "10"}}, "options.limit"),
        ("list", {"options": {"status": "open"}}, "options.status"),
    ],
)
@pytest.mark.parametrize("manage", [False, True])
def test_a_wrong_type_or_value_is_refused_naming_the_field_path(api, collection, op, body, field, manage):
    fail(api.call(op, {"user_id": "u1", **body}, manage=manage), "INVALID_ARGUMENT", field=field)
    assert collection.count_documents({}) == 0


def test_a_body_that_is_not_a_json_object_is_refused(api):
    for raw in (b"[1, 2]", b"not json", b'"text"'):
        status, data = api.post("session_create", None, raw=raw)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), raw
