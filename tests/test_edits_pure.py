"""The edit engine on its own: JSON Pointer escapes, every op, errors naming the edit, all or nothing."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from app import edits, errors
from app.storage.retry import LOST_RACES


def run(context: dict, *rows: dict) -> dict:
    return edits.apply_edits(context, edits.parse(list(rows)))


NONE = object()


def row(op: str, path: str, value=NONE, keep_last: int = 0) -> dict:
    return {"op": op, "path": path, "value": "" if value is NONE else json.dumps(value), "keep_last": keep_last}


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [  # RFC 6901 section 5, and the escapes in both orders
        ("", ()),
        ("/foo", ("foo",)),
        ("/foo/0", ("foo", "0")),
        ("/", ("",)),
        ("/a~1b", ("a/b",)),
        ("/m~0n", ("m~n",)),
        ("/~01", ("~1",)),
        ("/~10", ("/0",)),
        ("/ ", (" ",)),
        ("/-", ("-",)),
    ],
)
def test_pointer_tokens_unescape_as_rfc_6901_says(pointer, tokens):
    assert edits.parse_pointer(pointer) == tokens


@pytest.mark.parametrize("pointer", ["foo", "/a~2", "/a~", "/~"])
def test_bad_pointers_are_refused_naming_the_edit(pointer):
    with pytest.raises(errors.InvalidArgument) as exc:
        edits.parse([row("set", "/ok", 1), row("set", pointer, 1)])
    assert exc.value.field == "edits[1].path"


def test_set_creates_missing_parents_and_replaces_an_array_item():
    assert run({}, row("set", "/cart/A1/qty", 2)) == {"cart": {"A1": {"qty": 2}}}
    assert run({"l": [1, 2, 3]}, row("set", "/l/1", "x")) == {"l": [1, "x", 3]}
    assert run({"l": [1]}, row("set", "/l/-", 2), row("set", "/l/2", 3)) == {"l": [1, 2, 3]}
    assert run({"a/b": 1, "m~n": 2}, row("set", "/a~1b", 10), row("set", "/m~0n", 20)) == {"a/b": 10, "m~n": 20}
    assert run({"a": None}, row("set", "/a/b", True)) == {"a": {"b": True}}


@pytest.mark.parametrize(
    ("context", "path"),
    [({"a": 1}, "/a/b"), ({"l": [1]}, "/l/5"), ({"l": [1]}, "/l/x"), ({"l": [1]}, "/l/01"), ({"s": "t"}, "/s/0")],
)
def test_set_through_a_scalar_or_past_an_array_end_is_refused(context, path):
    with pytest.raises(errors.InvalidArgument) as exc:
        run(context, row("set", path, 1))
    assert exc.value.field == "edits[0]"


def test_remove_deletes_a_key_or_an_item_and_a_missing_path_is_no_error():
    assert run({"a": 1, "b": 2}, row("remove", "/a")) == {"b": 2}
    assert run({"l": [1, 2, 3]}, row("remove", "/l/0")) == {"l": [2, 3]}
    for path in ("/zz", "/l/3", "/l/-", "/a/b/c", "/n/x"):
        assert run({"l": [1, 2, 3], "n": 5}, row("remove", path)) == {"l": [1, 2, 3], "n": 5}


def test_increment_adds_creates_and_subtracts():
    assert run({"t": 1}, row("increment", "/t", 2)) == {"t": 3}
    assert run({}, row("increment", "/cart/total", 1.5)) == {"cart": {"total": 1.5}}
    assert run({"t": 10}, row("increment", "/t", -4)) == {"t": 6}
    assert run({"t": 12345678901234567890}, row("increment", "/t", 1)) == {"t": 12345678901234567891}


@pytest.mark.parametrize("there", ["1", True, None, [1], {"a": 1}])
def test_increment_of_anything_but_a_number_is_refused(there):
    with pytest.raises(errors.InvalidArgument) as exc:
        run({"t": there}, row("increment", "/t", 1))
    assert exc.value.field == "edits[0]"


@pytest.mark.parametrize("value", ["1", True, None, [1]])
def test_increment_by_anything_but_a_number_is_refused(value):
    with pytest.raises(errors.InvalidArgument) as exc:
        edits.parse([row("increment", "/t", value)])
    assert exc.value.field == "edits[0].value"


def test_append_and_extend_with_keep_last():
    assert run({}, row("append", "/l", {"q": 1})) == {"l": [{"q": 1}]}
    assert run({"l": [1, 2]}, row("append", "/l", 3, keep_last=2)) == {"l": [2, 3]}
    assert run({"l": [1]}, row("extend", "/l", [2, 3, 4])) == {"l": [1, 2, 3, 4]}
    assert run({"l": [1]}, row("extend", "/l", [2, 3, 4], keep_last=3)) == {"l": [2, 3, 4]}
    assert run({"l": [1]}, row("extend", "/l", [2], keep_last=0)) == {"l": [1, 2]}
    with pytest.raises(errors.InvalidArgument) as exc:
        run({"l": "x"}, row("append", "/l", 1))
    assert exc.value.field == "edits[0]"
    with pytest.raises(errors.InvalidArgument) as exc:
        edits.parse([row("extend", "/l", 1)])
    assert exc.value.field == "edits[0].value"


def test_remove_value_removes_every_equal_item_by_json_equality():
    context = {"l": [1, 1.0, True, "1", {"a": [1]}, {"a": [1.0]}, [1]]}
    assert run(context, row("remove_value", "/l", 1)) == {"l": [True, "1", {"a": [1]}, {"a": [1.0]}, [1]]}
    assert run(context, row("remove_value", "/l", {"a": [1]})) == {"l": [1, 1.0, True, "1", [1]]}
    assert run({}, row("remove_value", "/a/b", 1)) == {}  # missing: nothing to remove, nothing created
    with pytest.raises(errors.InvalidArgument):
        run({"l": {}}, row("remove_value", "/l", 1))


def test_test_compares_by_json_equality_and_a_missing_path_equals_null():
    assert run({"a": 1}, row("test", "/a", 1.0), row("set", "/b", 2)) == {"a": 1, "b": 2}
    assert run({}, row("test", "/missing", None)) == {}
    assert run({"a": 1}, row("test", "", {"a": 1})) == {"a": 1}
    with pytest.raises(errors.ConditionFailed) as exc:
        run({"a": True}, row("set", "/b", 1), row("test", "/a", 1))
    assert exc.value.params == {"field": "edits[1]"}


def test_a_failing_edit_leaves_the_input_untouched():
    context = {"cart": {"items": [1, 2]}, "total": 3}
    before = json.dumps(context)
    with pytest.raises(errors.InvalidArgument) as exc:
        run(context, row("append", "/cart/items", 3), row("increment", "/total", 1), row("increment", "/cart", 1))
    assert exc.value.field == "edits[2]"
    assert json.dumps(context) == before


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"op": "nope", "path": "/a", "value": "1"}, "edits[0].op"),
        ({"op": "set", "path": "/a", "value": ""}, "edits[0].value"),
        ({"op": "set", "path": "/a", "value": "{bad"}, "edits[0].value"),
        ({"op": "set", "path": "/a", "value": "NaN"}, "edits[0].value"),
        ({"op": "remove", "path": "", "value": ""}, "edits[0].path"),
    ],
)
def test_bad_rows_name_their_property(bad, field):
    with pytest.raises(errors.InvalidArgument) as exc:
        edits.parse([bad])
    assert exc.value.field == field


def test_unused_properties_are_ignored_and_at_most_100_edits():
    assert edits.parse([{"op": "remove", "path": "/a", "value": "not json", "keep_last": 5}])[0].keep_last == 0
    with pytest.raises(errors.InvalidArgument) as exc:
        edits.parse([row("remove", "/a")] * 101)
    assert exc.value.field == "edits"


def test_errors_have_texts_in_both_languages():
    err = errors.ConditionFailed(field="edits[3]")
    assert "edits[3]" in err.message("zh") and "edits[3]" in err.message("en")
    bad = errors.InvalidArgument("edits[0]", "edit_path", "/a")
    assert "/a" in bad.message("en")


def test_results_json_text_cannot_hold_are_refused_naming_the_edit():
    for there, by in ((1e308, "1e308"), (10**400, "0.5")):
        with pytest.raises(errors.InvalidArgument) as exc:
            edits.apply_edits({"n": there}, edits.parse([{"op": "increment", "path": "/n", "value": by}]))
        assert exc.value.field == "edits[0]"
    deep = json.dumps(json.loads("[" * 60 + "]" * 60))
    with pytest.raises(errors.InvalidArgument) as exc:
        run({}, row("set", "/" + "/".join(["a"] * 50), json.loads(deep)))
    assert (exc.value.field, exc.value.reason) == ("edits", "nesting")


def test_turns_are_served_in_order_and_one_that_gave_up_is_skipped():
    import threading

    from app.storage.turns import _Turn

    turn = _Turn()
    assert turn.take(1) == 0
    assert turn.take(0.05) is None  # ticket 1 gave up while 0 held the turn
    got = []
    waiter = threading.Thread(target=lambda: got.append(turn.take(5)))
    waiter.start()
    turn.done()  # 0 is done: 1 is skipped, 2 is served
    waiter.join(timeout=5)
    assert got == [2]


def test_a_write_that_keeps_losing_races_keeps_trying_until_the_time_runs_out_not_for_a_fixed_count():
    """Under contention from another worker, whose next write goes from its cache without a read, a
    computed write can lose 50 rounds in a row within a second; it must not be answered 503 for it."""
    brief = dataclasses.replace(LOST_RACES, seconds=0.5, pause=0.0005)
    started = time.monotonic()
    rounds = sum(1 for _ in brief.rounds())
    assert rounds > 200
    assert time.monotonic() - started < 1.5
