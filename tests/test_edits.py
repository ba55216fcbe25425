"""Context edits through the service: each op, order with context and fields, all or nothing,
the schema, replays, the lock, Coze's workflow node, and a property test against a reference."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import schemas
from app.context_schema import ContextSchema
from scripts import cozerules
from tests.coze_standin import WorkflowNode
from tests.support import AUTH, ctx, fail, ok
from tests.test_memory import CART, nodes

IDS = {"user_id": "u1"}
USERS = itertools.count()


def edit(op: str, path: str, value=..., keep_last: int = 0) -> dict:
    return {"op": op, "path": path, "value": "" if value is ... else json.dumps(value), "keep_last": keep_last}


def new(api, context: dict | None = None, user: str = "u1") -> str:
    return api.create(user, context=json.dumps(context or {}))["session_id"]


def update(api, sid: str, *edits: dict, manage: bool = False, user: str = "u1", **body) -> dict:
    return api.call("update", {"user_id": user, "session_id": sid, "edits": list(edits), **body}, manage=manage)


def test_the_cart_example_add_change_remove_and_total(api):
    sid = new(api, {"cart_items": {}, "total_amount": 0})
    ok(
        update(
            api, sid, edit("set", "/cart_items/A1", {"qty": 1, "price": 9.5}), edit("increment", "/total_amount", 9.5)
        )
    )
    ok(update(api, sid, edit("set", "/cart_items/B2", {"qty": 2, "price": 3}), edit("increment", "/total_amount", 6)))
    ok(update(api, sid, edit("set", "/cart_items/A1/qty", 3), edit("increment", "/total_amount", 19)))
    done = ok(update(api, sid, edit("remove", "/cart_items/B2"), edit("increment", "/total_amount", -6)))
    assert ctx(done) == {"cart_items": {"A1": {"qty": 3, "price": 9.5}}, "total_amount": 28.5}
    assert done["version"] == 5  # one version per call, whatever the number of edits


@pytest.mark.parametrize("manage", [False, True])
def test_every_op_through_either_tool(api, manage):
    sid = new(api, {"l": [1, 2, 2, 3], "n": 1, "o": {"a/b": 1, "m~n": 2}})
    data = ok(
        update(
            api,
            sid,
            edit("set", "/o/a~1b", "slash"),
            edit("set", "/o/m~0n", "tilde"),
            edit("remove", "/o/gone"),
            edit("increment", "/n", 41),
            edit("append", "/recent", "q1"),
            edit("append", "/recent", "q2", keep_last=1),
            edit("extend", "/l", [4, 5], keep_last=5),
            edit("remove_value", "/l", 2),
            edit("test", "/n", 42),
            edit("set", "/l/-", 6),
            manage=manage,
        )
    )
    assert ctx(data) == {"l": [3, 4, 5, 6], "n": 42, "o": {"a/b": "slash", "m~n": "tilde"}, "recent": ["q2"]}


def test_merge_then_fields_then_edits_in_one_version(api):
    sid = new(api, {"a": 1})
    data = ok(update(api, sid, edit("increment", "/a", 1), edit("append", "/l", "x"), context='{"a": 10, "l": []}'))
    assert ctx(data) == {"a": 11, "l": ["x"]} and data["version"] == 2
    data = ok(update(api, sid, edit("set", "/b", True), context='{"z": 0}', options={"merge": False}))
    assert ctx(data) == {"z": 0, "b": True}


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [
        (edit("increment", "/name", 1), "INVALID_ARGUMENT", "edits[1]"),
        (edit("test", "/n", 1), "CONDITION_FAILED", None),  # edits[0] made it 2: in order
        (edit("append", "/name", 1), "INVALID_ARGUMENT", "edits[1]"),
        (edit("set", "/name/x", 1), "INVALID_ARGUMENT", "edits[1]"),
        ({"op": "set", "path": "/x", "value": "{oops"}, "INVALID_ARGUMENT", "edits[1].value"),
        ({"op": "set", "path": "x", "value": "1"}, "INVALID_ARGUMENT", "edits[1].path"),
        ({"op": "pop", "path": "/x", "value": "1"}, "INVALID_ARGUMENT", "edits[1].op"),
        ({"op": "append", "path": "/x", "value": "1", "keep_last": -1}, "INVALID_ARGUMENT", "edits[1].keep_last"),
    ],
)
def test_a_failing_edit_applies_nothing_and_names_the_edit(api, bad, code, field):
    sid = new(api, {"n": 1, "name": "x"})
    data = fail(update(api, sid, edit("increment", "/n", 1), bad, context='{"merged": true}'), code, field=field)
    if code == "CONDITION_FAILED":
        assert "edits[1]" in data["error"]
    state = ok(api.call("get", {**IDS, "session_id": sid}))
    assert (ctx(state), state["version"]) == ({"n": 1, "name": "x"}, 1)


def test_update_needs_context_fields_or_edits_and_at_most_100_edits(api):
    sid = new(api)
    fail(api.call("update", {**IDS, "session_id": sid}), "INVALID_ARGUMENT", field="context")
    fail(update(api, sid, *[edit("remove", "/a")] * 101), "INVALID_ARGUMENT", field="edits")
    ok(update(api, sid, *[edit("increment", "/a", 1)] * 100))


def test_the_result_must_fit_the_size_limit(api):
    sid = new(api)
    big = "x" * (600 * 1024)
    fail(update(api, sid, edit("set", "/a", big), edit("set", "/b", big)), "CONTEXT_TOO_LARGE")
    assert ok(api.call("get", {**IDS, "session_id": sid}))["version"] == 1


def test_a_repeated_request_id_applies_the_edits_once(api):
    sid = new(api, {"n": 0})
    first = ok(update(api, sid, edit("increment", "/n", 1), request_id="inc-1"))
    again = ok(update(api, sid, edit("increment", "/n", 1), request_id="inc-1", manage=True))
    assert (again["replayed"], ctx(again), again["version"]) == (True, {"n": 1}, first["version"])


def test_edits_obey_the_lock_and_resume(api, clock):
    sid = new(api, {"n": 0})
    token = ok(api.call("lock", {**IDS, "session_id": sid}))["lock_token"]
    fail(update(api, sid, edit("increment", "/n", 1)), "SESSION_LOCKED")
    ok(update(api, sid, edit("increment", "/n", 1), lock_token=token))
    ok(api.call("unlock", {**IDS, "session_id": sid, "lock_token": token}))
    clock.advance(1801)
    fail(update(api, sid, edit("increment", "/n", 1)), "SESSION_EXPIRED")
    data = ok(update(api, sid, edit("increment", "/n", 1), options={"resume": True}))
    assert (ctx(data), data["resumed"]) == ({"n": 2}, True)


def test_expected_version_makes_edits_conditional(api):
    sid = new(api, {"n": 0})
    fail(update(api, sid, edit("increment", "/n", 1), options={"expected_version": 7}), "VERSION_CONFLICT")
    assert ctx(ok(update(api, sid, edit("increment", "/n", 1), options={"expected_version": 1}))) == {"n": 1}


def test_edits_on_a_context_with_a_patch_log_see_every_merge(api, collection):
    sid = new(api, {"n": 0})
    for i in range(3):  # small merges go onto the patch log unapplied
        ok(api.call("update", {**IDS, "session_id": sid, "context": json.dumps({f"k{i}": i})}))
    assert collection.find_one({"_id": f"{sid}@u1"})["cp"]
    data = ok(update(api, sid, edit("increment", "/n", 5), edit("test", "/k2", 2)))
    assert ctx(data) == {"n": 5, "k0": 0, "k1": 1, "k2": 2}


# the context schema


@pytest.fixture
def typed(settings, make_app, tmp_path):
    """call(op, **inputs): a workflow node on the document with CONTEXT_SCHEMA's typed fields."""
    path = tmp_path / "context.schema.json"
    path.write_text(json.dumps(CART))
    app = make_app(dataclasses.replace(settings, context_schema_path=str(path)))
    return nodes(app, app.config["CONTEXT_SCHEMA"])


