"""Hostile input through the Flask app: injection, deep nesting, odd numbers and bytes, tokens, isolation.

Every answer goes through `Api.post`, which checks it against the tool's output schema; each test
also says which answer it expects. The bar: a clear 200 business error (or 401 / 413), never a 500,
never a trace of the implementation in the text.
"""

from __future__ import annotations

import dataclasses
import hmac
import json

import pytest

from app import api as api_module
from app import spec
from app import tenants as tenants_module
from app.settings import Settings
from tests.support import AUTH, LEAKS, TOKEN, Api, assert_no_leak, check_response, ctx
from tests.wire_faults import CommandFailure, DropConnection, Rule

ID_TOOLS = (
    "session_get",
    "session_update",
    "session_append_messages",
    "session_history",
    "session_clear_history",
    "session_touch",
    "session_close",
    "session_delete",
)


def _bodies(session_id, user_id="u1"):
    """One valid-looking body per session tool, around the given ids."""
    base = {"user_id": user_id, "session_id": session_id}
    return {
        "session_get": base,
        "session_update": {**base, "context": {"hijacked": True}},
        "session_append_messages": {**base, "role": "user", "content": "hijacked"},
        "session_history": base,
        "session_clear_history": base,
        "session_touch": base,
        "session_close": base,
        "session_delete": base,
    }


class LeakCheckedApi(Api):
    """An Api that also records every answer's text, to search it for leaks afterwards."""

    def __init__(self, client):
        super().__init__(client)
        self.seen: list[tuple[str, str]] = []

    def post(self, tool_name, body, *, headers=None, raw=None):
        status, data = super().post(tool_name, body, headers=headers, raw=raw)
        request_text = raw.decode("utf-8", "replace") if raw is not None else json.dumps(body)
        self.seen.append((request_text, json.dumps(data, ensure_ascii=False)))
        return status, data


@pytest.fixture
def api(app):
    """Every answer of every test here is also searched for leaked internals."""
    checked = LeakCheckedApi(app.test_client())
    yield checked
    for request_text, answer in checked.seen:
        assert_no_leak(answer, sent=request_text)


def _session(api, user_id="u1", session_id="victim", context=None):
    api.create(user_id, session_id=session_id, context=json.dumps(context or {"secret": "s3cr3t"}))
    api.call("append_messages", {"user_id": user_id, "session_id": session_id, "role": "user", "content": "hello"})


def _state(api, user_id="u1", session_id="victim"):
    got = api.call("get", {"user_id": user_id, "session_id": session_id})
    hist = api.call("history", {"user_id": user_id, "session_id": session_id})
    return (
        got["status"],
        got["version"],
        got["context"],
        got["message_count"],
        [(m["seq"], m["content"]) for m in hist["messages"]],
    )


# operator injection


@pytest.mark.parametrize("operator", [{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, ["victim"], 1, True])
def test_an_operator_object_as_session_id_or_user_id_is_an_invalid_argument_and_touches_nothing(api, operator):
    _session(api)
    before = _state(api)
    for tool, body in _bodies(operator).items():
        status, data = api.post(tool, body)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), (tool, data)
        assert "session_id" in data["error"]
    for tool, body in _bodies("victim", user_id=operator).items():
        status, data = api.post(tool, body)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), (tool, data)
        assert "user_id" in data["error"]
    status, data = api.post("session_list", {"user_id": operator})
    assert (status, data["error_code"], data["sessions"]) == (200, "INVALID_ARGUMENT", [])
    assert _state(api) == before


