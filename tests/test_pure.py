"""The pure modules on their own: merge patch, JSON text, times."""

from __future__ import annotations

import pytest

from app import jsontext, records
from app.jsontext import merge_patch
from app.memory import Memory


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
    assert records.iso(0) == "1970-01-01T00:00:00.000Z"
    assert records.iso(1700000000123) == "2023-11-14T22:13:20.123Z"


def test_a_session_key_splits_at_the_first_at_sign():
    assert records.key("a@b.com", "s1") == "s1@a@b.com"
    assert records.key("u", "s1") != records.key("s1@u", "")


def _session(key: str = "s@u", version: int = 1, nonce: str = "n1", context: str = "{}") -> records.Session:
    return records.Session(
        key=key,
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
        purge_ms=2,
        slot=0,
        n=0,
        total=0,
        physical=0,
        nonce=nonce,
    )


def test_memory_keeps_the_newer_state_when_threads_answer_out_of_order():
    memory = Memory(1_800_000, 1000)
    memory.learn(_session(version=3))
    memory.learn(_session(version=2))
    assert memory.recall("s@u").version == 3
    memory.learn(_session(version=1, nonce="n2"))  # another incarnation replaces it whatever its version
    assert memory.recall("s@u").nonce == "n2"


def test_memory_learns_shapes_and_falls_back_to_the_defaults():
    memory = Memory(1_800_000, 1000)
    assert memory.shape("s@u") == (1_800_000, 1000)
    memory.learn(_session())
    assert memory.shape("s@u") == (60_000, 50)
    memory.forget("s@u")
    assert memory.shape("s@u") == (1_800_000, 1000) and memory.recall("s@u") is None


def test_memory_stays_within_its_byte_budget_dropping_the_least_recent():
    memory = Memory(1, 1, max_bytes=1000)
    for i in range(10):
        memory.learn(_session(key=f"s{i}@u", context="x" * 200))
    assert memory.recall("s0@u") is None
    assert memory.recall("s9@u") is not None
    assert memory._bytes <= 1000


def test_the_embedded_server_hook_finds_neosqlites_per_read_purge_to_throttle():
    from scripts.nx_server import throttle

    assert throttle() is True  # False would mean the pinned neosqlite changed and reads scan again


def test_an_update_applied_here_gives_what_the_database_would_store():
    doc = {"_id": "k", "n": 2, "cp": ["{}"], "v": 4}
    update = {
        "$set": {"u": 9, "exp": 10},
        "$inc": {"n": 3, "v": 1, "new": 2},
        "$push": {"cp": '{"a":1}', "msgs": {"$each": ["x"]}},
    }
    assert records.applied(doc, update) == {
        "_id": "k",
        "n": 5,
        "cp": ["{}", '{"a":1}'],
        "v": 5,
        "u": 9,
        "exp": 10,
        "new": 2,
    }  # msgs was projected out: it stays out
    assert records.applied({"m": [1, 2, 3]}, {"$push": {"m": {"$each": [4, 5], "$slice": -3}}}) == {"m": [3, 4, 5]}
    assert doc == {"_id": "k", "n": 2, "cp": ["{}"], "v": 4}  # the input is left alone
