"""The seed spec's four usage examples (seed/000_716fbe8d83059b85.txt), as Coze and as direct callers send them."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import ctx, ok

NOW_MS = int(time.time() * 1000)  # the examples' Date.now()


@pytest.fixture(params=["json_text", "object"])
def as_context(request):
    """Context as Coze carries it (a JSON string) or as a direct HTTP caller may (an object)."""
    return (lambda value: json.dumps(value, ensure_ascii=False)) if request.param == "json_text" else dict


def test_basic_usage_creates_a_session_holding_language_and_timezone(api, as_context):
    context = {"language": "zh-CN", "timezone": "Asia/Shanghai"}
    data = ok(api.call("create", {"user_id": "user_123", "context": as_context(context)}, manage=True))
    assert (data["status"], data["created"], ctx(data)) == ("active", True, context)
    assert data["session_id"].startswith("sess_")
    assert data["expires_in"] == 1800
    got = ok(api.call("get", {"user_id": "user_123", "session_id": data["session_id"]}))
    assert ctx(got) == context


def test_advanced_usage_merges_the_update_into_the_context(api, as_context):
    start = {"language": "zh-CN", "timezone": "Asia/Shanghai"}
    api.create("user_123", session_id="sess_123", context=as_context(start))
    patch = {"last_action": "search", "search_results": ["item1", "item2"], "timestamp": NOW_MS}
    body = {
        "session_id": "sess_123",
        "user_id": "user_123",
        "context": as_context(patch),
        "options": {"merge": True, "persist": True},
    }
    data = ok(api.call("update", body, manage=True))
    assert ctx(data) == {**start, **patch}
    assert data["version"] == 2
    assert type(ctx(data)["timestamp"]) is int
    assert ctx(ok(api.call("get", {"user_id": "user_123", "session_id": "sess_123"}))) == {**start, **patch}


def test_dialogue_scenario_lives_an_hour_and_keeps_the_newest_50_messages(api, clock, collection, as_context):
    context = {
        "dialogue_history": [],
        "user_preferences": {"language": "zh-CN", "style": "casual"},
        "current_topic": "shopping",
    }
    body = {"user_id": "user_123", "context": as_context(context), "options": {"timeout": 3600, "max_history": 50}}
    data = ok(api.call("create", body, manage=True))
    sid = data["session_id"]
    assert ctx(data) == context
    assert 3599 <= data["expires_in"] <= 3600
    clock.advance(3000)
    assert ok(api.call("get", {"user_id": "user_123", "session_id": sid}))["status"] == "active"

    def turn(i: int) -> dict:
        role = "user" if i % 2 else "assistant"
        body = {"user_id": "user_123", "session_id": sid, "role": role, "content": f"turn {i}"}
        return ok(api.call("append_messages", body))

    for i in range(1, 51):
        assert turn(i)["dropped"] == 0
    fifty_first = turn(51)
    assert (fifty_first["dropped"], fifty_first["message_count"]) == (1, 50)
    page = ok(api.call("history", {"user_id": "user_123", "session_id": sid, "options": {"limit": 100}}))
    assert [m["content"] for m in page["messages"]] == [f"turn {i}" for i in range(2, 52)]
    assert page["messages"][0]["seq"] == 2 and page["next_cursor"] == ""
    assert collection.find_one({"_id": f"{sid}@user_123"})["mh"] == 50


def test_shopping_cart_scenario_is_kept_without_a_ttl_date(api, collection, as_context):
    context = {"cart_items": [], "total_amount": 0, "currency": "CNY", "last_update": NOW_MS}
    body = {"user_id": "user_123", "context": as_context(context), "options": {"persist": True, "auto_clean": False}}
    data = ok(api.call("create", body, manage=True))
    sid = data["session_id"]
    assert ctx(data) == context
    doc = collection.find_one({"_id": f"{sid}@user_123"})
    assert doc is not None and doc["ac"] is False
    assert "pa" not in doc
    assert collection.count_documents({"uid": "user_123", "pa": {"$exists": True}}) == 0
    item = {"cart_items": [{"sku": "A1", "qty": 2}], "total_amount": 199}
    updated = ok(api.call("update", {"user_id": "user_123", "session_id": sid, "context": as_context(item)}))
    assert ctx(updated) == {**context, **item}
    assert "pa" not in collection.find_one({"_id": f"{sid}@user_123"})