def test_an_edit_against_the_context_schema_stores_nothing_and_names_the_path(typed):
    sid = ok(typed("create", context='{"cart_items": []}'))["session_id"]
    ok(typed("update", session_id=sid, edits=[edit("append", "/cart_items", {"sku": "a", "qty": 1})]))
    bad = typed("update", session_id=sid, edits=[edit("append", "/cart_items", {"sku": "b", "qty": 0})])
    fail(bad, "INVALID_ARGUMENT", field="context.cart_items[1].qty")
    fail(typed("update", session_id=sid, edits=[edit("set", "/vip", "yes")]), "INVALID_ARGUMENT", field="context.vip")
    state = ok(typed("get", session_id=sid))
    assert (state["fields"]["cart_items"], state["version"]) == ([{"sku": "a", "qty": 1}], 2)


# Coze: the document and the workflow node


def test_edits_are_declared_as_rows_coze_imports():
    doc = schemas.openapi_document("https://sessions.example.com", ContextSchema(CART))
    assert cozerules.openapi_problems(doc) == []
    for tool in ("session_update", "session_manage"):
        item = doc["paths"][f"/v1/session{'/update' if tool == 'session_update' else ''}"]["post"]
        rows = item["requestBody"]["content"]["application/json"]["schema"]["properties"]["edits"]
        assert rows["type"] == "array" and rows["items"]["type"] == "object"
        props = rows["items"]["properties"]
        assert {n: p["type"] for n, p in props.items()} == {
            "op": "string",
            "path": "string",
            "value": "string",
            "keep_last": "integer",
        }
        assert props["op"]["enum"] == ["set", "remove", "increment", "append", "extend", "remove_value", "test"]


