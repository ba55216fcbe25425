"""Expiry: sliding timeouts on the fake clock, revival by touch, purged sessions, the real TTL reaper."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.support import Api, ctx, fail, ok

STATE = ("ctx", "cp", "v", "n", "tot", "msgs", "st")
WRITES_AND_READS = [
    ("get", {}),
    ("update", {"context": '{"b": 2}'}),
    ("append_messages", {"role": "user", "content": "late"}),
    ("history", {}),
    ("clear_history", {}),
    ("close", {}),
]


def expired(data: dict) -> dict:
    """The whole answer for an expired session: the code, status "expired", no context."""
    fail(data, "SESSION_EXPIRED")
    assert (data["status"], data["context"], data["error"]) == ("expired", "", "会话已超时")
    return data


def call(api: Api, op: str, sid: str, **body) -> dict:
    return api.call(op, {"user_id": "u1", "session_id": sid, **body})


@pytest.mark.parametrize(("op", "body"), WRITES_AND_READS)
def test_every_operation_answers_expired_after_the_timeout_and_changes_nothing(api, clock, collection, op, body):
    sid = api.create("u1", context='{"a": 1}', options={"timeout": 60})["session_id"]
    ok(call(api, "append_messages", sid, role="user", content="hi"))
    before = collection.find_one({"_id": f"{sid}@u1"})
    clock.advance(60)
    data = expired(call(api, op, sid, **body))
    assert (data["session_id"], data["expires_in"]) == (sid, 0)
    after = collection.find_one({"_id": f"{sid}@u1"})
    assert [after[k] for k in STATE] == [before[k] for k in STATE]


def test_the_session_is_alive_one_second_before_the_timeout(api, clock):
    sid = api.create("u1", options={"timeout": 60})["session_id"]
    clock.advance(59)
    assert ok(call(api, "get", sid))["status"] == "active"


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("get", {}),
        ("update", {"context": "{}"}),
        ("append_messages", {"role": "user", "content": "x"}),
        ("history", {}),
        ("clear_history", {}),
        ("touch", {}),
    ],
)
def test_an_operation_before_expiry_restarts_the_timeout(api, clock, op, body):
    sid = api.create("u1", options={"timeout": 100})["session_id"]
    clock.advance(90)
    assert ok(call(api, op, sid, **body))["expires_in"] == 100
    clock.advance(90)
    data = ok(call(api, "get", sid))
    assert (data["status"], data["expires_in"]) == ("active", 100)


def test_list_does_not_restart_the_timeout(api, clock):
    sid = api.create("u1", options={"timeout": 100})["session_id"]
    clock.advance(90)
    listed = ok(api.call("list", {"user_id": "u1"}))["sessions"]
    assert [(s["session_id"], s["expires_in"]) for s in listed] == [(sid, 10)]
    clock.advance(10)
    fail(call(api, "get", sid), "SESSION_EXPIRED")
    assert ok(api.call("list", {"user_id": "u1"}))["sessions"][0]["status"] == "expired"


def test_touch_revives_an_expired_session_kept_by_auto_clean_false(api, clock):
    sid = api.create("u1", context='{"cart": [1]}', options={"timeout": 60, "auto_clean": False})["session_id"]
    clock.advance(3600)
    fail(call(api, "get", sid), "SESSION_EXPIRED")
    data = ok(call(api, "touch", sid))
    assert (data["status"], ctx(data), data["expires_in"]) == ("active", {"cart": [1]}, 60)
    assert ok(call(api, "update", sid, context='{"more": 1}'))["version"] == 2


def test_touch_revives_an_expired_auto_clean_session_the_reaper_has_not_purged_and_moves_its_purge_date(
    api, clock, collection
):
    sid = api.create("u1", context='{"cart": [1]}', options={"timeout": 60})["session_id"]
    ok(call(api, "append_messages", sid, role="user", content="hi"))
    clock.advance(61)  # expired, and the purge date (a grace after expiry) is close
    fail(call(api, "get", sid), "SESSION_EXPIRED")
    data = ok(call(api, "touch", sid))
    assert (data["status"], ctx(data), data["expires_in"], data["message_count"]) == ("active", {"cart": [1]}, 60, 1)
    stored = collection.find_one({"_id": f"{sid}@u1"})
    tomb = collection.find_one({"_id": f"~{sid}@u1"})
    assert stored["pms"] > stored["exp"] and tomb["pms"] > stored["pms"]  # the reaper waits for it again
    assert [m["content"] for m in ok(call(api, "history", sid))["messages"]] == ["hi"]


def test_touch_refuses_to_revive_when_the_user_has_no_free_slot(api, clock, collection):
    sid = api.create("u1", options={"timeout": 60, "auto_clean": False})["session_id"]
    clock.advance(61)
    others = [api.create("u1")["session_id"] for _ in range(10)]
    data = call(api, "touch", sid)
    assert data["error_code"] == "SESSION_LIMIT_EXCEEDED", data
    fail(call(api, "get", sid), "SESSION_EXPIRED")
    assert collection.find_one({"_id": f"{sid}@u1"}) is not None
    ok(call(api, "close", others[0]))
    assert ok(call(api, "touch", sid))["status"] == "active"
    assert api.call("create", {"user_id": "u1"})["error_code"] == "SESSION_LIMIT_EXCEEDED"


def test_a_purged_session_still_answers_expired(api, clock, collection):
    sid = api.create("u1", context='{"a": 1}', options={"timeout": 60})["session_id"]
    clock.advance(61)
    assert collection.delete_one({"_id": f"{sid}@u1"}).deleted_count == 1  # what the TTL reaper does
    assert collection.find_one({"_id": f"~{sid}@u1"}) is not None
    for op, body in [*WRITES_AND_READS, ("touch", {})]:
        expired(call(api, op, sid, **body))
    assert collection.count_documents({"_id": f"{sid}@u1"}) == 0


def test_creating_again_with_the_id_of_an_expired_session_starts_a_fresh_one(api, clock):
    api.create("u1", session_id="daily", context='{"old": true}', options={"timeout": 60})
    clock.advance(61)
    data = api.create("u1", session_id="daily", context='{"new": true}')
    assert (data["created"], ctx(data), data["version"]) == (True, {"new": True}, 1)


@pytest.mark.slow
def test_the_real_ttl_reaper_purges_an_expired_session_but_keeps_auto_clean_false(settings, make_app, collection):
    api = Api(make_app(dataclasses.replace(settings, purge_grace=1), None).test_client())
    purged = api.create("u1", options={"timeout": 1})["session_id"]
    kept = api.create("u1", options={"timeout": 1, "auto_clean": False})["session_id"]
    deadline = time.monotonic() + 150
    while collection.find_one({"_id": f"{purged}@u1"}) is not None:
        assert time.monotonic() < deadline, "the TTL reaper did not remove the session within 150 s"
        time.sleep(1)
    expired(call(api, "get", purged))
    assert collection.find_one({"_id": f"~{purged}@u1"}) is not None
    assert collection.find_one({"_id": f"{kept}@u1"}) is not None
    expired(call(api, "get", kept))
    data = ok(call(api, "touch", kept, options={"timeout": 600}))
    assert (data["status"], data["context"]) == ("active", "{}")
    assert ok(call(api, "get", kept))["status"] == "active"