def test_operator_and_dotted_context_keys_are_stored_inertly_and_round_trip(api, collection):
    hostile = {
        "$where": "sleep(100000)",
        "$set": {"v": 999, "st": "closed"},
        "$inc": {"v": 1000},
        "$unset": {"ctx": 1},
        "a.b": {"$ne": None},
        "$": "$$",
        "": {"": ""},
        "_id": "victim@u1",
        "uid": "someone-else",
    }
    created = api.create("u1", session_id="inj", context=json.dumps(hostile))
    assert ctx(created) == hostile
    assert created["version"] == 1
    patch = {"$where": None, "$push": {"msgs": "forged"}, "x.y": {"$gt": 1}, "a.b": {"c": 1}}
    updated = api.call("update", {"user_id": "u1", "session_id": "inj", "context": patch})
    assert updated["error_code"] == ""
    assert updated["version"] == 2
    assert updated["status"] == "active"
    expected = {k: v for k, v in hostile.items() if k != "$where"}
    expected.update({"$push": {"msgs": "forged"}, "x.y": {"$gt": 1}, "a.b": {"$ne": None, "c": 1}})
    assert ctx(api.call("get", {"user_id": "u1", "session_id": "inj"})) == expected
    assert api.call("history", {"user_id": "u1", "session_id": "inj"})["messages"] == []
    doc = collection.find_one({"sid": "inj"})
    assert doc["uid"] == "u1" and doc["st"] == "active" and doc["v"] == 2 and doc["msgs"] == []
    assert isinstance(doc["ctx"], str) and all(isinstance(p, str) for p in doc.get("cp", []))
    assert collection.count_documents({"uid": "someone-else"}) == 0


def test_operator_like_strings_as_user_ids_are_plain_ids_that_see_nobody_elses_sessions(api):
    _session(api)
    for user_id in ("$ne", '{"$ne": null}', ".*", "u1 ", " u1", "U1", "u1@", "victim@u1", "$where"):
        data = api.call("list", {"user_id": user_id})
        assert (data["error_code"], data["sessions"]) == ("", []), user_id
        data = api.call("get", {"user_id": user_id, "session_id": "victim"})
        assert data["error_code"] == "SESSION_NOT_FOUND", user_id


def test_unknown_operator_fields_in_the_body_or_options_are_refused(api):
    _session(api)
    before = _state(api)
    for body in (
        {"user_id": "u1", "session_id": "victim", "$where": "1"},
        {"user_id": "u1", "session_id": "victim", "options": {"$where": "1"}},
        {"user_id": "u1", "session_id": "victim", "context": {}, "$set": {"st": "closed"}},
    ):
        status, data = api.post("session_update", body)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), body
    assert _state(api) == before


# nesting


def _nested_objects(depth):
    return '{"k":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("depth", [1_000, 5_000, 200_000])
def test_a_context_nested_far_past_the_limit_is_an_invalid_argument_as_text_or_as_object(api, depth):
    _session(api)
    before = _state(api)
    for inner in ("[" * depth + "]" * depth, _nested_objects(depth)):
        as_text = {"user_id": "u1", "session_id": "victim", "context": '{"a":' + inner + "}"}
        status, data = api.post("session_update", as_text)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT")
        assert "context" in data["error"]
        raw = ('{"user_id":"u1","session_id":"victim","context":{"a":' + inner + "}}").encode()
        status, data = api.post("session_update", None, raw=raw)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT")
        raw_create = ('{"user_id":"u1","context":{"a":' + inner + "}}").encode()
        status, data = api.post("session_create", None, raw=raw_create)
        assert (status, data["error_code"], data["created"]) == (200, "INVALID_ARGUMENT", False)
    assert _state(api) == before


def test_a_context_nested_within_the_limit_round_trips(api):
    text = _nested_objects(90)
    created = api.create("u1", session_id="deep", context=text)
    assert ctx(created) == json.loads(text)
    raw = ('{"user_id":"u1","session_id":"deep","options":{"merge":false},"context":' + text + "}").encode()
    status, data = api.post("session_update", None, raw=raw)
    assert (status, data["error_code"], ctx(data)) == (200, "", json.loads(text))


# numbers


