"""The pure modules on their own: merge patch, JSON text, times, the stored layout and the write planner."""

from __future__ import annotations

import dataclasses

import pytest

from app import errors, jsontext, model, options, responses, spec, validation
from app.jsontext import merge_patch
from app.model import Append, ClearHistory, Close, Expect, MergeContext, ReplaceContext, Session, Slide
from app.storage import layout, updates
from app.storage.cache import SessionCache


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # the examples of RFC 7396, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7396(target, patch, result):
    assert merge_patch(target, patch) == result


def test_json_text_keeps_big_integers_exactly():
    text = '{"n":123456789012345678901234567890}'
    assert jsontext.dumps(jsontext.loads(text)) == text


@pytest.mark.parametrize("text", ['{"a":1,"a":2}', '{"a":NaN}', '{"a":Infinity}', "{", b"\xff\xfe"])
def test_json_text_refuses_duplicates_constants_and_broken_text(text):
    with pytest.raises(jsontext.JSONTextError):
        jsontext.loads(text)


def test_json_text_refuses_deep_nesting_without_recursing():
    with pytest.raises(jsontext.JSONTextError) as info:
        jsontext.loads("[" * 5000 + "]" * 5000)
    assert info.value.reason == "nesting"
    jsontext.loads("[" * 100 + "]" * 100)


def test_times_are_iso_8601_utc_with_milliseconds():
    assert responses.iso(0) == "1970-01-01T00:00:00.000Z"
    assert responses.iso(1700000000123) == "2023-11-14T22:13:20.123Z"


def test_a_session_key_splits_at_the_first_at_sign():
    assert layout.key("a@b.com", "s1") == "s1@a@b.com"
    assert layout.key("u", "s1") != layout.key("s1@u", "")


def _session(key: str = "s@u", version: int = 1, nonce: str = "n1", context: str = "{}", **kw) -> Session:
    values = dict(
        user_id="u",
        session_id="s",
        status="active",
        context=context,
        version=version,
        created=0,
        updated=0,
        expires=1,
        timeout_ms=60_000,
        max_history=50,
        auto_clean=True,
        message_count=0,
        appended=0,
        last_seq=0,
    )
    values.update(kw)
    stored = model.Stored(key=key, nonce=nonce, slot=0, purge_ms=2, inline=0, inline_bytes=0)
    return Session(**values, stored=stored)


def test_memory_keeps_the_newer_state_when_threads_answer_out_of_order():
    memory = SessionCache(1_800_000, 1000)
    memory.learn(_session(version=3))
    memory.learn(_session(version=2))
    assert memory.recall("s@u").version == 3
    memory.learn(_session(version=1, nonce="n2"))  # another incarnation replaces it whatever its version
    assert memory.recall("s@u").stored.nonce == "n2"


def test_memory_learns_shapes_and_falls_back_to_the_defaults():
    memory = SessionCache(1_800_000, 1000)
    assert memory.shape("s@u") == (1_800_000, 1000)
    memory.learn(_session())
    assert memory.shape("s@u") == (60_000, 50)
    memory.forget("s@u")
    assert memory.shape("s@u") == (1_800_000, 1000) and memory.recall("s@u") is None


def test_memory_stays_within_its_byte_budget_dropping_the_least_recent():
    memory = SessionCache(1, 1, max_bytes=1000)
    for i in range(10):
        memory.learn(_session(key=f"s{i}@u", context="x" * 200))
    assert memory.recall("s0@u") is None
    assert memory.recall("s9@u") is not None
    assert memory._bytes <= 1000


def test_an_update_applied_here_gives_what_the_database_would_store():
    doc = {"_id": "k", "n": 2, "cp": ["{}"], "v": 4}
    update = {
        "$set": {"u": 9, "exp": 10},
        "$inc": {"n": 3, "v": 1, "new": 2},
        "$push": {"cp": '{"a":1}', "msgs": {"$each": ["x"]}},
    }
    assert updates.after_update(doc, update) == {
        "_id": "k",
        "n": 5,
        "cp": ["{}", '{"a":1}'],
        "v": 5,
        "u": 9,
        "exp": 10,
        "new": 2,
    }  # msgs was projected out: it stays out
    assert updates.after_update({"m": [1, 2, 3]}, {"$push": {"m": {"$each": [4, 5], "$slice": -3}}}) == {"m": [3, 4, 5]}
    assert updates.after_update({"m": [1, 2]}, {"$push": {"m": {"$each": [], "$slice": 0}}}) == {"m": []}
    assert doc == {"_id": "k", "n": 2, "cp": ["{}"], "v": 4}  # the input is left alone


CONTENTS = ["", "hello", "a|b:c|", "中文😀", "\x00", "x\x00y\x01z\x01\x03\x00", "\x01\x02", "{json?", "\x1f" * 9]


