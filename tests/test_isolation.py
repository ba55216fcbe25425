"""Isolation: a session exists only for its own user; anyone else sees a session that never existed."""

from __future__ import annotations

import pytest

from tests.support import ctx, ok

OPERATIONS = [
    ("get", {}),
    ("update", {"context": '{"stolen": true}'}),
    ("update", {"context": "{}", "options": {"merge": False}}),
    ("append_messages", {"role": "user", "content": "injected"}),
    ("append_messages", {"messages": [{"role": "system", "content": "x"}], "options": {"on_overflow": "reject"}}),
    ("history", {}),
    ("clear_history", {}),
    ("touch", {"options": {"timeout": 60}}),
    ("close", {}),
    ("delete", {}),
]


def without_id(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "session_id"}


@pytest.fixture
def owned(api, collection):
    """u1's session "sess_1" with context and messages, and a snapshot of everything stored."""
    api.create("u1", session_id="sess_1", context='{"secret": 42}')
    ok(api.call("append_messages", {"user_id": "u1", "session_id": "sess_1", "role": "user", "content": "private"}))
    return lambda: sorted(collection.find({}), key=lambda d: d["_id"])


@pytest.mark.parametrize(("op", "body"), OPERATIONS)
@pytest.mark.parametrize("manage", [False, True])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_another_users_session_answers_exactly_like_a_missing_one_and_changes_nothing(
    api, owned, op, body, manage, lang
):
    body = {**body, "options": {**body.get("options", {}), "lang": lang}}
    before = owned()
    theirs = api.call(op, {"user_id": "u2", "session_id": "sess_1", **body}, manage=manage)
    missing = api.call(op, {"user_id": "u2", "session_id": "never_was", **body}, manage=manage)
    assert theirs["error_code"] == "SESSION_NOT_FOUND", theirs
    assert without_id(theirs) == without_id(missing)
    assert (theirs["session_id"], missing["session_id"]) == ("sess_1", "never_was")
    assert owned() == before


def test_another_users_list_does_not_show_the_session(api, owned):
    assert ok(api.call("list", {"user_id": "u2"}))["sessions"] == []
    assert [s["session_id"] for s in ok(api.call("list", {"user_id": "u1"}))["sessions"]] == ["sess_1"]


def test_a_lookalike_user_id_is_another_user(api, owned):
    for uid in ("U1", "u1 ", " u1", "u1@", "1", "u"):
        data = api.call("get", {"user_id": uid, "session_id": "sess_1"})
        assert data["error_code"] == "SESSION_NOT_FOUND", (uid, data)


def test_two_users_may_both_own_sess_1_and_they_are_independent(api, collection):
    for uid in ("alice", "bob"):
        data = api.create(uid, session_id="sess_1", context=f'{{"owner": "{uid}"}}')
        assert data["created"] is True

    def call(uid: str, op: str, **body) -> dict:
        return ok(api.call(op, {"user_id": uid, "session_id": "sess_1", **body}))

    call("alice", "update", context='{"n": 1}')
    call("alice", "append_messages", role="user", content="from alice")
    bob = call("bob", "get")
    assert (ctx(bob), bob["version"], bob["message_count"]) == ({"owner": "bob"}, 1, 0)
    assert call("bob", "history")["messages"] == []
    call("bob", "close")
    assert call("alice", "get")["status"] == "active"
    call("alice", "delete")
    assert call("bob", "get")["status"] == "closed"
    assert api.call("get", {"user_id": "alice", "session_id": "sess_1"})["error_code"] == "SESSION_NOT_FOUND"
    assert [d["uid"] for d in collection.find({"sid": "sess_1", "k": "s"})] == ["bob"]


def test_user_ids_with_at_signs_do_not_collide_with_other_keys(api):
    api.create("b@c", session_id="a", context='{"who": "b@c"}')
    api.create("c", session_id="a", context='{"who": "c"}')
    assert ctx(ok(api.call("get", {"user_id": "b@c", "session_id": "a"}))) == {"who": "b@c"}
    assert ctx(ok(api.call("get", {"user_id": "c", "session_id": "a"}))) == {"who": "c"}
    assert api.call("get", {"user_id": "c", "session_id": "a@b"})["error_code"] == "INVALID_ARGUMENT"
