"""The context: JSON Merge Patch (RFC 7396), replacement, arbitrary keys and exact numbers."""

from __future__ import annotations

import json

import pytest

from tests.support import ctx, ok, stored_context

ODD_KEYS = {
    "a.b": 1,
    "$set": {"x": 1},
    "$where": "sleep(1000)",
    "": "empty",
    "中文键": "值",
    "a..b": [1, 2],
    "$": {"$inc": {"v": 5}},
    "a": {"b": "nested, not the dotted key"},
}


def new(api, context) -> str:
    return api.create("u1", context=context if isinstance(context, str) else json.dumps(context))["session_id"]


def update(api, sid: str, context, **options) -> dict:
    body = {"user_id": "u1", "session_id": sid, "context": context}
    return api.call("update", {**body, "options": options} if options else body)


def doc(collection, sid: str) -> dict:
    return collection.find_one({"_id": f"{sid}@u1"})


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": {"b": 1, "c": 2}}, {"a": {"c": 3, "d": 4}}, {"a": {"b": 1, "c": 3, "d": 4}}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}, {"a": {"c": 2}}),
        ({"a": 1}, {"missing": None}, {"a": 1}),
        ({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}),
        ({"a": [{"b": 1}]}, {"a": [{"c": 2}]}, {"a": [{"c": 2}]}),
        ({"a": {"b": 1}}, {"a": "flat"}, {"a": "flat"}),
        ({"a": "flat"}, {"a": {"b": {"c": None, "d": 1}}}, {"a": {"b": {"d": 1}}}),
        ({"a": {"b": 1}}, {"a": []}, {"a": []}),
        ({"a": 1}, {}, {"a": 1}),
        ({}, {"e": {}}, {"e": {}}),
    ],
)
def test_update_is_a_json_merge_patch(api, target, patch, result):
    sid = new(api, target)
    data = ok(update(api, sid, json.dumps(patch)))
    assert ctx(data) == result
    assert ctx(ok(api.call("get", {"user_id": "u1", "session_id": sid}))) == result


def test_merge_false_replaces_the_whole_context(api):
    sid = new(api, {"a": {"b": 1}, "keep": True})
    data = ok(update(api, sid, '{"a": {"c": 2}, "gone": null}', merge=False))
    assert ctx(data) == {"a": {"c": 2}, "gone": None}
    assert data["version"] == 2
    assert ok(update(api, sid, "{}", merge=False))["context"] == "{}"


@pytest.mark.parametrize("as_text", [True, False])
def test_keys_with_dots_dollars_empty_and_unicode_round_trip_and_are_stored_as_text(api, collection, as_text):
    sid = api.create("u1", context=json.dumps(ODD_KEYS) if as_text else ODD_KEYS)["session_id"]
    assert ctx(ok(api.call("get", {"user_id": "u1", "session_id": sid}))) == ODD_KEYS
    stored = doc(collection, sid)
    assert json.loads(stored_context(stored)) == ODD_KEYS
    assert stored["v"] == 1
    for field in ("a.b", "$set", "$where", "x", "", "中文键", "a..b", "$", "a", "b"):
        assert field not in stored, field

    patch = {"a.b": 2, "$set": {"y": 2}, "$where": None, "": None, "中文键": {"嵌套": 1}, "$": None, "a": {"b": None}}
    data = ok(update(api, sid, json.dumps(patch) if as_text else patch))
    expected = {"a.b": 2, "$set": {"x": 1, "y": 2}, "中文键": {"嵌套": 1}, "a..b": [1, 2], "a": {}}
    assert ctx(data) == expected
    stored = doc(collection, sid)
    assert json.loads(stored_context(stored)) == expected
    assert (stored["v"], stored["n"]) == (2, 0)
    assert collection.count_documents({"uid": "u1", "k": "s"}) == 1


def test_the_context_text_keeps_unicode_unescaped(api, collection):
    sid = new(api, {"名字": "张三 🙂"})
    data = ok(api.call("get", {"user_id": "u1", "session_id": sid}))
    assert data["context"] == '{"名字":"张三 🙂"}'
    assert stored_context(doc(collection, sid)) == data["context"]


def test_integers_beyond_64_bits_round_trip_exactly(api):
    text = '{"big": 123456789012345678901234567890, "neg": -98765432109876543210, "max": 18446744073709551616}'
    sid = new(api, text)
    data = ok(api.call("get", {"user_id": "u1", "session_id": sid}))
    assert "123456789012345678901234567890" in data["context"]
    assert ctx(data) == json.loads(text)
    patched = ok(update(api, sid, {"big": 2**100 + 1, "other": 1}))
    assert ctx(patched) == {"big": 2**100 + 1, "neg": -98765432109876543210, "max": 2**64, "other": 1}
    assert str(2**100 + 1) in patched["context"]


@pytest.mark.parametrize("bad", ["[1]", "3", "nope", '"text"', "null", "{", "[]", '{"a": NaN}', [1], 3])
def test_a_context_that_is_not_a_json_object_is_refused_naming_context(api, collection, bad):
    data = api.call("create", {"user_id": "u1", "context": bad})
    assert data["error_code"] == "INVALID_ARGUMENT", data
    assert data["error"].startswith("参数错误：context ")
    assert collection.count_documents({"uid": "u1"}) == 0
    sid = new(api, {"a": 1})
    data = update(api, sid, bad)
    assert data["error_code"] == "INVALID_ARGUMENT", data
    assert "context" in data["error"]
    assert (doc(collection, sid)["v"], stored_context(doc(collection, sid))) == (1, '{"a":1}')


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', '{"x": {"b": 1, "b": 1}}'])
def test_duplicate_keys_in_context_text_are_refused(api, collection, text):
    data = api.call("create", {"user_id": "u1", "context": text, "options": {"lang": "en"}})
    assert data["error_code"] == "INVALID_ARGUMENT"
    assert data["error"] == "invalid argument: context is not valid JSON object text"
    assert collection.count_documents({"uid": "u1"}) == 0
    sid = new(api, {"a": 0})
    assert update(api, sid, text)["error_code"] == "INVALID_ARGUMENT"
    assert stored_context(doc(collection, sid)) == '{"a":0}'
