"""The spec's limits, each enforced: sessions per user, history length, message and context size."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.support import Api, ctx, fail, ok

MIB = 1024 * 1024


def sized(total: int) -> dict:
    """A context whose compact JSON is exactly `total` UTF-8 bytes."""
    value = {"k": "x" * (total - len('{"k":""}'))}
    assert len(json.dumps(value, separators=(",", ":")).encode()) == total
    return value


def stored(collection, uid: str = "u1") -> list[dict]:
    return list(collection.find({"uid": uid, "k": "s"}))


def fill(api: Api, n: int, uid: str = "u1", **options) -> list[str]:
    return [api.create(uid, options=options)["session_id"] for _ in range(n)]


@pytest.mark.parametrize("manage", [False, True])
def test_the_eleventh_active_session_is_refused_and_nothing_is_stored(api, collection, manage):
    fill(api, 10)
    data = fail(api.call("create", {"user_id": "u1", "session_id": "eleven"}, manage=manage), "SESSION_LIMIT_EXCEEDED")
    assert data["error"] == "会话数已达上限（10 个活动会话）"
    assert (data["status"], data["context"]) == ("", "")
    assert len(stored(collection)) == 10
    assert collection.count_documents({"sid": "eleven"}) == 0
    assert api.create("u2")["created"] is True  # the limit is per user


def test_closed_sessions_do_not_count_toward_the_limit(api):
    ids = fill(api, 10)
    for sid in ids[:2]:
        ok(api.call("close", {"user_id": "u1", "session_id": sid}))
    fill(api, 2)
    fail(api.call("create", {"user_id": "u1"}), "SESSION_LIMIT_EXCEEDED")
    listed = ok(api.call("list", {"user_id": "u1", "options": {"limit": 100}}))["sessions"]
    assert sorted(s["status"] for s in listed) == ["active"] * 10 + ["closed"] * 2


def test_expired_sessions_do_not_count_toward_the_limit(api, clock):
    old = fill(api, 10, timeout=60)
    clock.advance(61)
    fresh = fill(api, 10)
    fail(api.call("create", {"user_id": "u1"}), "SESSION_LIMIT_EXCEEDED")
    for sid in old[:3]:
        fail(api.call("get", {"user_id": "u1", "session_id": sid}), "SESSION_EXPIRED")
    assert ok(api.call("get", {"user_id": "u1", "session_id": fresh[0]}))["status"] == "active"


def test_create_with_an_existing_caller_id_does_not_take_a_slot(api, collection):
    api.create("u1", session_id="mine")
    fill(api, 9)
    again = ok(api.call("create", {"user_id": "u1", "session_id": "mine"}))
    assert again["created"] is False
    assert len(stored(collection)) == 10


def test_appending_past_max_history_keeps_the_newest_and_reports_dropped(api):
    sid = api.create("u1", options={"max_history": 3})["session_id"]
    body = {"user_id": "u1", "session_id": sid}
    first = ok(api.call("append_messages", {**body, "messages": [{"role": "user", "content": "1"}] * 2}))
    assert first["dropped"] == 0
    data = ok(api.call("append_messages", {**body, "messages": [{"role": "user", "content": c} for c in "345"]}))
    assert (data["dropped"], data["message_count"]) == (2, 3)
    assert [m["seq"] for m in data["messages"]] == [3, 4, 5]
    page = ok(api.call("history", body))
    assert [(m["seq"], m["content"]) for m in page["messages"]] == [(3, "3"), (4, "4"), (5, "5")]
    big = ok(api.call("append_messages", {**body, "messages": [{"role": "tool", "content": str(i)} for i in range(7)]}))
    assert (big["dropped"], big["message_count"]) == (7, 3)  # the 3 stored and 4 of the 7 new
    assert [m["content"] for m in ok(api.call("history", body))["messages"]] == ["4", "5", "6"]


def test_on_overflow_reject_refuses_the_append_and_stores_nothing(api, collection):
    sid = api.create("u1", options={"max_history": 3})["session_id"]
    body = {"user_id": "u1", "session_id": sid}
    ok(api.call("append_messages", {**body, "messages": [{"role": "user", "content": "a"}] * 2}))
    before = collection.find_one({"_id": f"{sid}@u1"})
    two = [{"role": "user", "content": "b"}] * 2
    data = fail(
        api.call("append_messages", {**body, "messages": two, "options": {"on_overflow": "reject"}}), "HISTORY_LIMIT"
    )
    assert data["error"] == "消息历史已满（上限 3 条）"
    assert (data["message_count"], data["version"]) == (2, 2)
    assert collection.find_one({"_id": f"{sid}@u1"}) == before
    one = {**body, "role": "user", "content": "c", "options": {"on_overflow": "reject"}}
    assert ok(api.call("append_messages", one))["message_count"] == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "user", "content": "x" * (64 * 1024 + 1)}, "content"),
        (
            {"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "中" * 21846}]},
            "messages.1.content",
        ),
    ],
)
def test_a_message_over_64_kib_is_refused_naming_the_field(api, collection, body, field):
    sid = api.create("u1")["session_id"]
    fail(api.call("append_messages", {"user_id": "u1", "session_id": sid, **body}), "INVALID_ARGUMENT", field=field)
    assert collection.find_one({"_id": f"{sid}@u1"})["n"] == 0


def test_a_message_of_exactly_64_kib_is_accepted(api):
    sid = api.create("u1")["session_id"]
    data = ok(api.call("append_messages", {"user_id": "u1", "session_id": sid, "role": "user", "content": "é" * 32768}))
    assert len(data["messages"][0]["content"].encode()) == 64 * 1024


@pytest.mark.parametrize("as_text", [True, False])
def test_a_context_of_exactly_1_mib_is_accepted_and_one_byte_more_refused_on_create(api, collection, as_text):
    def create(value: dict) -> dict:
        context = json.dumps(value) if as_text else value
        return api.call("create", {"user_id": "u1", "context": context})

    data = ok(create(sized(MIB)))
    assert ctx(data) == sized(MIB)
    too_big = fail(create(sized(MIB + 1)), "CONTEXT_TOO_LARGE")
    assert too_big["error"] == f"上下文数据过大（{MIB + 1} 字节，上限 {MIB} 字节）"
    assert len(stored(collection)) == 1


def test_an_update_to_1_mib_plus_one_byte_is_refused_and_changes_nothing(api, collection):
    sid = api.create("u1", context='{"a": 1}')["session_id"]
    grown = ok(
        api.call("update", {"user_id": "u1", "session_id": sid, "context": sized(MIB), "options": {"merge": False}})
    )
    assert grown["version"] == 2
    before = collection.find_one({"_id": f"{sid}@u1"})
    for patch, merge in ((sized(MIB + 1), False), ({"b": 1}, True)):
        body = {"user_id": "u1", "session_id": sid, "context": patch, "options": {"merge": merge}}
        fail(api.call("update", body), "CONTEXT_TOO_LARGE")
    after = collection.find_one({"_id": f"{sid}@u1"})
    assert (after["v"], after["ctx"]) == (2, before["ctx"])
    assert after == before


@pytest.fixture
def build(settings, make_app):
    """An Api on an app with other server settings."""
    return lambda **changes: Api(make_app(dataclasses.replace(settings, **changes)).test_client())


def test_the_session_limit_comes_from_the_settings(build, collection):
    api = build(max_sessions=2)
    fill(api, 2)
    data = fail(api.call("create", {"user_id": "u1", "options": {"lang": "en"}}), "SESSION_LIMIT_EXCEEDED")
    assert data["error"] == "session limit reached (2 active sessions)"
    assert len(stored(collection)) == 2


def test_history_timeout_and_context_limits_come_from_the_settings(build):
    api = build(max_history=5, session_timeout=120, max_context_bytes=100, max_timeout=600)
    data = api.create("u1")
    assert data["expires_in"] == 120
    body = {"user_id": "u1", "session_id": data["session_id"]}
    appended = ok(api.call("append_messages", {**body, "messages": [{"role": "user", "content": "m"}] * 7}))
    assert (appended["dropped"], appended["message_count"]) == (2, 5)
    fail(api.call("update", {**body, "context": sized(101)}), "CONTEXT_TOO_LARGE")
    assert ok(api.call("update", {**body, "context": sized(100)}))["version"] == 3
    for options, field in (({"max_history": 6}, "options.max_history"), ({"timeout": 601}, "options.timeout")):
        fail(api.call("create", {"user_id": "u1", "options": options}), "INVALID_ARGUMENT", field=field)
