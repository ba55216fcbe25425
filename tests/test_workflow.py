"""Safe in a real Coze workflow: values from variables, retries that never double-apply, the session lock,
auto-resume. Sent as a workflow node sends them (tests/coze_standin.py WorkflowNode), through the tool
of each operation and through the `operation` tool alike; the clock is the tests' fake one.
"""

from __future__ import annotations

import json

import pytest

from app import schemas
from tests.coze_standin import WorkflowNode
from tests.support import AUTH, fail, ok

USER = "wf-user"


@pytest.fixture
def call(app):
    """call(op, manage=False, **inputs): one node of the workflow, of the op's own tool or the operation tool."""
    document = schemas.openapi_document("https://sessions.example.com")
    client = app.test_client()

    def post(path: str, body: dict) -> tuple[int, dict]:
        answer = client.post(path, json=body, headers={**AUTH, "X-Aiplugin-Connector-Identifier": USER})
        return answer.status_code, answer.get_json()

    def run(op: str, manage: bool = False, **inputs) -> dict:
        if manage:
            return WorkflowNode(document, "session_manage", post)(operation=op, **inputs)
        return WorkflowNode(document, f"session_{op}", post)(**inputs)

    return run


def new_session(call, **options) -> str:
    return ok(call("create", options=options))["session_id"]


def say(call, sid: str, *contents: str) -> None:
    for text in contents:
        ok(call("append_messages", session_id=sid, role="user", content=text))


