"""The storage layer's promises, checked on the documents themselves and by counting commands."""

from __future__ import annotations

import dataclasses
import json

import pytest
from pymongo import MongoClient, monitoring

from app import errors, records, validation
from app.sessions import COMPACT_AFTER, PATCH_LOG_BYTES, Limits, Sessions
from app.store import INLINE, SessionStore
from tests.support import stored_context

LIMITS = Limits(max_sessions=10, timeout=1800, max_timeout=86400, max_history=1000, max_context_bytes=1 << 20)
READS_AND_WRITES = {"find", "findAndModify", "insert", "update", "delete", "aggregate", "count"}


class Counter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.commands: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in READS_AND_WRITES:
            self.names.append(event.command_name)
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def counter() -> Counter:
    return Counter()


def make_store(
    mongo_uri: str, db_name: str, clock, counter: Counter | None = None, inline: int = INLINE
) -> tuple[SessionStore, MongoClient]:
    """A store on its own client (a process of its own), with the spec's limits."""
    client = MongoClient(mongo_uri, event_listeners=[counter] if counter else [])
    store = SessionStore(
        client[db_name]["sessions"],
        clock,
        max_sessions=10,
        purge_grace_ms=300_000,
        retention_ms=7 * 86400_000,
        inline=inline,
    )
    store.ensure_indexes()
    return store, client


@pytest.fixture
def store(mongo_uri, db_name, clock, counter):
    store, client = make_store(mongo_uri, db_name, clock, counter)
    yield store
    client.close()


@pytest.fixture
def core(store) -> Sessions:
    return Sessions(store, LIMITS)


def run(core: Sessions, op: str, **body) -> dict:
    return core.execute(validation.parse(f"session_{op}", {"user_id": "u1", **body}))


def round_trips(counter: Counter, core: Sessions, op: str, **body) -> int:
    counter.names.clear()
    run(core, op, **body)
    return len(counter.names)


def test_each_operation_costs_the_expected_database_round_trips(core, counter):
    assert round_trips(counter, core, "create", session_id="s1") == 2  # is the id taken? insert
    assert round_trips(counter, core, "get", session_id="s1") == 1
    assert round_trips(counter, core, "append_messages", session_id="s1", role="user", content="hi") == 1
    assert round_trips(counter, core, "history", session_id="s1") == 1
    assert round_trips(counter, core, "touch", session_id="s1") == 1
    assert round_trips(counter, core, "update", session_id="s1", context='{"a":1}') == 1  # compare-and-set
    assert round_trips(counter, core, "clear_history", session_id="s1") == 1
    assert round_trips(counter, core, "list") == 1
    assert round_trips(counter, core, "close", session_id="s1") == 1
    assert round_trips(counter, core, "delete", session_id="s1") == 2  # the session; its tombstone and chunks


def test_a_generated_id_for_a_user_below_the_limit_costs_one_insert_and_no_query_by_user(core, counter):
    counter.names.clear()
    core.execute(validation.parse("session_create", {"user_id": "newcomer"}))
    assert counter.names == ["insert"]


def test_a_session_with_its_own_timeout_costs_one_round_trip_once_its_timeout_is_learned(core, store, counter, clock):
    run(core, "create", session_id="t", options={"timeout": 3600})
    store.memory.forget()  # as a worker that never saw this session
    assert round_trips(counter, core, "get", session_id="t") == 3  # wrong guess, read, retry
    assert round_trips(counter, core, "get", session_id="t") == 1
    clock.advance(2000)  # past the default timeout, inside its own
    assert run(core, "get", session_id="t")["expires_in"] == 3600


def test_no_filter_uses_expr_which_nx_27017_evaluates_over_the_whole_collection(core, counter):
    run(core, "create", session_id="e", options={"max_history": 5})
    counter.commands.clear()
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
    assert counter.commands and "$expr" not in repr(counter.commands)