BIG = {
    "u64_max_plus_1": 2**64,
    "i64_min_minus_1": -(2**63) - 1,
    "i64_max": 2**63 - 1,
    "huge": 2**200,
    "negative_huge": -(10**40),
    "nested": [2**65, {"deeper": 3**90}],
}


def test_integers_beyond_64_bits_in_a_context_round_trip_exactly_as_text_and_as_object(api):
    created = api.create("u1", session_id="big", context=json.dumps(BIG))
    assert ctx(created) == BIG
    raw = ('{"user_id":"u1","session_id":"big","options":{"merge":false},"context":' + json.dumps(BIG) + "}").encode()
    status, data = api.post("session_update", None, raw=raw)
    assert (status, data["error_code"]) == (200, "")
    got = api.call("get", {"user_id": "u1", "session_id": "big"})
    assert json.loads(got["context"]) == BIG
    assert str(2**200) in got["context"]
    merged = api.call("update", {"user_id": "u1", "session_id": "big", "context": json.dumps({"more": 2**100})})
    assert ctx(merged) == {**BIG, "more": 2**100}


@pytest.mark.parametrize(
    ("tool", "extra"),
    [
        ("session_update", {"context": {"a": 1}}),
        ("session_append_messages", {"role": "user", "content": "x"}),
        ("session_clear_history", {}),
        ("session_close", {}),
    ],
)
def test_an_expected_version_beyond_64_bits_is_a_version_conflict_or_invalid_argument_not_a_crash(api, tool, extra):
    _session(api)
    before = _state(api)
    for version in (2**63, 2**64, 2**200):
        body = {"user_id": "u1", "session_id": "victim", **extra, "options": {"expected_version": version}}
        status, data = api.post(tool, body)
        assert status == 200, (tool, version, data)
        assert data["error_code"] in ("VERSION_CONFLICT", "INVALID_ARGUMENT"), (tool, version, data)
    assert _state(api) == before


@pytest.mark.parametrize(
    ("tool", "option"),
    [
        ("session_create", "timeout"),
        ("session_create", "max_history"),
        ("session_touch", "timeout"),
        ("session_history", "limit"),
        ("session_list", "limit"),
    ],
)
def test_integer_options_beyond_64_bits_are_an_invalid_argument(api, tool, option):
    _session(api)
    body = {"user_id": "u1", "options": {option: 2**64}}
    if tool != "session_create" and tool != "session_list":
        body["session_id"] = "victim"
    status, data = api.post(tool, body)
    assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), data
    assert f"options.{option}" in data["error"]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1E999"])
def test_a_number_beyond_double_range_in_a_context_is_an_invalid_argument_not_a_crash(api, number):
    _session(api)
    before = _state(api)
    status, data = api.post(
        "session_update", {"user_id": "u1", "session_id": "victim", "context": '{"x": ' + number + "}"}
    )
    assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), data
    raw = ('{"user_id":"u1","session_id":"victim","context":{"x":' + number + "}}").encode()
    status, data = api.post("session_update", None, raw=raw)
    assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), data
    status, data = api.post("session_create", {"user_id": "u1", "context": '{"x": ' + number + "}"})
    assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), data
    assert _state(api) == before