@pytest.mark.parametrize("manage", [False, True])
@pytest.mark.parametrize("limit", [0, 4])
def test_a_paging_loop_from_an_empty_cursor_collects_every_message_exactly_once(call, manage, limit):
    sid = new_session(call)
    say(call, sid, *(f"m{i}" for i in range(23)))
    pages, cursor = [], ""  # the loop's variable starts empty and ends empty
    while True:
        page = ok(call("history", manage=manage, session_id=sid, options={"cursor": cursor, "limit": limit}))
        pages[:0] = [m["content"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == [f"m{i}" for i in range(23)]


@pytest.mark.parametrize("manage", [False, True])
def test_empty_and_zero_options_from_variables_mean_not_given(call, manage):
    zeros = {"timeout": 0, "max_history": 0, "lang": ""}
    created = ok(call("create", manage=manage, options=zeros))
    assert (created["timeout"], created["max_history"], created["auto_clean"]) == (1800, 1000, True)
    sid = created["session_id"]
    appended = ok(
        call(
            "append_messages",
            manage=manage,
            session_id=sid,
            role="user",
            content="hi",
            options={"on_overflow": "", "expected_version": 0},
        )
    )
    assert appended["message_count"] == 1
    assert len(ok(call("list", manage=manage, options={"status": "", "limit": 0, "cursor": ""}))["sessions"]) == 1
    assert ok(call("touch", manage=manage, session_id=sid, options={"timeout": 0}))["timeout"] == 1800
    assert ok(call("lock", manage=manage, session_id=sid, options={"lease": 0, "wait": 0}))["lock_token"]


def test_the_operation_tool_ignores_the_options_its_operation_does_not_use(call):
    sid = new_session(call)
    others = {
        "timeout": 0,
        "limit": 0,
        "cursor": "not-a-seq",
        "on_overflow": "",
        "merge": False,
        "lease": 0,
        "status": "",
    }
    got = ok(call("get", manage=True, session_id=sid, options=others))
    assert (got["session_id"], got["status"]) == (sid, "active")
    not_historys = {"timeout": 0, "on_overflow": "", "merge": False, "lease": 999, "status": "", "auto_clean": False}
    assert ok(call("history", manage=True, session_id=sid, options=not_historys))["messages"] == []
    fail(call("history", manage=True, session_id=sid, options=others), "INVALID_ARGUMENT", field="options.cursor")


def test_an_empty_role_beside_content_is_refused_naming_role(call):
    sid = new_session(call)
    fail(call("append_messages", session_id=sid, role="", content="hi"), "INVALID_ARGUMENT", field="role")
    fail(call("append_messages", session_id=sid, role="user", content=""), "INVALID_ARGUMENT", field="content")


def test_expires_in_right_after_a_create_or_a_sliding_call_is_the_timeout(call, clock):
    created = ok(call("create", options={"timeout": 1800}))
    assert created["expires_in"] == 1800
    clock.advance(100.5)
    assert ok(call("get", session_id=created["session_id"]))["expires_in"] == 1800


def test_an_append_answers_only_the_messages_max_history_kept(call):
    sid = new_session(call, max_history=2)
    batch = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    out = ok(call("append_messages", session_id=sid, messages=batch))
    assert ([m["content"] for m in out["messages"]], out["dropped"], out["message_count"]) == (["m3", "m4"], 3, 2)


def test_every_single_session_answer_shows_its_timeout_max_history_and_auto_clean(call):
    sid = new_session(call, timeout=600, max_history=20, auto_clean=False)
    for op, extra in [("get", {}), ("history", {}), ("touch", {}), ("update", {"context": "{}"}), ("close", {})]:
        out = ok(call(op, session_id=sid, **extra))
        assert (out["timeout"], out["max_history"], out["auto_clean"]) == (600, 20, False), op


# retries: request_id


@pytest.mark.parametrize("manage", [False, True])
def test_a_retried_append_is_stored_once_and_answered_with_the_seq_it_got(call, manage):
    sid = new_session(call)
    say(call, sid, "before")
    first = ok(call("append_messages", manage=manage, session_id=sid, role="user", content="hi", request_id="turn-1"))
    again = ok(call("append_messages", manage=manage, session_id=sid, role="user", content="hi", request_id="turn-1"))
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert [m["seq"] for m in again["messages"]] == [m["seq"] for m in first["messages"]] == [2]
    assert again["message_count"] == 2 and again["version"] == first["version"]
    assert [m["content"] for m in ok(call("history", session_id=sid))["messages"]] == ["before", "hi"]


def test_a_repeat_found_in_the_archive_still_answers_its_seqs(call):
    sid = new_session(call)
    ok(call("append_messages", session_id=sid, role="user", content="early", request_id="r-early"))
    say(call, sid, *(f"m{i}" for i in range(12)))  # the tests keep 3 messages inline: "early" is archived
    again = ok(call("append_messages", session_id=sid, role="user", content="early", request_id="r-early"))
    assert (again["replayed"], [(m["seq"], m["content"]) for m in again["messages"]]) == (True, [(1, "early")])


@pytest.mark.parametrize("manage", [False, True])
def test_a_retried_create_without_an_id_returns_the_session_it_created_not_a_second_one(call, manage):
    first = ok(call("create", manage=manage, request_id="make-cart", context='{"cart": []}'))
    again = ok(call("create", manage=manage, request_id="make-cart", context='{"cart": ["other"]}'))
    assert again["session_id"] == first["session_id"]
    assert (first["created"], first["replayed"], again["created"], again["replayed"]) == (True, False, True, True)
    assert json.loads(again["context"]) == {"cart": []}
    assert len(ok(call("list"))["sessions"]) == 1


def test_a_retried_update_with_other_inputs_applies_once_and_the_first_wins(call):
    sid = new_session(call)
    first = ok(call("update", session_id=sid, context='{"answer": "first"}', request_id="u-1"))
    again = ok(call("update", session_id=sid, context='{"answer": "second"}', request_id="u-1"))
    assert (again["replayed"], again["version"], json.loads(again["context"])) == (
        True,
        first["version"],
        {"answer": "first"},
    )


@pytest.mark.parametrize("op", ["clear_history", "touch", "close", "unlock"])
def test_every_retried_write_applies_once_and_answers_success(call, op):
    sid = new_session(call)
    say(call, sid, "x")
    extra = {"lock_token": ok(call("lock", session_id=sid))["lock_token"]} if op == "unlock" else {}
    first = ok(call(op, session_id=sid, request_id=f"{op}-1", **extra))
    again = ok(call(op, session_id=sid, request_id=f"{op}-1", **extra))
    assert (first["replayed"], again["replayed"], again["version"]) == (False, True, first["version"])


def test_a_retried_delete_answers_deleted_again(call):
    sid = new_session(call)
    first = ok(call("delete", session_id=sid, request_id="d-1"))
    again = ok(call("delete", session_id=sid, request_id="d-1"))
    assert (first["status"], first["replayed"], again["status"], again["replayed"]) == (
        "deleted",
        False,
        "deleted",
        True,
    )
    fail(call("delete", session_id=sid, request_id="d-2"), "SESSION_NOT_FOUND")
    fail(call("get", session_id=sid), "SESSION_NOT_FOUND")


def test_a_retried_lock_returns_the_token_it_took(call):
    sid = new_session(call)
    first = ok(call("lock", session_id=sid, request_id="turn-7"))
    again = ok(call("lock", session_id=sid, request_id="turn-7"))
    assert (again["replayed"], again["lock_token"]) == (True, first["lock_token"])
    ok(call("update", session_id=sid, context='{"a": 1}', lock_token=again["lock_token"]))


# the session lock


@pytest.mark.parametrize("manage", [False, True])
def test_while_locked_every_write_needs_the_token_and_reads_are_served(call, manage):
    sid = new_session(call)
    say(call, sid, "x")
    held = ok(call("lock", manage=manage, session_id=sid, options={"lease": 60}))
    assert held["lock_token"] and held["locked_until"]
    writes = [
        ("update", {"context": '{"a": 1}'}),
        ("append_messages", {"role": "user", "content": "y"}),
        ("clear_history", {}),
        ("touch", {}),
        ("close", {}),
        ("delete", {}),
        ("lock", {}),
    ]
    for op, extra in writes:
        refused = fail(call(op, manage=manage, session_id=sid, **extra), "SESSION_LOCKED")
        assert refused["locked_until"] == held["locked_until"], op
    for op in ("get", "history"):
        assert ok(call(op, manage=manage, session_id=sid))["locked_until"] == held["locked_until"]
    assert ok(call("list", manage=manage))["sessions"][0]["version"] == held["version"]
    token = {"lock_token": held["lock_token"]}
    assert (
        ok(call("update", manage=manage, session_id=sid, context='{"a": 1}', **token))["version"] == held["version"] + 1
    )
    ok(call("unlock", manage=manage, session_id=sid, **token))
    assert ok(call("update", manage=manage, session_id=sid, context='{"b": 2}'))["locked_until"] == ""


def test_a_lock_renewed_with_its_token_moves_its_end_and_keeps_the_token(call, clock):
    sid = new_session(call)
    held = ok(call("lock", session_id=sid, options={"lease": 30}))
    clock.advance(20)
    renewed = ok(call("lock", session_id=sid, lock_token=held["lock_token"], options={"lease": 30}))
    assert renewed["lock_token"] == held["lock_token"] and renewed["locked_until"] > held["locked_until"]
    clock.advance(20)  # past the first lease, inside the renewed one
    ok(call("update", session_id=sid, context='{"a": 1}', lock_token=held["lock_token"]))


def test_a_holder_too_slow_for_its_lease_is_fenced_off_and_changes_nothing(call, clock):
    sid = new_session(call, timeout=3600)
    slow = ok(call("lock", session_id=sid, options={"lease": 5}))["lock_token"]
    clock.advance(6)
    fast = ok(call("lock", session_id=sid, options={"lease": 60}))["lock_token"]
    ok(call("update", session_id=sid, context='{"by": "fast"}', lock_token=fast))
    for op, extra in [
        ("update", {"context": '{"by": "slow"}'}),
        ("append_messages", {"role": "user", "content": "late"}),
    ]:
        fail(call(op, session_id=sid, lock_token=slow, **extra), "LOCK_NOT_HELD")
    fail(call("unlock", session_id=sid, lock_token=slow), "LOCK_NOT_HELD")
    state = ok(call("get", session_id=sid))
    assert (json.loads(state["context"]), state["message_count"]) == ({"by": "fast"}, 0)


def test_a_token_after_the_lease_ran_out_is_not_held_even_when_nobody_else_took_the_lock(call, clock):
    sid = new_session(call)
    token = ok(call("lock", session_id=sid, options={"lease": 1}))["lock_token"]
    clock.advance(2)
    fail(call("update", session_id=sid, context='{"a": 1}', lock_token=token), "LOCK_NOT_HELD")
    assert ok(call("update", session_id=sid, context='{"a": 1}'))["locked_until"] == ""  # released by itself


# auto-resume


@pytest.mark.parametrize("manage", [False, True])
@pytest.mark.parametrize(
    ("op", "extra"),
    [
        ("get", {}),
        ("append_messages", {"role": "user", "content": "back"}),
        ("update", {"context": '{"back": 1}'}),
        ("history", {}),
    ],
)
def test_an_expired_session_kept_by_auto_clean_false_is_resumed_by_the_operation_itself(call, clock, manage, op, extra):
    sid = new_session(call, timeout=60, auto_clean=False)
    clock.advance(61)
    fail(call(op, manage=manage, session_id=sid, **extra), "SESSION_EXPIRED")
    out = ok(call(op, manage=manage, session_id=sid, options={"resume": True}, **extra))
    assert (out["status"], out["resumed"], out["expires_in"]) == ("active", True, 60)
    assert ok(call("get", session_id=sid, options={"resume": True}))["resumed"] is False  # live: nothing to resume


def test_resume_cannot_bring_back_a_purged_session_nor_pass_the_session_limit(call, clock, collection):
    purged = new_session(call, timeout=60)
    kept = new_session(call, timeout=60, auto_clean=False)
    clock.advance(61)
    collection.delete_one({"_id": f"{purged}@{USER}"})  # what the TTL reaper does
    fail(call("get", session_id=purged, options={"resume": True}), "SESSION_EXPIRED")
    for _ in range(10):
        new_session(call)
    fail(call("get", session_id=kept, options={"resume": True}), "SESSION_LIMIT_EXCEEDED")


# answers outside any tool, in the caller's language


def test_unauthorised_unknown_and_wrong_method_answers_speak_the_language_accept_language_asks_for(app):
    """Answered from the headers alone: the body of such a request is never read (nor waited for)."""
    client = app.test_client()
    body = {"user_id": "u1", "options": {"lang": "en"}}
    english = {"Accept-Language": "en-US,en;q=0.9"}
    unauthorised = client.post("/v1/session/get", json=body, headers=english)
    unknown = client.post("/v1/session/nope", json=body, headers={**AUTH, **english})
    wrong_method = client.get("/v1/session/get", headers=AUTH)
    assert (unauthorised.status_code, unauthorised.get_json()["error"]) == (
        401,
        "unauthorized: missing or wrong service token",
    )
    assert (unknown.status_code, unknown.get_json()["error"]) == (
        404,
        "invalid argument: /v1/session/nope is not a tool of this service",
    )
    assert (
        wrong_method.status_code == 405
        and wrong_method.get_json()["error"] == "参数错误：/v1/session/get 只接受 POST 请求"
    )


# found in review: each of these failed before its fix


def test_unlocking_an_expired_session_releases_the_lock_without_reviving_it(call, app, clock):
    app.extensions["database"].store().slots.max_sessions = 2
    a = new_session(call, timeout=5)
    new_session(call)
    token = ok(call("lock", session_id=a, options={"lease": 600}))["lock_token"]
    clock.advance(10)
    new_session(call)  # takes the expired session's slot
    unlocked = ok(call("unlock", session_id=a, lock_token=token))  # released: the turn's last step succeeds
    assert (unlocked["status"], unlocked["locked_until"], unlocked["context"]) == ("expired", "", "")
    assert len(ok(call("list", options={"status": "active"}))["sessions"]) == 2
    fail(call("get", session_id=a, options={"resume": True}), "SESSION_LIMIT_EXCEEDED")


def test_a_retried_lock_renewal_answers_the_token_it_renewed(call):
    sid = new_session(call)
    token = ok(call("lock", session_id=sid))["lock_token"]
    renewed = ok(call("lock", session_id=sid, lock_token=token, request_id="renew-1"))
    again = ok(call("lock", session_id=sid, lock_token=token, request_id="renew-1"))
    assert renewed["lock_token"] == again["lock_token"] == token and again["replayed"] is True


def test_a_late_repeat_of_a_delete_leaves_the_session_created_again_under_that_id(call):
    ok(call("create", session_id="cart"))
    ok(call("delete", session_id="cart", request_id="del-cart"))
    ok(call("create", session_id="cart", context='{"new": true}'))
    assert ok(call("delete", session_id="cart", request_id="del-cart"))["replayed"] is True
    assert json.loads(ok(call("get", session_id="cart"))["context"]) == {"new": True}


def test_a_repeated_append_split_by_archiving_answers_all_its_seqs(call):
    sid = new_session(call)
    say(call, sid, "first")
    batch = [{"role": "user", "content": f"b{i}"} for i in range(5)]
    first = ok(call("append_messages", session_id=sid, messages=batch, request_id="batch-1"))
    say(call, sid, *(f"later{i}" for i in range(4)))  # the tests keep 3 inline: the batch is cut across a chunk
    again = ok(call("append_messages", session_id=sid, messages=batch, request_id="batch-1"))
    assert [m["seq"] for m in again["messages"]] == [m["seq"] for m in first["messages"]] == [2, 3, 4, 5, 6]


def test_create_with_the_id_of_an_expired_session_kept_by_auto_clean_false_revives_it(call, clock):
    ok(call("create", session_id="cart", context='{"items": [1]}', options={"timeout": 60, "auto_clean": False}))
    clock.advance(61)
    again = ok(call("create", session_id="cart", context='{"items": []}'))
    assert (again["created"], again["status"], json.loads(again["context"])) == (False, "active", {"items": [1]})