def test_no_operation_asks_for_an_aggregate_which_nx_27017_runs_over_a_copy_of_every_document(
    core, store, counter, clock
):
    run(core, "create", session_id="p", options={"timeout": 600})
    run(core, "append_messages", session_id="p", role="user", content="x")
    stale = store.load(records.key("u1", "p"))
    clock.advance(500)  # close to the purge date: the next sliding write moves it
    run(core, "get", session_id="p")
    counter.names.clear()
    store.memory.forget()
    assert store.keep_purgeable_after(dataclasses.replace(stale, expires=clock() + 600_000))  # already moved
    assert counter.names == ["findAndModify", "find", "update"]  # missed; the session exists; tombstone
    for op in ("history", "touch", "clear_history", "close", "delete"):
        run(core, op, session_id="p")
    run(core, "list")
    assert counter.names and not {"aggregate", "count"} & set(counter.names)


def test_every_write_answers_exactly_the_document_it_left(core, store, clock):
    """Writes ask for the document before the update and apply the update themselves."""
    key = records.key("u1", "w")
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
        stored = records.from_doc(store.collection.find_one({"_id": key}, {"msgs": 0}))
        assert store.memory.recall(key) == stored, op


def test_a_merge_costs_one_round_trip_in_any_process_whatever_the_others_wrote(
    core, store, counter, mongo_uri, db_name, clock
):
    other, client = make_store(mongo_uri, db_name, clock)
    try:
        rival = Sessions(other, LIMITS)
        run(core, "create", session_id="m", context='{"a":1}')
        run(rival, "update", session_id="m", context='{"b":2}')  # this process still remembers v1
        assert round_trips(counter, core, "update", session_id="m", context='{"c":3}') == 1
        assert run(core, "get", session_id="m")["context"] == '{"a":1,"b":2,"c":3}'
        store.memory.forget()  # a process that never saw the session
        assert round_trips(counter, core, "update", session_id="m", context='{"d":4,"a":null}') == 1
        assert run(rival, "get", session_id="m")["context"] == '{"b":2,"c":3,"d":4}'
    finally:
        client.close()


def test_the_patch_log_is_folded_into_the_stored_context_every_few_merges(core, store, counter):
    run(core, "create", session_id="m", context='{"n":0}')
    costs = []
    for i in range(1, 2 * COMPACT_AFTER + 1):
        costs.append(round_trips(counter, core, "update", session_id="m", context=f'{{"n":{i},"k{i}":true}}'))
        doc = store.collection.find_one({"_id": records.key("u1", "m")})
        assert len(doc["cp"]) < COMPACT_AFTER
        assert doc["csz"] >= len(stored_context(doc).encode())
    assert costs == ([1] * (COMPACT_AFTER - 1) + [2]) * 2  # the fold: one conditional update
    assert json.loads(run(core, "get", session_id="m")["context"])["n"] == 2 * COMPACT_AFTER


def test_a_large_context_is_merged_by_compare_and_set_and_keeps_no_patch_log(core, store, counter):
    big = json.dumps({"pad": "x" * (PATCH_LOG_BYTES + 10)})
    run(core, "create", session_id="m", context=big)
    store.memory.forget()  # not known here: the log's size bound turns the merge away
    assert round_trips(counter, core, "update", session_id="m", context='{"a":1}') == 3  # bound miss, read, CAS
    assert round_trips(counter, core, "update", session_id="m", context='{"b":2}') == 1  # known large: CAS
    doc = store.collection.find_one({"_id": records.key("u1", "m")})
    assert doc["cp"] == [] and json.loads(doc["ctx"]) == {"pad": "x" * (PATCH_LOG_BYTES + 10), "a": 1, "b": 2}


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
    store.collection.update_one({"_id": records.key("u1", "old")}, {"$unset": {"cp": "", "csz": ""}})
    store.memory.forget()
    assert run(core, "update", session_id="old", context='{"b":2}')["context"] == '{"a":1,"b":2}'
    doc = store.collection.find_one({"_id": records.key("u1", "old")})
    assert (doc["cp"], doc["csz"]) == ([], len('{"a":1,"b":2}'))