@pytest.mark.parametrize(
    ("tool", "options"),
    [
        ("session_create", {"timeout": 600.0}),
        ("session_create", {"max_history": 3.0}),
        ("session_touch", {"timeout": 600.0}),
        ("session_history", {"limit": 2.0}),
        ("session_list", {"limit": 2.0}),
        ("session_update", {"expected_version": 2.0}),
    ],
)
def test_an_integral_float_in_an_integer_option_never_crashes_nor_corrupts_the_session(api, tool, options):
    """JSON Schema counts 600.0 as an integer: the service must then use it as one, or refuse it."""
    _session(api, session_id="s")
    body = {"user_id": "u1", "options": options}
    if tool not in ("session_create", "session_list"):
        body["session_id"] = "s"
    if tool == "session_update":
        body["context"] = {"k": 1}
    status, data = api.post(tool, body)
    assert status == 200, data
    assert data["error_code"] in ("", "INVALID_ARGUMENT", "VERSION_CONFLICT"), data
    touched = [("s", "")]
    if tool == "session_create" and data["created"]:
        touched.append((data["session_id"], ""))
    for session_id, _ in touched:
        for _ in range(5):  # past a max_history of 3, so the drop path runs too
            appended = api.call(
                "append_messages", {"user_id": "u1", "session_id": session_id, "role": "user", "content": "m"}
            )
            assert appended["error_code"] == "", appended
        for op in ("get", "history", "touch"):
            after = api.call(op, {"user_id": "u1", "session_id": session_id})
            assert after["error_code"] == "", (op, after)
    listed = api.call("list", {"user_id": "u1"})
    assert listed["error_code"] == ""


# bytes, encodings and body shapes


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe4\xb8", b"\xf8\x88\x80\x80\x80", b"\x80"],
    ids=["ff", "overlong", "encoded-surrogate", "truncated", "5-byte", "lone-continuation"],
)
def test_invalid_utf8_anywhere_in_the_body_is_an_invalid_argument(api, bad):
    _session(api)
    before = _state(api)
    for raw in (
        b'{"user_id":"u1","session_id":"victim","context":{"k":"' + bad + b'"}}',
        b'{"user_id":"u1","session_id":"victim' + bad + b'","context":{}}',
        b'{"user_id":"u1' + bad + b'","session_id":"victim","context":{}}',
        bad + b'{"user_id":"u1","session_id":"victim","context":{}}',
    ):
        status, data = api.post("session_update", None, raw=raw)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), raw
    assert _state(api) == before


@pytest.mark.parametrize(
    ("tool", "raw"),
    [
        ("session_create", rb'{"user_id":"\ud800"}'),
        ("session_create", rb'{"user_id":"u1","session_id":"s\udfff"}'),
        ("session_get", rb'{"user_id":"u1","session_id":"s\ud800"}'),
        ("session_create", rb'{"user_id":"u1","context":{"\ud800":"x"}}'),
        ("session_create", rb'{"user_id":"u1","context":"{\"k\":\"\\udc00\"}"}'),
        ("session_update", rb'{"user_id":"u1","session_id":"victim","context":{"k":"\ud83d"}}'),
        ("session_append_messages", rb'{"user_id":"u1","session_id":"victim","role":"user","content":"\ud800"}'),
    ],
    ids=["user_id", "new-session_id", "session_id", "context-key", "context-text", "context-value", "message"],
)
def test_a_lone_surrogate_escape_is_an_invalid_argument_not_a_crash(api, tool, raw):
    """`"\\ud800"` is well-formed JSON but no Unicode text: it cannot be stored as UTF-8, so refuse it."""
    _session(api)
    before = _state(api)
    status, data = api.post(tool, None, raw=raw)
    assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), data
    assert _state(api) == before


def test_a_surrogate_pair_escape_is_ordinary_text_and_round_trips(api):
    raw = rb'{"user_id":"u1","session_id":"emoji","context":{"\ud83d\ude00":"\ud83d\ude00"}}'
    status, data = api.post("session_create", None, raw=raw)
    assert (status, data["error_code"]) == (200, "")
    assert ctx(data) == {"\U0001f600": "\U0001f600"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user_id":"u1","user_id":"u2","session_id":"victim","context":{"a":1}}',
        b'{"user_id":"u2","session_id":"victim","user_id":"u1","context":{"a":1}}',
        b'{"user_id":"u1","session_id":"victim","context":{"a":1,"a":2}}',
        b'{"user_id":"u1","session_id":"victim","context":"{\\"a\\":1,\\"a\\":2}"}',
        b'{"user_id":"u1","session_id":"victim","context":{"a":1},"options":{"merge":true,"merge":false}}',
    ],
)
def test_duplicate_json_keys_are_an_invalid_argument(api, raw):
    _session(api)
    before = _state(api)
    status, data = api.post("session_update", None, raw=raw)
    assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), data
    assert _state(api) == before


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml", ""],
)
def test_a_json_body_under_any_content_type_gets_the_same_answer(api, content_type):
    _session(api)
    raw = json.dumps({"user_id": "u1", "session_id": "victim", "context": {"ct": content_type}}).encode()
    status, data = api.post("session_update", None, raw=raw, headers={"Content-Type": content_type})
    assert (status, data["error_code"]) == (200, "")
    assert ctx(data)["ct"] == content_type