@pytest.mark.parametrize("content", CONTENTS)
def test_a_stored_message_decodes_to_what_was_appended_and_takes_the_bytes_the_size_rule_counts(content):
    for request_id, header in (("", "assistant|1700000000123|"), ("r-1.a:b", "assistant|1700000000123#r-1.a:b|")):
        text = layout.encode_message("assistant", content, 1700000000123, request_id)
        assert layout.decode_message(text) == ("assistant", content, 1700000000123, request_id)
        assert len(text.encode()) - len(header) == validation.message_bytes(content)
        assert "\x00" not in text  # nx-27017's $push cuts a string at NUL


CHANGES = [
    (Slide(), Expect(writable=False)),
    (Slide(timeout_ms=60_000, revive=True), Expect(live=False)),
    (ReplaceContext("{}"), Expect(version=3)),
    (MergeContext({"a": 1}, 1 << 20), Expect()),
    (Append((("user", "hi"),), at=5, reject_overflow=True), Expect()),
    (ClearHistory(), Expect()),
    (Close(), Expect()),
]


@pytest.mark.parametrize(("change", "expect"), CHANGES, ids=lambda c: type(c).__name__)
def test_every_planned_write_is_targeted_by_id_and_user_and_restarts_the_timeout(change, expect):
    where, update = updates.plan("s@u", "u", change, expect, updates.Guess(60_000, 50), 1000, 10)
    assert where["_id"] == "s@u" and where["uid"] == "u"
    assert update["$set"]["exp"] > 1000
    assert ("st" in where) == expect.writable and ("exp" in where) == expect.live
    assert where.get("v") == expect.version


def test_a_merge_from_a_known_state_is_a_compare_and_set_on_its_incarnation_and_version():
    base = _session(version=7, context='{"a":1}')
    guess = updates.Guess(60_000, 50, base=base)
    where, update = updates.plan("s@u", "u", MergeContext({"b": 2}, 1 << 20), Expect(), guess, 1000, 10)
    assert (where["r"], where["v"]) == ("n1", 7)
    assert update["$set"]["ctx"] == '{"a":1,"b":2}' and update["$inc"]["v"] == 1
    with pytest.raises(errors.ContextTooLarge):
        updates.plan("s@u", "u", MergeContext({"b": "x" * 100}, 50), Expect(), guess, 1000, 10)


@pytest.mark.parametrize(
    ("stored", "expect", "code"),
    [
        (None, Expect(), "SESSION_NOT_FOUND"),
        (_session(expires=500), Expect(), "SESSION_EXPIRED"),
        (_session(expires=5000, status="closed"), Expect(), "SESSION_CLOSED"),
        (_session(expires=5000, version=2), Expect(version=1), "VERSION_CONFLICT"),
        (_session(expires=5000, appended=50), Expect(), "HISTORY_LIMIT"),
    ],
)
def test_a_missed_write_is_diagnosed_from_what_is_stored(stored, expect, code):
    change = Append((("user", "x"),), at=1, reject_overflow=True)
    with pytest.raises(errors.ServiceError) as info:
        updates.diagnose(stored, False, change, expect, 1000)
    assert info.value.code == code


def test_a_miss_no_error_explains_is_left_to_the_caller_to_correct_and_retry():
    updates.diagnose(_session(expires=5000), False, Slide(), Expect(), 1000)  # a stale guess of its timeout
    updates.diagnose(_session(expires=500), False, Slide(revive=True), Expect(live=False), 1000)  # its slot was taken


@pytest.mark.parametrize("operation", sorted(spec.OPERATIONS))
def test_each_operations_options_class_has_exactly_the_specs_option_names(operation):
    declared = {f.name for f in dataclasses.fields(options.BY_OPERATION[operation])}
    assert declared == set(spec.TOOLS_BY_NAME[f"session_{operation}"].options())


def test_cursors_arrive_parsed_and_a_compact_needs_its_point_before_the_core_runs():
    history = validation.parse("session_history", {"user_id": "u", "session_id": "s", "options": {"cursor": "7"}})
    assert (history.options.cursor, history.options.roles) == (7, frozenset())
    listing = validation.parse("session_list", {"user_id": "u", "options": {"cursor": "12:sess_a"}})
    assert listing.options.cursor == (12, "sess_a")
    with pytest.raises(errors.InvalidArgument) as bad:
        validation.parse("session_list", {"user_id": "u", "options": {"cursor": "12"}})
    assert bad.value.field == "options.cursor"
    with pytest.raises(errors.InvalidArgument) as missing:
        validation.parse("session_compact", {"user_id": "u", "session_id": "s", "summary": "x"})
    assert (missing.value.field, missing.value.reason) == ("options.upto_seq", "required")
    with pytest.raises(errors.InvalidArgument) as capped:
        validation.parse("session_create", {"user_id": "u", "options": {"timeout": 120}}, maxima={"timeout": 60})
    assert (capped.value.field, capped.value.expected) == ("options.timeout", 60)
