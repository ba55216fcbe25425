"""The storage layer's promises, checked on the documents themselves and on the commands it sends."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app import errors
from app.core import Sessions
from app.storage import layout
from app.storage.aftermath import FOLD_AFTER
from app.storage.database import build_indexes
from app.storage.updates import PATCH_LOG_BYTES
from tests.support import LIMITS, CommandLog, open_store, run, stored_context

KEY = layout.key


def doc(store, sid: str, user: str = "u1") -> dict:
    return store.collections.read.find_one({"_id": KEY(user, sid)})


def round_trips(sent: CommandLog, core: Sessions, op: str, **body) -> int:
    sent.clear()
    run(core, op, **body)
    return len(sent.commands)


def test_each_operation_costs_the_expected_database_round_trips(core, store, sent):
    assert round_trips(sent, core, "create", session_id="s1") == 2  # is the id taken? insert
    assert round_trips(sent, core, "get", session_id="s1") == 1
    assert round_trips(sent, core, "append_messages", session_id="s1", role="user", content="hi") == 1
    assert round_trips(sent, core, "history", session_id="s1") == 1
    assert round_trips(sent, core, "touch", session_id="s1") == 1
    assert round_trips(sent, core, "update", session_id="s1", context='{"a":1}') == 1  # onto the patch log
    assert round_trips(sent, core, "clear_history", session_id="s1") == 1
    assert round_trips(sent, core, "list") == 1
    assert round_trips(sent, core, "lock", session_id="s1") == 1
    token = run(core, "get", session_id="s1")["locked_until"] and store.read("u1", "s1").stored.lock_token
    assert round_trips(sent, core, "unlock", session_id="s1", lock_token=token) == 1
    run(core, "append_messages", session_id="s1", role="user", content="again")
    assert round_trips(sent, core, "compact", session_id="s1", summary="s", options={"upto_seq": 1}) == 2  # read, write
    assert round_trips(sent, core, "close", session_id="s1") == 1
    assert (
        round_trips(sent, core, "delete", session_id="s1") == 3
    )  # mark it (if the lock allows), the rest, the session


def test_a_generated_id_for_a_user_below_the_limit_costs_one_insert_and_no_query_by_user(core, sent):
    sent.clear()
    run(core, "create", user_id="newcomer")
    assert sent.names == ["insert"]


def test_a_session_with_its_own_timeout_costs_one_round_trip_once_its_timeout_is_learned(core, store, sent, clock):
    run(core, "create", session_id="t", options={"timeout": 3600})
    store.cache.forget()  # as a worker that never saw this session
    assert round_trips(sent, core, "get", session_id="t") == 3  # wrong guess, read, retry
    assert round_trips(sent, core, "get", session_id="t") == 1
    clock.advance(2000)  # past the default timeout, inside its own
    assert run(core, "get", session_id="t")["expires_in"] == 3600


def test_no_filter_uses_expr_which_nx_27017_evaluates_over_the_whole_collection(core, sent):
    run(core, "create", session_id="e", options={"max_history": 5})
    sent.clear()
    for op, body in [
        ("get", {}),
        ("append_messages", {"role": "user", "content": "x", "options": {"on_overflow": "reject"}}),
        ("history", {}),
        ("touch", {}),
        ("update", {"context": "{}"}),
        ("close", {}),
    ]:
        run(core, op, session_id="e", **body)
    run(core, "list", options={"status": "active"})
    assert sent.commands and "$expr" not in repr(sent.commands)


def test_no_operation_asks_for_an_aggregate_which_nx_27017_runs_over_a_copy_of_every_document(core, store, sent, clock):
    run(core, "create", session_id="p", options={"timeout": 600})
    run(core, "append_messages", session_id="p", role="user", content="x")
    stale = store.read("u1", "p")
    clock.advance(500)  # close to the purge date: the next sliding write moves it
    run(core, "get", session_id="p")
    sent.clear()
    store.cache.forget()
    assert store.expiry.keep_purgeable_after(dataclasses.replace(stale, expires=clock() + 600_000), persist=True)
    assert sent.names == ["findAndModify", "find", "update"]  # missed; the session exists; tombstone
    for op in ("history", "touch", "clear_history", "close", "delete"):
        run(core, op, session_id="p")
    run(core, "list")
    assert sent.names and not {"aggregate", "count"} & set(sent.names)


def test_every_write_answers_exactly_the_document_it_left(core, store, clock):
    """Writes ask for the document before the update and apply the update themselves."""
    steps = [
        ("create", {"context": '{"a":1}'}),
        ("get", {}),
        ("update", {"context": '{"b":2}'}),
        ("update", {"context": '{"c":3}', "options": {"merge": False}}),
        ("append_messages", {"messages": [{"role": "user", "content": str(i)} for i in range(5)]}),
        ("touch", {"options": {"timeout": 900}}),
        ("history", {}),
        ("clear_history", {}),
        ("close", {}),
    ]
    for op, body in steps:
        clock.advance(1)
        run(core, op, session_id="w", **body)
        stored = layout.from_doc(store.collections.read.find_one({"_id": KEY("u1", "w")}, {"msgs": 0}))
        remembered = store.cache.recall(KEY("u1", "w"))
        assert (remembered, remembered.stored) == (stored, stored.stored), op


def test_a_merge_costs_one_round_trip_in_any_process_whatever_the_others_wrote(
    core, store, sent, mongo_uri, db_name, clock
):
    other, client = open_store(mongo_uri, db_name, clock)
    try:
        rival = Sessions(other, LIMITS)
        run(core, "create", session_id="m", context='{"a":1}')
        run(rival, "update", session_id="m", context='{"b":2}')  # this process still remembers v1
        assert round_trips(sent, core, "update", session_id="m", context='{"c":3}') == 1
        assert run(core, "get", session_id="m")["context"] == '{"a":1,"b":2,"c":3}'
        store.cache.forget()  # a process that never saw the session
        assert round_trips(sent, core, "update", session_id="m", context='{"d":4,"a":null}') == 1
        assert run(rival, "get", session_id="m")["context"] == '{"b":2,"c":3,"d":4}'
    finally:
        client.close()


def test_the_patch_log_is_folded_into_the_stored_context_every_few_merges(core, store, sent):
    run(core, "create", session_id="m", context='{"n":0}')
    costs = []
    for i in range(1, 2 * FOLD_AFTER + 1):
        costs.append(round_trips(sent, core, "update", session_id="m", context=f'{{"n":{i},"k{i}":true}}'))
        stored = doc(store, "m")
        assert len(stored["cp"]) < FOLD_AFTER
        assert stored["csz"] >= len(stored_context(stored).encode())
    assert costs == ([1] * (FOLD_AFTER - 1) + [2]) * 2  # the fold: one conditional update
    assert json.loads(run(core, "get", session_id="m")["context"])["n"] == 2 * FOLD_AFTER


def test_a_large_context_is_merged_by_compare_and_set_and_keeps_no_patch_log(core, store, sent):
    big = json.dumps({"pad": "x" * (PATCH_LOG_BYTES + 10)})
    run(core, "create", session_id="m", context=big)
    store.cache.forget()  # not known here: the log's size bound turns the merge away
    assert round_trips(sent, core, "update", session_id="m", context='{"a":1}') == 3  # bound miss, read, CAS
    assert round_trips(sent, core, "update", session_id="m", context='{"b":2}') == 1  # known large: CAS
    stored = doc(store, "m")
    assert stored["cp"] == [] and json.loads(stored["ctx"]) == {"pad": "x" * (PATCH_LOG_BYTES + 10), "a": 1, "b": 2}


def test_a_large_merge_remembered_from_an_older_incarnation_lands_on_the_new_one_only(
    core, store, sent, mongo_uri, db_name, clock
):
    """Same id, same version, another nonce: the compare-and-set never writes onto a state it did not read."""
    big = "x" * (PATCH_LOG_BYTES + 10)
    other_store, client = open_store(mongo_uri, db_name, clock)
    try:
        other = Sessions(other_store, LIMITS)
        run(core, "create", session_id="r", context=json.dumps({"old": big}))
        run(core, "update", session_id="r", context='{"a":1}')  # remembered here: version 2, the first nonce
        run(other, "delete", session_id="r")
        run(other, "create", session_id="r", context=json.dumps({"new": big}))
        run(other, "update", session_id="r", context='{"b":1}')  # the new incarnation is at version 2 too
        assert store.cache.recall(KEY("u1", "r")).version == 2
        sent.clear()
        out = run(core, "update", session_id="r", context='{"c":1}')
        assert sent.names == [
            "findAndModify",
            "find",
            "findAndModify",
        ]  # the stale state missed, was read, merged
        assert set(json.loads(out["context"])) == {"new", "b", "c"}
        assert set(json.loads(stored_context(doc(store, "r")))) == {"new", "b", "c"}
    finally:
        client.close()


def test_a_merge_near_the_context_limit_is_checked_exactly_not_by_the_bound(store):
    small = Sessions(store, dataclasses.replace(LIMITS, max_context_bytes=200))
    run(small, "create", session_id="m", context=json.dumps({"a": "x" * 150}))
    with pytest.raises(errors.ContextTooLarge):
        run(small, "update", session_id="m", context=json.dumps({"b": "y" * 60}))
    assert run(small, "get", session_id="m")["version"] == 1
    # the bound (stored size plus patch) is over 200, the merged context is not: accepted
    assert run(small, "update", session_id="m", context=json.dumps({"a": None, "b": "y" * 60}))["version"] == 2
    assert run(small, "get", session_id="m")["context"] == json.dumps({"b": "y" * 60}, separators=(",", ":"))


def test_a_session_stored_before_the_patch_log_is_merged_by_compare_and_set(core, store):
    run(core, "create", session_id="old", context='{"a":1}')
    store.collections.read.update_one({"_id": KEY("u1", "old")}, {"$unset": {"cp": "", "csz": ""}})
    store.cache.forget()
    assert run(core, "update", session_id="old", context='{"b":2}')["context"] == '{"a":1,"b":2}'
    stored = doc(store, "old")
    assert (stored["cp"], stored["csz"]) == ([], len('{"a":1,"b":2}'))


def test_an_update_after_another_process_changed_the_timeout_retries_with_the_new_one_once(
    core, sent, mongo_uri, db_name, clock
):
    other_store, client = open_store(mongo_uri, db_name, clock, retention_ms=86400_000)
    try:
        other = Sessions(other_store, LIMITS)
        run(core, "create", session_id="t2", context='{"a":1}')
        run(other, "touch", session_id="t2", options={"timeout": 600})  # same version, new timeout
        assert round_trips(sent, core, "update", session_id="t2", context='{"b":2}') == 3  # miss, read, retry
        out = run(core, "get", session_id="t2")
        assert (out["context"], out["expires_in"]) == ('{"a":1,"b":2}', 600)
    finally:
        client.close()


def test_indexes_are_created_idempotently_and_one_serves_the_list_and_its_sort(store):
    build_indexes(store.collections)
    build_indexes(store.collections)
    indexes = {tuple(k for k, _ in ix["key"]): ix for ix in store.collections.read.index_information().values()}
    assert indexes[("uid", "slot")]["unique"] is True
    assert indexes[("pa",)]["expireAfterSeconds"] == 0
    assert ("uid", "k", "c", "sid") in indexes


def test_sessions_created_in_the_same_millisecond_are_listed_once_each_across_pages(core):
    sids = [f"s{i}" for i in range(7)]
    for sid in sids:  # the fake clock does not move: every created_at is the same
        run(core, "create", session_id=sid)
    seen, cursor = [], ""
    while True:
        page = run(core, "list", options={"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(sids, reverse=True)


def test_a_busy_session_keeps_its_purge_date_ahead_of_its_expiry(core, store, clock):
    run(core, "create", session_id="busy", options={"timeout": 600})
    for _ in range(20):
        clock.advance(100)  # longer than the session's grace in total, shorter than its timeout each step
        assert run(core, "get", session_id="busy")["status"] == "active"
        stored = doc(store, "busy")
        tomb = store.collections.read.find_one({"_id": layout.tomb_key(KEY("u1", "busy"))})
        assert stored["pms"] >= stored["exp"]
        assert tomb["pms"] >= stored["pms"] + store.expiry.retention_ms


def test_a_session_without_auto_clean_has_no_ttl_date_and_no_tombstone(core, store):
    run(core, "create", session_id="keep", options={"auto_clean": False})
    assert "pa" not in doc(store, "keep")
    assert store.collections.read.find_one({"_id": layout.tomb_key(KEY("u1", "keep"))}) is None


def test_the_stored_history_stays_within_max_history_and_a_tenth(core, store):
    run(core, "create", session_id="h", options={"max_history": 10})
    for i in range(50):
        out = run(core, "append_messages", session_id="h", role="user", content=str(i))
        assert out["message_count"] == min(i + 1, 10)
        assert len(doc(store, "h")["msgs"]) <= 11
    page = run(core, "history", session_id="h")["messages"]
    assert [m["content"] for m in page] == [str(i) for i in range(40, 50)]
    assert [m["seq"] for m in page] == list(range(41, 51))


def test_context_is_stored_as_its_json_text_not_as_fields(core, store):
    run(core, "create", session_id="c", context='{"$where": "1", "a.b": {"": 1}}')
    assert doc(store, "c")["ctx"] == '{"$where":"1","a.b":{"":1}}'


def test_every_stored_field_is_one_the_layout_table_names(core, store):
    run(core, "create", session_id="f", context='{"a":1}')
    for i in range(130):
        run(core, "append_messages", session_id="f", role="user", content=f"m{i}")
    run(core, "update", session_id="f", context='{"b":2}')
    every = list(store.collections.read.find({"uid": "u1"}))
    assert {d["k"] for d in every} == {"s", "t", "m"}
    assert set().union(*every) <= set(layout.FIELDS)


def test_a_compaction_overtaken_by_an_append_between_its_read_and_its_write_keeps_the_append(
    core, store, mongo_uri, db_name, clock
):
    other, client = open_store(mongo_uri, db_name, clock)
    try:
        run(core, "create", session_id="c")
        run(core, "append_messages", session_id="c", messages=[{"role": "user", "content": f"m{i}"} for i in range(6)])
        inspect, overtaken = store._inspect, []

        def read_then_append(*args, **kwargs):
            found = inspect(*args, **kwargs)
            if not overtaken:  # once: right after the compaction read the session
                overtaken.append(
                    run(Sessions(other, LIMITS), "append_messages", session_id="c", role="user", content="late")
                )
            return found

        store._inspect = read_then_append
        try:
            out = run(core, "compact", session_id="c", summary="first four", options={"upto_seq": 4})
        finally:
            store._inspect = inspect
        assert overtaken and (out["summary_upto"], out["message_count"]) == (4, 3)
        page = run(core, "history", session_id="c")["messages"]
        assert [m["content"] for m in page] == ["m4", "m5", "late"]
    finally:
        client.close()


def test_a_delete_that_died_between_marking_and_removing_does_not_wedge_its_id(core, store):
    run(core, "create", session_id="w", options={"auto_clean": False})
    store.collections.read.update_one({"_id": KEY("u1", "w")}, {"$set": {"st": "deleted", "slot": KEY("u1", "w")}})
    with pytest.raises(errors.SessionNotFound):
        run(core, "get", session_id="w")
    assert run(core, "list")["sessions"] == []
    again = run(core, "create", session_id="w", context='{"fresh": 1}')  # finishes the removal, then creates
    assert (again["created"], again["context"]) == (True, '{"fresh":1}')


def test_a_merge_refused_on_a_stale_remembered_state_is_judged_on_what_is_stored(
    core, store, mongo_uri, db_name, clock
):
    other, client = open_store(mongo_uri, db_name, clock)
    try:
        run(core, "create", session_id="m", context=json.dumps({"big": "x" * 900_000}))  # remembered here as 900 KB
        run(Sessions(other, LIMITS), "update", session_id="m", context="{}", options={"merge": False})
        out = run(core, "update", session_id="m", context=json.dumps({"next": "y" * 200_000}))  # fits what is stored
        assert set(json.loads(out["context"])) == {"next"}
    finally:
        client.close()


def test_a_replay_moves_the_purge_date_a_failed_first_attempt_left_behind(core, store, clock, monkeypatch):
    run(core, "create", session_id="p")
    clock.advance(900)  # idle long enough that this write must move the purge date
    keep = store.expiry.keep_purgeable_after

    def fails_once(s, *, persist):
        monkeypatch.setattr(store.expiry, "keep_purgeable_after", keep)
        raise errors.StorageUnavailable(unknown_outcome=True)

    monkeypatch.setattr(store.expiry, "keep_purgeable_after", fails_once)
    with pytest.raises(errors.StorageUnavailable):
        run(core, "update", session_id="p", context='{"a":1}', request_id="w1")
    assert run(core, "update", session_id="p", context='{"a":1}', request_id="w1")["replayed"] is True
    stored = doc(store, "p")
    assert stored["pms"] >= stored["exp"]  # the reaper waits for the session's expiry again