def test_a_form_encoded_body_is_an_invalid_argument(api):
    status, data = api.post(
        "session_create",
        None,
        raw=b"user_id=u1&session_id=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, data["error_code"], data["created"]) == (200, "INVALID_ARGUMENT", False)


@pytest.mark.parametrize("raw", [b"", b"   \n\t", b"{}", b"null", b"[]", b'"x"', b"1", b"{", b"\x00", b"{}{}"])
def test_an_empty_or_non_object_body_is_an_invalid_argument(api, raw):
    for tool in ("session_manage", "session_create", "session_get", "session_list"):
        status, data = api.post(tool, None, raw=raw)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), (tool, raw, data)


def test_a_10_mb_body_answers_413_payload_too_large_json(api, collection):
    for raw in (
        json.dumps({"user_id": "u1", "context": {"blob": "x" * (10 * 1024 * 1024)}}).encode(),
        b'{"user_id":"u1"' + b" " * (10 * 1024 * 1024) + b"}",
    ):
        status, data = api.post("session_create", None, raw=raw)
        assert (status, data["error_code"], data["created"]) == (413, "PAYLOAD_TOO_LARGE", False)
    assert collection.count_documents({}) == 0


def test_a_body_within_the_limit_but_a_context_over_1_mib_is_context_too_large(api, collection):
    status, data = api.post("session_create", {"user_id": "u1", "context": {"blob": "x" * (2 * 1024 * 1024)}})
    assert (status, data["error_code"]) == (200, "CONTEXT_TOO_LARGE")
    assert collection.count_documents({}) == 0


# ids


@pytest.mark.parametrize("size", [129, 10 * 1024])
def test_long_ids_are_an_invalid_argument_and_store_nothing(api, collection, size):
    status, data = api.post("session_create", {"user_id": "u1", "session_id": "s" * size})
    assert (status, data["error_code"], data["created"]) == (200, "INVALID_ARGUMENT", False)
    status, data = api.post("session_create", {"user_id": "u" * size * 2})
    assert (status, data["error_code"], data["created"]) == (200, "INVALID_ARGUMENT", False)
    for tool, body in _bodies("s" * size).items():
        status, data = api.post(tool, body)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), tool
    assert collection.count_documents({}) == 0


@pytest.mark.parametrize(
    "char", ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f"], ids=["nul", "soh", "tab", "lf", "cr", "esc", "del"]
)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_control_characters_in_ids_are_an_invalid_argument_and_store_nothing(api, collection, char, where):
    def place(s):
        return {"start": char + s, "middle": s[:1] + char + s[1:], "end": s + char}[where]

    status, data = api.post("session_create", {"user_id": "u1", "session_id": place("sess")})
    assert (status, data["error_code"], data["created"]) == (200, "INVALID_ARGUMENT", False), data
    status, data = api.post("session_create", {"user_id": place("user")})
    assert (status, data["error_code"], data["created"]) == (200, "INVALID_ARGUMENT", False), data
    assert collection.count_documents({}) == 0


# tokens


