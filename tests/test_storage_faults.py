"""What a replica set answers when it fails, met by the real service through a fault-injecting wire proxy.

A write whose majority did not confirm in time (a write-concern error) or whose connection died
before the answer may have been applied: the answer is 503 saying so — never a success, never a
500, never "already exists". A write MongoDB refuses as too large for a document is HISTORY_LIMIT
and changes nothing. Every answer is the tool's output shape and leaks nothing.
"""

from __future__ import annotations

import dataclasses

import pytest

from app import spec
from tests.support import Api, fail, ok
from tests.wire_faults import (
    CommandFailure,
    DropConnection,
    Rule,
    WireProxy,
    WriteConcernFailure,
    WriteError,
    WriteErrors,
    command_named,
    writes_with_majority,
)

MAYBE_APPLIED = spec.UNKNOWN_OUTCOME


@pytest.fixture
def api(wire_proxy, settings, make_app) -> Api:
    """The service on the database through the proxy, with short timeouts."""
    through = dataclasses.replace(
        settings,
        mongodb_uri=wire_proxy.uri,
        mongodb_server_selection_timeout_ms=1000,
        mongodb_socket_timeout_ms=3000,
        mongodb_wtimeout_ms=1000,
    )
    return Api(make_app(through).test_client())


def one(wire_proxy: WireProxy, name: str, action) -> Rule:
    """`action` on the next `name` command that waits for a majority."""
    majority = writes_with_majority()
    return wire_proxy.inject(Rule(lambda c: command_named(name)(c) and majority(c), action, times=1))


def maybe_applied(status: int, data: dict, lang: str = "zh") -> None:
    assert status == 503, data
    fail(data, "STORAGE_UNAVAILABLE")
    assert data["error"] == MAYBE_APPLIED[lang == "en"]


@pytest.mark.parametrize("auto_clean", [True, False])
def test_a_create_whose_majority_timed_out_is_a_503_that_says_it_may_have_been_applied(
    api, wire_proxy, collection, auto_clean
):
    rule = one(wire_proxy, "insert", WriteConcernFailure())
    status, data = api.post(
        "session_create", {"user_id": "u1", "session_id": "s", "options": {"auto_clean": auto_clean}}
    )
    maybe_applied(status, data)
    assert rule.fired == 1
    assert collection.find_one({"_id": "s@u1"}) is not None  # it was applied, as on a real replica set
    assert ok(api.call("create", {"user_id": "u1", "session_id": "s"}))["created"] is False  # a retry finds it


def test_a_tombstone_conflict_beside_a_write_concern_error_is_not_read_as_success(api, wire_proxy, collection):
    failure = WriteErrors((WriteError(index=1),), write_concern_error=WriteConcernFailure())
    one(wire_proxy, "insert", failure)
    status, data = api.post("session_create", {"user_id": "u1", "session_id": "s", "options": {"lang": "en"}})
    maybe_applied(status, data, "en")


WRITES = [
    ("findAndModify", "update", {"context": '{"b":2}'}),
    ("findAndModify", "update", {"context": '{"b":2}', "options": {"merge": False}}),
    ("findAndModify", "append_messages", {"role": "user", "content": "hi"}),
    ("findAndModify", "touch", {}),
    ("findAndModify", "clear_history", {}),
    ("findAndModify", "close", {}),
    ("delete", "delete", {}),
]


@pytest.mark.parametrize(("command", "op", "body"), WRITES, ids=[f"{op}-{i}" for i, (_, op, _) in enumerate(WRITES)])
def test_every_write_whose_majority_timed_out_is_a_503_that_says_it_may_have_been_applied(
    api, wire_proxy, command, op, body
):
    ok(api.call("create", {"user_id": "u1", "session_id": "s", "context": '{"a":1}'}))
    one(wire_proxy, command, WriteConcernFailure())
    status, data = api.post(f"session_{op}", {"user_id": "u1", "session_id": "s", **body})
    maybe_applied(status, data)


def test_a_persist_false_write_does_not_wait_for_a_majority(api, wire_proxy):
    ok(api.call("create", {"user_id": "u1", "session_id": "s", "options": {"persist": False}}))
    wire_proxy.inject(Rule(writes_with_majority(), WriteConcernFailure()))  # every majority write would fail
    data = ok(
        api.call("update", {"user_id": "u1", "session_id": "s", "context": '{"a":1}', "options": {"persist": False}})
    )
    assert data["version"] == 2


def test_a_connection_lost_before_the_answer_is_a_503_that_says_the_write_may_have_been_applied(api, wire_proxy):
    ok(api.call("create", {"user_id": "u1", "session_id": "s"}))
    wire_proxy.inject(Rule(command_named("findAndModify"), DropConnection(), times=1))
    status, data = api.post(
        "session_append_messages", {"user_id": "u1", "session_id": "s", "role": "user", "content": "x"}
    )
    maybe_applied(status, data)


def test_a_primary_shutting_down_mid_write_is_a_503(api, wire_proxy):
    ok(api.call("create", {"user_id": "u1", "session_id": "s"}))
    wire_proxy.inject(
        Rule(command_named("findAndModify"), CommandFailure(91, "The server is in quiesce mode"), times=1)
    )
    status, data = api.post("session_update", {"user_id": "u1", "session_id": "s", "context": "{}"})
    maybe_applied(status, data)


@pytest.mark.parametrize("code", [17419, 10334])
def test_a_write_mongodb_refuses_as_too_large_for_a_document_is_history_limit_and_changes_nothing(
    api, wire_proxy, code
):
    ok(api.call("create", {"user_id": "u1", "session_id": "s"}))
    wire_proxy.inject(
        Rule(command_named("findAndModify"), CommandFailure(code, "document is larger than 16777216"), times=1)
    )
    status, data = api.post(
        "session_append_messages", {"user_id": "u1", "session_id": "s", "role": "user", "content": "x"}
    )
    assert status == 200
    fail(data, "HISTORY_LIMIT")
    after = ok(api.call("get", {"user_id": "u1", "session_id": "s"}))
    assert (after["version"], after["message_count"]) == (1, 0)


def test_a_retry_after_a_write_concern_error_answers_replayed_only_once_a_majority_holds_it(api, wire_proxy):
    ok(api.call("create", {"user_id": "u1", "session_id": "s"}))
    body = {"user_id": "u1", "session_id": "s", "context": '{"a":1}', "request_id": "w-1"}
    wire_proxy.inject(Rule(writes_with_majority(), WriteConcernFailure(), times=2))  # the write, then the first retry
    maybe_applied(*api.post("session_update", body))
    maybe_applied(*api.post("session_update", body))  # applied, but still not confirmed by a majority
    again = ok(api.call("update", body))
    assert (again["replayed"], again["version"]) == (True, 2)


def test_a_document_too_large_says_so_not_that_the_history_is_full(api, wire_proxy):
    ok(api.call("create", {"user_id": "u1", "session_id": "s"}))
    wire_proxy.inject(Rule(command_named("findAndModify"), CommandFailure(17419, "too large"), times=1))
    _, data = api.post(
        "session_update", {"user_id": "u1", "session_id": "s", "context": "{}", "options": {"lang": "en"}}
    )
    assert data["error"] == "the session would pass MongoDB's 16 MiB per document; nothing was stored"
