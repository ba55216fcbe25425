"""Bad input never breaks a session: numbers and typed fields, cursors, the corners of the lock and of
request ids. Through the Flask app on the test database, the clock the tests' fake one."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app.context_schema import ContextSchema
from tests.support import Api, ctx, fail, ok, stored_context

SCHEMA = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "score": {"type": "number"},
        "vip": {"type": "boolean"},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}},
        },
    },
}
BEYOND = [2**63, 2**64, -(2**63) - 1, 10**40]


@pytest.fixture
def typed(settings, make_app, tmp_path) -> Api:
    path = tmp_path / "context.schema.json"
    path.write_text(json.dumps(SCHEMA))
    app = make_app(dataclasses.replace(settings, context_schema_path=str(path)))
    return Api(app.test_client(), app.config["CONTEXT_SCHEMA"].coze())


def sessions_of(api: Api, user: str = "u1") -> list[dict]:
    return ok(api.call("list", {"user_id": user}))["sessions"]


# numbers and typed fields


@pytest.mark.parametrize("big", BEYOND)
def test_a_typed_field_beyond_64_bits_is_refused_at_write_and_create_takes_no_slot(typed, collection, big):
    for attempt in range(3):  # a workflow's retries: none may take one of the user's slots
        body = {"user_id": "u1", "fields": {"score": big}, "request_id": f"c{attempt}"}
        fail(typed.call("create", body), "INVALID_ARGUMENT", field="context.score")
        text = json.dumps({"items": [{"sku": "a", "qty": big}]})
        fail(typed.call("create", {"user_id": "u1", "context": text}), "INVALID_ARGUMENT", field="context.items[0].qty")
    assert sessions_of(typed) == [] and collection.count_documents({"k": "s"}) == 0
    sid = typed.create("u1", fields={"score": 1.5})["session_id"]
    base = {"user_id": "u1", "session_id": sid}
    for body in ({"fields": {"score": big}}, {"context": json.dumps({"score": big})}):
        for merge in (True, False):
            answer = typed.call("update", {**base, **body, "options": {"merge": merge}})
            fail(answer, "INVALID_ARGUMENT", field="context.score")
    state = ok(typed.call("get", base))
    assert (state["version"], state["fields"]) == (1, {"score": 1.5})
    ok(typed.call("append_messages", {**base, "role": "user", "content": "still fine"}))
    assert ok(typed.call("history", base))["fields"] == {"score": 1.5}


def test_the_64_bit_bounds_themselves_are_kept(typed):
    made = typed.create("u1", fields={"count": 2**63 - 1, "score": -(2**63)})
    assert made["fields"] == {"count": 2**63 - 1, "score": -(2**63)}


def test_an_integral_float_in_an_integer_field_is_stored_and_answered_as_an_integer(typed, collection):
    made = typed.create("u1", fields={"count": 42.0, "score": 42.0, "items": [{"sku": "a", "qty": 2.0}]})
    assert made["fields"] == {"count": 42, "score": 42.0, "items": [{"sku": "a", "qty": 2}]}
    assert type(made["fields"]["count"]) is int and type(made["fields"]["items"][0]["qty"]) is int
    assert type(made["fields"]["score"]) is float  # a number field keeps what it was given
    sid = made["session_id"]
    merged = ok(typed.call("update", {"user_id": "u1", "session_id": sid, "context": '{"count": 7.0}'}))
    assert type(merged["fields"]["count"]) is int and ctx(merged)["count"] == 7
    assert '"count":7,' in stored_context(collection.find_one({"sid": sid}))
    fail(typed.call("update", {"user_id": "u1", "session_id": sid, "fields": {"count": 7.5}}), "INVALID_ARGUMENT")


def test_fields_takes_exactly_the_declared_properties(typed):
    fail(typed.call("create", {"user_id": "u1", "fields": {"nope": 1}}), "INVALID_ARGUMENT", field="fields.nope")
    assert sessions_of(typed) == []
    sid = typed.create("u1", fields={"vip": True})["session_id"]
    body = {"user_id": "u1", "session_id": sid, "fields": {"vip": False, "nope": 1}}
    fail(typed.call("update", body), "INVALID_ARGUMENT", field="fields.nope")
    assert ctx(ok(typed.call("get", {"user_id": "u1", "session_id": sid}))) == {"vip": True}
    # the context itself may hold undeclared keys: only `fields` is typed
    assert ok(typed.call("update", {"user_id": "u1", "session_id": sid, "context": '{"nope": 1}'}))["fields"] == {
        "vip": True
    }


def test_a_session_stored_before_its_fields_were_typed_answers_only_the_values_that_fit(
    api, settings, make_app, tmp_path
):
    text = json.dumps({"count": "seven", "score": 2**64, "vip": 1, "items": [{"qty": 2.0}], "free": 2**70})
    sid = api.create("u1", context=text)["session_id"]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    typed_app = make_app(dataclasses.replace(settings, context_schema_path=str(path)))
    typed = Api(typed_app.test_client(), typed_app.config["CONTEXT_SCHEMA"].coze())
    base = {"user_id": "u1", "session_id": sid}
    for op, extra in (("get", {}), ("history", {}), ("append_messages", {"role": "user", "content": "x"})):
        answer = ok(typed.call(op, {**base, **extra}))
        assert answer["fields"] == {"items": [{"qty": 2}]}, op  # mistyped and unrenderable values left out
        assert json.loads(answer["context"])["free"] == 2**70  # the context text keeps every number exactly


def test_fields_of_leaves_out_what_an_answer_could_not_show_as_declared():
    schema = ContextSchema(SCHEMA)
    context = {"count": 3.0, "score": 2**64, "vip": "yes", "items": [{"sku": 1}]}
    assert schema.fields_of(context) == {"count": 3}
    assert schema.fields_of({"count": True, "score": True, "items": [{"qty": 1.5}]}) == {}


def test_without_a_context_schema_any_number_round_trips_through_every_read_and_write(api):
    numbers = {"big": 2**64, "neg": -(10**30), "tiny": 5e-324, "huge": 1.7976931348623157e308, "f": 1.5, "z": -0.0}
    sid = api.create("u1", context=json.dumps(numbers))["session_id"]
    base = {"user_id": "u1", "session_id": sid}
    assert ctx(ok(api.call("update", {**base, "context": json.dumps({"more": [2**100, {"x": -(2**80)}]})}))) == {
        **numbers,
        "more": [2**100, {"x": -(2**80)}],
    }
    for op, extra in (("get", {}), ("history", {}), ("append_messages", {"role": "user", "content": "x"})):
        assert ctx(ok(api.call(op, {**base, **extra})))["big"] == 2**64
    assert ok(api.call("list", {"user_id": "u1"}))["sessions"][0]["session_id"] == sid


# cursors and numeric inputs


@pytest.mark.parametrize("cursor", ["9223372036854775808:x", "99999999999999999999999:sess_1", "١٢:x"])
def test_a_list_cursor_out_of_range_is_invalid_naming_it(api, cursor):
    api.create("u1")
    fail(api.call("list", {"user_id": "u1", "options": {"cursor": cursor}}), "INVALID_ARGUMENT", field="options.cursor")
    assert ok(api.call("list", {"user_id": "u1", "options": {"cursor": "9223372036854775807:x"}}))["sessions"]


@pytest.mark.parametrize("cursor", ["9223372036854775808", "99999999999999999999999"])
def test_a_history_cursor_out_of_range_is_invalid_naming_it(api, cursor):
    sid = api.create("u1")["session_id"]
    body = {"user_id": "u1", "session_id": sid, "options": {"cursor": cursor}}
    fail(api.call("history", body), "INVALID_ARGUMENT", field="options.cursor")
    ok(api.call("history", {**body, "options": {"cursor": "9223372036854775807"}}))


@pytest.mark.parametrize(
    ("op", "option", "value"),
    [
        ("create", "timeout", 2**64),
        ("history", "limit", 1e300),
        ("history", "max_tokens", -1),
        ("update", "expected_version", 2**63),
        ("compact", "upto_seq", 2**70),
        ("lock", "lease", 10**20),
        ("lock", "wait", -(2**64)),
    ],
)
def test_every_numeric_option_out_of_range_is_invalid_naming_it(api, op, option, value):
    sid = api.create("u1")["session_id"]
    body = {"user_id": "u1", "session_id": sid, "options": {option: value}}
    body.update({"update": {"context": "{}"}, "compact": {"summary": "s"}}.get(op, {}))
    fail(api.call(op, body), "INVALID_ARGUMENT", field=f"options.{option}")


# the session lock


def expired_and_locked(api: Api, clock) -> tuple[str, str]:
    """A session kept after it expired (auto_clean false) whose lock is still held: (its id, the token)."""
    sid = api.create("u1", options={"timeout": 5, "auto_clean": False})["session_id"]
    token = ok(api.call("lock", {"user_id": "u1", "session_id": sid, "options": {"lease": 600}}))["lock_token"]
    clock.advance(10)
    return sid, token


@pytest.mark.parametrize(
    ("op", "extra"),
    [
        ("get", {}),
        ("history", {}),
        ("update", {"context": '{"a": 1}'}),
        ("append_messages", {"role": "user", "content": "x"}),
    ],
)
def test_resume_obeys_the_lock_as_touch_does_reads_included(api, clock, op, extra):
    sid, token = expired_and_locked(api, clock)
    body = {"user_id": "u1", "session_id": sid, **extra, "options": {"resume": True}}
    refused = fail(api.call(op, body), "SESSION_LOCKED")
    assert (refused["status"], refused["resumed"], refused["locked_until"] != "") == ("expired", False, True)
    fail(api.call("get", {"user_id": "u1", "session_id": sid}), "SESSION_EXPIRED")  # nothing revived
    resumed = ok(api.call(op, {**body, "lock_token": token}))
    assert (resumed["resumed"], resumed["status"]) == (True, "active")


def test_a_read_with_a_token_but_without_resume_is_a_plain_read(api):
    sid = api.create("u1")["session_id"]
    token = ok(api.call("lock", {"user_id": "u1", "session_id": sid}))["lock_token"]
    for op in ("get", "history"):
        for given in (token, "not-the-token"):
            assert ok(api.call(op, {"user_id": "u1", "session_id": sid, "lock_token": given}))["locked_until"]


def test_unlock_restarts_the_timeout_of_a_live_session(api, clock):
    sid = api.create("u1", options={"timeout": 60})["session_id"]
    token = ok(api.call("lock", {"user_id": "u1", "session_id": sid, "options": {"lease": 600}}))["lock_token"]
    clock.advance(50)
    unlocked = ok(api.call("unlock", {"user_id": "u1", "session_id": sid, "lock_token": token}))
    assert (unlocked["expires_in"], unlocked["locked_until"]) == (60, "")


def test_compact_needs_the_lock_token_while_the_session_is_locked(api):
    sid = api.create("u1")["session_id"]
    base = {"user_id": "u1", "session_id": sid}
    ok(api.call("append_messages", {**base, "messages": [{"role": "user", "content": f"m{i}"} for i in range(3)]}))
    token = ok(api.call("lock", base))["lock_token"]
    compact = {**base, "summary": "so far", "options": {"upto_seq": 2}}
    fail(api.call("compact", compact), "SESSION_LOCKED")
    assert ok(api.call("get", base))["summary"] == ""
    assert ok(api.call("compact", {**compact, "lock_token": token}))["summary"] == "so far"


def test_delete_with_a_token_whose_lease_ran_out_is_refused_and_deletes_nothing(api, clock):
    sid = api.create("u1")["session_id"]
    token = ok(api.call("lock", {"user_id": "u1", "session_id": sid, "options": {"lease": 1}}))["lock_token"]
    clock.advance(2)
    fail(api.call("delete", {"user_id": "u1", "session_id": sid, "lock_token": token}), "LOCK_NOT_HELD")
    assert ok(api.call("get", {"user_id": "u1", "session_id": sid}))["status"] == "active"


def test_list_counts_a_session_expired_at_the_exact_millisecond_of_its_expiry(api, clock):
    sid = api.create("u1", options={"timeout": 60})["session_id"]
    clock.advance(60)  # now == expires: expired (every answer says so)
    expired = ok(api.call("list", {"user_id": "u1", "options": {"status": "expired"}}))["sessions"]
    assert [s["session_id"] for s in expired] == [sid] and expired[0]["status"] == "expired"
    assert ok(api.call("list", {"user_id": "u1", "options": {"status": "active"}}))["sessions"] == []


# request ids


def test_a_session_remembers_its_last_100_request_ids(api):
    sid = api.create("u1")["session_id"]
    base = {"user_id": "u1", "session_id": sid}
    for i in range(100):
        ok(api.call("update", {**base, "context": json.dumps({"n": i}), "request_id": f"turn-{i}"}))
    again = ok(api.call("update", {**base, "context": '{"n": -1}', "request_id": "turn-0"}))
    assert (again["replayed"], ctx(again), again["version"]) == (True, {"n": 99}, 101)


@pytest.mark.parametrize("session_id", ["", "cart"])
def test_a_repeat_of_a_create_whose_session_was_deleted_answers_deleted_and_makes_none(api, session_id):
    first = api.create("u1", session_id=session_id, request_id="make-1")
    sid = first["session_id"]
    ok(api.call("delete", {"user_id": "u1", "session_id": sid}))
    again = ok(api.call("create", {"user_id": "u1", "session_id": session_id, "request_id": "make-1"}))
    assert (again["session_id"], again["status"], again["replayed"], again["created"]) == (sid, "deleted", True, True)
    assert (again["context"], again["version"]) == ("", 0)
    assert sessions_of(api) == []


def test_an_old_request_id_never_applies_to_a_later_session_of_the_same_id(api):
    base = {"user_id": "u1", "session_id": "cart"}
    api.create("u1", session_id="cart")
    ok(api.call("update", {**base, "context": '{"old": 1}', "request_id": "upd-1"}))
    ok(api.call("delete", base))
    fresh = api.create("u1", session_id="cart", request_id="make-2")
    assert (fresh["created"], fresh["replayed"]) == (True, False)
    late = ok(api.call("update", {**base, "context": '{"late": 1}', "request_id": "upd-1"}))
    assert (late["replayed"], ctx(late), late["version"]) == (True, {}, 1)
    ok(api.call("delete", base))  # and again after a second delete: the receipt keeps both sessions' ids
    api.create("u1", session_id="cart")
    for rid in ("upd-1", "make-2"):
        assert ok(api.call("update", {**base, "context": '{"late": 2}', "request_id": rid}))["replayed"] is True


def test_create_under_an_update_request_id_is_a_replay_not_a_creation(api):
    api.create("u1", session_id="cart", request_id="make-1")
    ok(api.call("update", {"user_id": "u1", "session_id": "cart", "context": '{"a": 1}', "request_id": "upd-1"}))
    again = ok(api.call("create", {"user_id": "u1", "session_id": "cart", "request_id": "upd-1"}))
    assert (again["created"], again["replayed"], again["status"]) == (False, True, "active")
    made = ok(api.call("create", {"user_id": "u1", "session_id": "cart", "request_id": "make-1"}))
    assert (made["created"], made["replayed"]) == (True, True)
    plain = ok(api.call("create", {"user_id": "u1", "session_id": "cart"}))
    assert (plain["created"], plain["replayed"]) == (False, False)