def _almost(token):
    return [
        token[:-1],
        token + "x",
        token[:-1] + chr(ord(token[-1]) + 1),
        token.upper(),
        "x" + token[1:],
        token[: len(token) // 2],
        f"Bearer{token}",
        f"Basic {token}",
        f"Bearer Bearer {token}",
        f"Token {token}",
        token + "\u00e9",
        "",
        "Bearer ",
        "Bearer",
    ]


def test_a_missing_wrong_or_almost_right_token_answers_401_of_the_output_shape_and_does_nothing(app, collection):
    client = LeakCheckedApi(app.test_client())
    headers_list = [{"Authorization": value} for value in _almost(TOKEN)]
    headers_list += [{"X-Api-Key": TOKEN}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}]
    for headers in headers_list:
        for tool in ("session_create", "session_manage", "session_list"):
            resp = client.client.post(
                f"/v1/session{'' if tool == 'session_manage' else '/' + tool[8:]}",
                json={"operation": "create", "user_id": "u1"},
                headers=headers,
            )
            assert resp.status_code == 401, headers
            data = resp.get_json()
            check_response(spec.TOOLS_BY_NAME[tool], data)
            assert data["error_code"] == "UNAUTHORIZED"
    resp = client.client.post("/v1/session/create", json={"user_id": "u1"})
    assert resp.status_code == 401
    assert collection.count_documents({}) == 0


@pytest.mark.parametrize(
    "value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", TOKEN, f"  {TOKEN}  ", f"Bearer  {TOKEN}"]
)
def test_bearer_and_bare_token_are_both_accepted(api, value):
    status, data = api.post("session_create", {"user_id": "u1"}, headers={"Authorization": value})
    assert (status, data["error_code"], data["created"]) == (200, "", True)


def test_every_rotated_token_is_compared_with_hmac_compare_digest_even_after_a_match(settings, make_app, monkeypatch):
    tokens = Settings.from_env({"SERVICE_TOKEN": "token-a-0123456789abcdef, token-b-0123456789abcdef"}).service_tokens
    assert tokens == ("token-a-0123456789abcdef", "token-b-0123456789abcdef")
    app = make_app(dataclasses.replace(settings, service_tokens=tokens))
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tenants_module.hmac, "compare_digest", spy)
    client = app.test_client()
    cases = [
        ("Bearer token-a-0123456789abcdef", 200),
        ("token-b-0123456789abcdef", 200),
        ("Bearer token-b-0123456789abcdeg", 401),
        ("token-a-0123456789abcdef,token-b-0123456789abcdef", 401),
        ("", 401),
    ]
    for value, expected in cases:
        calls.clear()
        resp = client.post("/v1/session/list", json={"user_id": "u"}, headers={"Authorization": value})
        assert resp.status_code == expected, value
        assert len(calls) == 2, value  # every token compared, the first match does not stop the loop
        assert {b for _, b in calls} == {t.encode() for t in tokens}
        assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
    with app.test_request_context("/v1/session/list", headers={"Authorization": "token-b-0123456789abcdef"}):
        calls.clear()
        assert api_module._tenant().name == "default"
        assert len(calls) == 2


# isolation


