"""The pure modules on their own: merge patch, JSON text, times."""

from __future__ import annotations

import pytest

from app import jsontext, records
from app.sessions import merge_patch


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