def test_a_workflow_node_with_rows_left_partly_unset_edits_the_context(app):
    document = schemas.openapi_document("https://sessions.example.com")
    client = app.test_client()

    def post(path: str, body: dict) -> tuple[int, dict]:
        answer = client.post(path, json=body, headers=AUTH)
        return answer.status_code, answer.get_json()

    create = WorkflowNode(document, "session_create", post)
    node = WorkflowNode(document, "session_update", post)
    sid = ok(create(user_id="u1", context='{"searches": ["a"], "gone": 1}'))["session_id"]
    rows = [  # a row's unset properties arrive missing (then their defaults): no value, no keep_last
        {"op": "append", "path": "/searches", "value": '"b"', "keep_last": 2},
        {"op": "remove", "path": "/gone"},
        {"op": "increment", "path": "/count", "value": "1"},
    ]
    data = ok(node(user_id="u1", session_id=sid, edits=rows))
    assert json.loads(data["context"]) == {"searches": ["a", "b"], "count": 1}
    assert ok(node(user_id="u1", session_id=sid, context='{"x": 1}'))["version"] == 3  # edits left unset: []


# a property test: the service equals a reference written here, op by op


def reference(context: dict, rows: list[dict]) -> dict | None:
    """The contract's ops on a plain dict, written independently of app.edits; None: the call fails."""
    doc = copy.deepcopy(context)
    for r in rows:
        keys = [t.replace("~1", "/").replace("~0", "~") for t in r["path"][1:].split("/")]
        value = json.loads(r["value"]) if r["value"] else None
        parent = doc
        for k in keys[:-1]:
            if k not in parent:
                if r["op"] in ("remove", "test", "remove_value"):
                    parent = None
                    break
                parent[k] = {}
            parent = parent[k]
            if not isinstance(parent, dict):
                if r["op"] in ("remove", "test", "remove_value"):
                    parent = None
                    break
                return None
        last = keys[-1]
        there = parent.get(last) if isinstance(parent, dict) else None
        if r["op"] == "set":
            parent[last] = value
        elif r["op"] == "remove":
            if isinstance(parent, dict):
                parent.pop(last, None)
        elif r["op"] == "increment":
            if last not in parent:
                parent[last] = value
            elif type(there) not in (int, float):
                return None
            else:
                parent[last] = there + value
        elif r["op"] in ("append", "extend"):
            if last not in parent:
                parent[last] = there = []
            if not isinstance(there, list):
                return None
            there += [value] if r["op"] == "append" else value
            if r["keep_last"]:
                parent[last] = there[-r["keep_last"] :]
        elif r["op"] == "remove_value":
            if there is not None:
                if not isinstance(there, list):
                    return None
                parent[last] = [x for x in there if not (x == value and type(x) is type(value))]
        elif r["op"] == "test" and there != value:
            return None
    return doc


KEYS = st.sampled_from(["a", "b", "a/b", "m~n"])
POINTERS = st.lists(KEYS, min_size=1, max_size=2).map(
    lambda ks: "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in ks)
)
SMALL = st.one_of(st.integers(-5, 5), st.sampled_from(["x", "y"]))
ROWS = st.one_of(
    st.builds(lambda p, v: edit("set", p, v), POINTERS, SMALL),
    st.builds(lambda p: edit("remove", p), POINTERS),
    st.builds(lambda p, v: edit("increment", p, v), POINTERS, st.integers(-3, 3)),
    st.builds(lambda p, v, k: edit("append", p, v, k), POINTERS, SMALL, st.integers(0, 3)),
    st.builds(lambda p, v, k: edit("extend", p, v, k), POINTERS, st.lists(SMALL, max_size=3), st.integers(0, 3)),
    st.builds(lambda p, v: edit("remove_value", p, v), POINTERS, SMALL),
    st.builds(lambda p, v: edit("test", p, v), POINTERS, SMALL),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.lists(ROWS, min_size=1, max_size=4), min_size=1, max_size=4))
def test_random_edit_lists_through_the_service_equal_the_reference(api, calls):
    user = f"prop-{next(USERS)}"  # a user per example: the per-user session limit never bites
    sid = new(api, {"a": 1}, user)
    expected: dict = {"a": 1}
    for rows in calls:
        data = update(api, sid, *rows, user=user)
        want = reference(expected, rows)
        if want is None:
            assert data["error_code"] in ("INVALID_ARGUMENT", "CONDITION_FAILED"), (rows, data)
        else:
            expected = want
            assert ok(data) and ctx(data) == expected, rows
    assert ctx(ok(api.call("get", {"user_id": user, "session_id": sid}))) == expected