def test_no_request_of_another_user_can_read_or_change_a_session(api):
    _session(api, context={"secret": "s3cr3t", "n": 1})
    before = _state(api)
    never = {tool: api.post(tool, body)[1] for tool, body in _bodies("never-existed", user_id="u2").items()}
    attempts = [
        ({"user_id": "u2"}, {}),
        ({"user_id": ""}, {"X-Aiplugin-Connector-Identifier": "u2"}),
        ({"user_id": "u2"}, {"X-Aiplugin-Connector-Identifier": "u1"}),
        ({"user_id": "U1"}, {}),
        ({"user_id": "u1\u200b"}, {}),
    ]
    for who, headers in attempts:
        for tool, body in _bodies("victim").items():
            status, data = api.post(tool, {**body, **who}, headers=headers)
            assert (status, data["error_code"]) == (200, "SESSION_NOT_FOUND"), (who, tool, data)
            # indistinguishable from a session that never existed
            assert {**data, "session_id": ""} == {**never[tool], "session_id": ""}, (who, tool)
            assert "s3cr3t" not in json.dumps(data)
        for op in ("session_list", "session_manage"):
            status, data = api.post(op, {"operation": "list", **who}, headers=headers)
            assert status == 200
            assert "victim" not in [s["session_id"] for s in data["sessions"]]
        for op in ("get", "update", "history", "close", "delete"):
            status, data = api.post(
                "session_manage", {"operation": op, "session_id": "victim", "context": "{}", **who}, headers=headers
            )
            assert (status, data["error_code"]) == (200, "SESSION_NOT_FOUND"), (who, op)
    # the same id under another user is that user's own, separate session
    theirs = api.create("u2", session_id="victim", context=json.dumps({"mine": True}))
    assert theirs["created"] is True and ctx(theirs) == {"mine": True}
    api.call("close", {"user_id": "u2", "session_id": "victim"})
    api.call("delete", {"user_id": "u2", "session_id": "victim"})
    assert _state(api) == before


# leaks


@pytest.mark.parametrize(
    ("action", "status", "code"),
    [
        (DropConnection(), 503, "STORAGE_UNAVAILABLE"),
        (
            CommandFailure(2, "$expr $and unsupported in pymongo filter {'_id': 'victim@u1'} at 127.0.0.1"),
            500,
            "INTERNAL",
        ),
        (
            CommandFailure(13, 'not authorized on coze_sessions to execute command { find: "sessions" }'),
            500,
            "INTERNAL",
        ),
    ],
    ids=["connection-lost", "operation-failure", "unauthorized"],
)
def test_storage_failures_answer_without_any_stack_trace_query_or_database_detail(
    api, settings, make_app, wire_proxy, action, status, code
):
    _session(api)
    proxy = wire_proxy
    through = dataclasses.replace(settings, mongodb_uri=proxy.uri, mongodb_server_selection_timeout_ms=500)
    broken = LeakCheckedApi(make_app(through).test_client())
    broken.call("list", {"user_id": "u1"})  # connected, indexes ensured: from now on every command fails
    proxy.inject(Rule(lambda command: True, action))
    bodies = {**_bodies("victim"), "session_create": {"user_id": "u1"}, "session_list": {"user_id": "u1"}}
    for tool, body in bodies.items():
        got_status, data = broken.post(tool, body)
        assert got_status == status, (tool, data)
        assert data["error_code"] == code, (tool, data)
        text = json.dumps(data, ensure_ascii=False)
        for leak in (*LEAKS, "victim@u1", "Errno", "OperationFailure", "authorized", "quiesce"):
            assert leak not in text, (tool, leak, text)


def test_validation_errors_name_the_field_but_echo_no_internals(api):
    for body in (
        {"user_id": "u1", "session_id": "s", "options": {"limit": "ten"}},
        {"user_id": "u1", "session_id": "s", "options": {"cursor": "x" * 500}},
        {"user_id": "u1", "session_id": "s", "options": {"cursor": "abc"}},
        {"user_id": "u1", "session_id": "s", "options": "all"},
    ):
        status, data = api.post("session_history", body)
        assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT"), body
        assert "options" in data["error"]
    status, data = api.post("session_get", None, raw=b'{"user_id": "u1", "session_id": ')
    assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT")
    for leak in ("line 1", "column", "char ", "Expecting", "JSONDecodeError"):
        assert leak not in data["error"]


def test_the_auth_header_value_is_never_echoed(app):
    client = app.test_client()
    resp = client.post(
        "/v1/session/get", json={"user_id": "u", "session_id": "s"}, headers={"Authorization": "Bearer sneaky-guess"}
    )
    assert resp.status_code == 401
    assert "sneaky-guess" not in resp.get_data(as_text=True)
    assert TOKEN not in resp.get_data(as_text=True)
    assert AUTH["Authorization"] not in resp.get_data(as_text=True)
