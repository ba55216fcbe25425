"""Every operation's success path, through its own tool and through the `operation` tool."""

from __future__ import annotations

import re

import pytest

from tests.support import ctx, fail, ok

U = "u1"


@pytest.fixture(params=[False, True], ids=["own_tool", "operation_tool"])
def run(request, api):
    """Call an operation through the tool under test; user U unless the body says otherwise."""

    def call(op: str, body: dict | None = None) -> dict:
        return api.call(op, {"user_id": U, **(body or {})}, manage=request.param)

    return call


def say(run, sid: str, *contents: str) -> dict:
    messages = [{"role": "user", "content": c} for c in contents]
    return ok(run("append_messages", {"session_id": sid, "messages": messages}))


def test_create_generates_a_sess_id_of_32_hex_digits(run):
    data = ok(run("create"))
    assert re.fullmatch(r"sess_[0-9a-f]{32}", data["session_id"])
    assert data["created"] is True
    assert (data["status"], data["context"], data["version"], data["message_count"]) == ("active", "{}", 1, 0)
    assert data["expires_in"] == 1800
    assert data["created_at"] == data["updated_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["expires_at"])
    assert ok(run("create"))["session_id"] != data["session_id"]


def test_create_with_a_caller_id_twice_returns_the_same_session_not_a_new_one(run):
    first = ok(run("create", {"session_id": "chat:42", "context": '{"a": 1}'}))
    assert (first["session_id"], first["created"], ctx(first)) == ("chat:42", True, {"a": 1})
    again = ok(run("create", {"session_id": "chat:42", "context": '{"b": 2}'}))
    assert again["created"] is False
    assert ctx(again) == {"a": 1}
    for name in ("session_id", "version", "created_at", "status"):
        assert again[name] == first[name]


def test_get_returns_the_state_and_context(run):
    sid = ok(run("create", {"context": '{"k": "v"}'}))["session_id"]
    data = ok(run("get", {"session_id": sid}))
    assert (data["session_id"], data["status"], ctx(data), data["version"]) == (sid, "active", {"k": "v"}, 1)


def test_update_merges_into_the_context_and_returns_it(run):
    sid = ok(run("create", {"context": '{"a": 1, "b": {"c": 2}}'}))["session_id"]
    data = ok(run("update", {"session_id": sid, "context": '{"b": {"d": 3}}'}))
    assert ctx(data) == {"a": 1, "b": {"c": 2, "d": 3}}
    assert ctx(ok(run("get", {"session_id": sid}))) == ctx(data)


def test_append_messages_numbers_each_message_and_stamps_server_time(run, clock):
    sid = ok(run("create"))["session_id"]
    data = say(run, sid, "hi", "again")
    assert [(m["seq"], m["role"], m["content"]) for m in data["messages"]] == [(1, "user", "hi"), (2, "user", "again")]
    assert all(re.fullmatch(r"\d{4}-.*\.\d{3}Z", m["ts"]) for m in data["messages"])
    assert (data["message_count"], data["dropped"]) == (2, 0)
    clock.advance(5)
    one = ok(run("append_messages", {"session_id": sid, "role": "assistant", "content": "hello"}))
    assert [(m["seq"], m["role"], m["content"]) for m in one["messages"]] == [(3, "assistant", "hello")]
    assert one["messages"][0]["ts"] > data["messages"][0]["ts"]
    assert one["message_count"] == 3


def test_history_returns_the_newest_page_in_order_and_cursor_pages_back_to_the_oldest(run):
    sid = ok(run("create"))["session_id"]
    say(run, sid, *[f"m{i}" for i in range(1, 8)])
    page = ok(run("history", {"session_id": sid, "options": {"limit": 3}}))
    assert [m["content"] for m in page["messages"]] == ["m5", "m6", "m7"]
    assert page["message_count"] == 7
    seen = page["messages"]
    while page["next_cursor"]:
        page = ok(run("history", {"session_id": sid, "options": {"limit": 3, "cursor": page["next_cursor"]}}))
        seen = page["messages"] + seen
    assert [m["content"] for m in seen] == [f"m{i}" for i in range(1, 8)]
    assert [m["seq"] for m in seen] == list(range(1, 8))
    assert [m["content"] for m in page["messages"]] == ["m1"]


def test_history_without_limit_returns_everything_with_no_cursor(run):
    sid = ok(run("create"))["session_id"]
    say(run, sid, "a", "b")
    data = ok(run("history", {"session_id": sid}))
    assert [m["content"] for m in data["messages"]] == ["a", "b"]
    assert data["next_cursor"] == ""


def test_clear_history_empties_it_and_seq_numbers_are_never_reused(run):
    sid = ok(run("create", {"context": '{"keep": true}'}))["session_id"]
    say(run, sid, "a", "b", "c")
    cleared = ok(run("clear_history", {"session_id": sid}))
    assert (cleared["message_count"], ctx(cleared)) == (0, {"keep": True})
    assert ok(run("history", {"session_id": sid}))["messages"] == []
    assert [m["seq"] for m in say(run, sid, "d")["messages"]] == [4]
    assert [(m["seq"], m["content"]) for m in ok(run("history", {"session_id": sid}))["messages"]] == [(4, "d")]


def test_touch_restarts_the_timeout_and_its_option_changes_it(run, clock):
    sid = ok(run("create", {"options": {"timeout": 600}}))["session_id"]
    clock.advance(100)
    assert ok(run("get", {"session_id": sid}))["expires_in"] == 600
    clock.advance(100)
    assert ok(run("touch", {"session_id": sid, "options": {"timeout": 90}}))["expires_in"] == 90
    clock.advance(30)
    assert ok(run("get", {"session_id": sid}))["expires_in"] == 90


def test_list_pages_through_every_session_newest_first(run, clock):
    ids = []
    for _ in range(5):
        ids.append(ok(run("create"))["session_id"])
        clock.advance(1)
    page = ok(run("list", {"options": {"limit": 2}}))
    seen = [s["session_id"] for s in page["sessions"]]
    assert page["context"] == "" and page["session_id"] == ""
    while page["next_cursor"]:
        page = ok(run("list", {"options": {"limit": 2, "cursor": page["next_cursor"]}}))
        seen += [s["session_id"] for s in page["sessions"]]
    assert seen == ids[::-1]


def test_list_filters_by_status(run, clock):
    live = ok(run("create", {"session_id": "live"}))["session_id"]
    done = ok(run("create", {"session_id": "done"}))["session_id"]
    old = ok(run("create", {"session_id": "old", "options": {"timeout": 10}}))["session_id"]
    ok(run("close", {"session_id": done}))
    clock.advance(11)

    def listed(status: str) -> dict:
        return {s["session_id"]: s["status"] for s in ok(run("list", {"options": {"status": status}}))["sessions"]}

    assert listed("active") == {live: "active"}
    assert listed("closed") == {done: "closed"}
    assert listed("expired") == {old: "expired"}
    assert listed("all") == {live: "active", done: "closed", old: "expired"}
    assert ok(run("list", {"user_id": "nobody"}))["sessions"] == []


def test_a_closed_session_is_readable_but_not_writable(run):
    sid = ok(run("create", {"context": '{"a": 1}'}))["session_id"]
    say(run, sid, "hi")
    closed = ok(run("close", {"session_id": sid}))
    assert (closed["status"], closed["version"]) == ("closed", 3)
    got = ok(run("get", {"session_id": sid}))
    assert (got["status"], ctx(got)) == ("closed", {"a": 1})
    assert [m["content"] for m in ok(run("history", {"session_id": sid}))["messages"]] == ["hi"]
    writes = [
        ("update", {"context": '{"b": 2}'}),
        ("append_messages", {"role": "user", "content": "x"}),
        ("clear_history", {}),
        ("touch", {}),
    ]
    for op, body in writes:
        data = fail(run(op, {"session_id": sid, **body}), "SESSION_CLOSED")
        assert data["error"] == "会话已关闭"
    after = ok(run("get", {"session_id": sid}))
    assert (ctx(after), after["version"], after["message_count"]) == ({"a": 1}, 3, 1)
    twice = ok(run("close", {"session_id": sid}))
    assert (twice["status"], twice["version"]) == ("closed", 3)


def test_closing_a_session_frees_its_slot(run):
    ids = [ok(run("create"))["session_id"] for _ in range(10)]
    fail(run("create"), "SESSION_LIMIT_EXCEEDED")
    ok(run("close", {"session_id": ids[3]}))
    assert ok(run("create"))["created"] is True


def test_delete_removes_the_session_and_deleting_again_answers_not_found(run, collection):
    sid = ok(run("create", {"session_id": "gone"}))["session_id"]
    say(run, sid, "hi")
    data = ok(run("delete", {"session_id": sid}))
    assert (data["session_id"], data["status"]) == (sid, "deleted")
    assert collection.count_documents({"uid": U}) == 0
    for op in ("get", "history", "delete"):
        data = fail(run(op, {"session_id": sid}), "SESSION_NOT_FOUND")
        assert (data["status"], data["context"]) == ("", "")


def test_version_grows_by_one_on_every_change_and_not_on_reads_or_touch(run):
    sid = ok(run("create", {"session_id": "v"}))["session_id"]
    steps = [
        ("get", {}, 1),
        ("update", {"context": '{"a": 1}'}, 2),
        ("history", {}, 2),
        ("append_messages", {"role": "user", "content": "x"}, 3),
        ("touch", {}, 3),
        ("create", {}, 3),
        ("clear_history", {}, 4),
        ("update", {"context": '{"a": 2}', "options": {"merge": False}}, 5),
        ("close", {}, 6),
        ("get", {}, 6),
    ]
    for op, body, version in steps:
        assert ok(run(op, {"session_id": sid, **body}))["version"] == version, op


def test_expected_version_applies_a_write_only_at_that_version(run):
    sid = ok(run("create", {"context": '{"n": 0}'}))["session_id"]
    data = ok(run("update", {"session_id": sid, "context": '{"n": 1}', "options": {"expected_version": 1}}))
    assert (data["version"], ctx(data)) == (2, {"n": 1})
    stale = [
        ("update", {"context": '{"n": 9}'}),
        ("append_messages", {"role": "user", "content": "x"}),
        ("clear_history", {}),
        ("close", {}),
    ]
    for op, body in stale:
        data = fail(run(op, {"session_id": sid, **body, "options": {"expected_version": 1}}), "VERSION_CONFLICT")
        assert data["version"] == 2, op
        assert "2" in data["error"]
    after = ok(run("get", {"session_id": sid}))
    assert (after["status"], after["version"], ctx(after), after["message_count"]) == ("active", 2, {"n": 1}, 0)
    assert (
        ok(
            run(
                "append_messages",
                {"session_id": sid, "role": "user", "content": "y", "options": {"expected_version": 2}},
            )
        )["version"]
        == 3
    )


def test_errors_are_chinese_by_default_and_english_on_request(run, clock):
    assert fail(run("get", {"session_id": "nope"}), "SESSION_NOT_FOUND")["error"] == "会话不存在"
    en = {"options": {"lang": "en"}}
    assert fail(run("get", {"session_id": "nope", **en}), "SESSION_NOT_FOUND")["error"] == "session not found"
    sid = ok(run("create", {"options": {"timeout": 5}}))["session_id"]
    clock.advance(6)
    assert fail(run("get", {"session_id": sid}), "SESSION_EXPIRED")["error"] == "会话已超时"
    assert fail(run("get", {"session_id": sid, **en}), "SESSION_EXPIRED")["error"] == "session expired"
    bad = fail(run("get", {"session_id": "a b", **en}), "INVALID_ARGUMENT")["error"]
    assert bad.startswith("invalid argument: session_id")
    fail(run("get", {"session_id": "a b"}), "INVALID_ARGUMENT", field="session_id")