def test_an_update_after_another_process_changed_the_timeout_retries_with_the_new_one_once(
    core, counter, mongo_uri, db_name, clock
):
    other_client = MongoClient(mongo_uri)
    try:
        other = Sessions(
            SessionStore(
                other_client[db_name]["sessions"],
                clock,
                max_sessions=10,
                purge_grace_ms=300_000,
                retention_ms=86400_000,
            ),
            LIMITS,
        )
        run(core, "create", session_id="t2", context='{"a":1}')
        run(other, "touch", session_id="t2", options={"timeout": 600})  # same version, new timeout
        assert round_trips(counter, core, "update", session_id="t2", context='{"b":2}') == 3  # miss, read, retry
        out = run(core, "get", session_id="t2")
        assert (out["context"], out["expires_in"]) == ('{"a":1,"b":2}', 600)
    finally:
        other_client.close()


def test_a_session_recreated_under_the_same_id_is_never_mistaken_for_the_remembered_one(core, store):
    run(core, "create", session_id="r", context='{"old":1}')
    remembered = store.memory.recall(records.key("u1", "r"))
    store.collection.delete_many({})
    store.collection.insert_one(
        records.new_doc(
            "u1",
            "r",
            context='{"new":1}',
            now=store.clock(),
            timeout_ms=1_800_000,
            max_history=1000,
            auto_clean=False,
            slot=0,
            purge_ms=0,
        )
    )
    assert store.memory.recall(records.key("u1", "r")) == remembered  # same id, same version 1: only the nonce differs
    out = run(core, "update", session_id="r", context='{"x":1}')
    assert out["context"] == '{"new":1,"x":1}'


def test_indexes_are_created_once_and_idempotently(store):
    store.ensure_indexes()
    indexes = {tuple(k for k, _ in ix["key"]): ix for ix in store.collection.index_information().values()}
    assert indexes[("uid", "slot")]["unique"] is True
    assert indexes[("pa",)]["expireAfterSeconds"] == 0
    assert ("uid", "k", "c") in indexes


def test_a_busy_session_keeps_its_purge_date_ahead_of_its_expiry(core, store, clock):
    run(core, "create", session_id="busy", options={"timeout": 600})
    key = records.key("u1", "busy")
    for _ in range(20):
        clock.advance(100)  # longer than the session's grace in total, shorter than its timeout each step
        assert run(core, "get", session_id="busy")["status"] == "active"
        doc = store.collection.find_one({"_id": key})
        tomb = store.collection.find_one({"_id": records.tomb_key(key)})
        assert doc["pms"] >= doc["exp"]
        assert tomb["pms"] >= doc["pms"] + store.retention_ms


def test_a_session_without_auto_clean_has_no_ttl_date_and_no_tombstone(core, store):
    run(core, "create", session_id="keep", options={"auto_clean": False})
    key = records.key("u1", "keep")
    assert "pa" not in store.collection.find_one({"_id": key})
    assert store.collection.find_one({"_id": records.tomb_key(key)}) is None


def test_the_stored_history_stays_within_max_history_and_a_tenth(core, store):
    run(core, "create", session_id="h", options={"max_history": 10})
    for i in range(50):
        out = run(core, "append_messages", session_id="h", role="user", content=str(i))
        assert out["message_count"] == min(i + 1, 10)
        assert len(store.collection.find_one({"_id": records.key("u1", "h")})["msgs"]) <= 11
    page = run(core, "history", session_id="h")["messages"]
    assert [m["content"] for m in page] == [str(i) for i in range(40, 50)]
    assert [m["seq"] for m in page] == list(range(41, 51))


def test_context_is_stored_as_its_json_text_not_as_fields(core, store):
    run(core, "create", session_id="c", context='{"$where": "1", "a.b": {"": 1}}')
    doc = store.collection.find_one({"_id": records.key("u1", "c")})
    assert doc["ctx"] == '{"$where":"1","a.b":{"":1}}'
