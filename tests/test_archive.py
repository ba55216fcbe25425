"""Long histories: the session document keeps the newest messages, older ones move to archive chunks.

Checked on the stored documents and by counting commands, with an inline size of 4 so that a few
appends cross every boundary.
"""

from __future__ import annotations

import json
import random
import threading

import bson
import pytest
from pymongo.errors import ConnectionFailure

from app.core import Sessions
from app.storage import documents, layout
from app.storage.store import SessionStore
from tests.support import LIMITS, open_store, run

INLINE = 4


@pytest.fixture
def chunk_size() -> int:
    """The store fixture's chunk size here: a few appends cross every boundary."""
    return INLINE


def make_store(mongo_uri, db_name, clock, inline=INLINE):
    return open_store(mongo_uri, db_name, clock, chunk_size=inline)


def append(core: Sessions, count: int, start: int = 0, sid: str = "s") -> None:
    for i in range(start, start + count):
        run(core, "append_messages", session_id=sid, role="user", content=f"m{i}")


def whole_history(core: Sessions, sid: str = "s", limit: int = 3) -> list[tuple[int, str]]:
    """Every visible message, read back page by page from the newest."""
    pages, cursor = [], None
    while True:
        options = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        out = run(core, "history", session_id=sid, options=options)
        pages[:0] = [(m["seq"], m["content"]) for m in out["messages"]]
        cursor = out["next_cursor"]
        if not cursor:
            return pages


def chunk_docs(store: SessionStore) -> list[dict]:
    return list(store.collections.read.find({"k": "m"}))


def session_doc(store: SessionStore, sid: str = "s") -> dict:
    return store.collections.read.find_one({"_id": layout.key("u1", sid)})


def test_the_session_document_holds_at_most_twice_the_inline_size_whatever_the_history(core, store):
    run(core, "create", session_id="s")
    for i in range(60):
        append(core, 1, start=i)
        assert len(session_doc(store)["msgs"]) < 2 * INLINE
    assert whole_history(core) == [(i + 1, f"m{i}") for i in range(60)]
    assert all(len(c["msgs"]) == INLINE for c in chunk_docs(store))


def test_history_pages_read_the_archive_only_when_they_reach_back(core, store, sent):
    run(core, "create", session_id="s")
    append(core, 20)
    sent.clear()
    newest = run(core, "history", session_id="s", options={"limit": 2})
    assert [m["seq"] for m in newest["messages"]] == [19, 20]
    assert sent.names == ["findAndModify"]
    sent.clear()
    older = run(core, "history", session_id="s", options={"limit": 10, "cursor": newest["next_cursor"]})
    assert [m["content"] for m in older["messages"]] == [f"m{i}" for i in range(8, 18)]
    assert sent.names == ["findAndModify", "find"]


def test_only_chunks_inside_max_history_are_kept(core, store):
    run(core, "create", session_id="s", options={"max_history": 10})
    append(core, 100)
    assert whole_history(core) == [(i + 1, f"m{i}") for i in range(90, 100)]
    assert run(core, "get", session_id="s")["message_count"] == 10
    # the 10 visible messages span at most ceil(10 / 4) + 1 chunks besides the inline ones
    assert len(chunk_docs(store)) <= 4
    firsts = sorted(c["seq"] for c in chunk_docs(store))
    assert firsts == list(session_doc(store)["bk"])


def test_one_append_of_many_messages_is_archived_in_whole_chunks(core, store):
    run(core, "create", session_id="s")
    messages = [{"role": "user", "content": f"m{i}"} for i in range(23)]
    run(core, "append_messages", session_id="s", messages=messages)
    assert len(session_doc(store)["msgs"]) < 2 * INLINE
    assert sorted(c["seq"] for c in chunk_docs(store)) == [1, 5, 9, 13]  # 17..23 stay inline
    assert whole_history(core) == [(i + 1, f"m{i}") for i in range(23)]


def test_an_archiving_append_costs_three_more_round_trips_once_per_inline_size(core, store, sent):
    run(core, "create", session_id="s")
    costs = []
    for i in range(16):
        sent.clear()
        append(core, 1, start=i)
        costs.append(len(sent.commands))
    # read the session with its messages, insert the chunk, move the session on
    assert costs == [1] * 7 + [4] + [1] * 3 + [4] + [1] * 3 + [4]


def test_clear_history_hides_the_archive_and_the_next_archive_deletes_it(core, store):
    run(core, "create", session_id="s")
    append(core, 12)
    assert chunk_docs(store)
    run(core, "clear_history", session_id="s")
    assert whole_history(core) == []
    append(core, 9, start=100)
    assert whole_history(core) == [(13 + i, f"m{100 + i}") for i in range(9)]
    assert sorted(c["seq"] for c in chunk_docs(store)) == [13]


def test_delete_removes_the_archive_with_the_session(core, store):
    run(core, "create", session_id="s")
    append(core, 30)
    run(core, "delete", session_id="s")
    assert list(store.collections.read.find({"uid": "u1"})) == []


def test_a_caller_reusing_an_expired_id_starts_without_the_old_archive(core, store, clock):
    run(core, "create", session_id="s", options={"timeout": 60})
    append(core, 30)
    clock.advance(61)
    assert run(core, "create", session_id="s")["created"] is True
    assert chunk_docs(store) == []
    assert whole_history(core) == []


def test_archive_chunks_are_purged_with_their_session_not_before(core, store, clock):
    run(core, "create", session_id="s", options={"timeout": 600})
    append(core, 12)
    for _ in range(10):  # keep the session alive well past its first purge date
        clock.advance(300)
        run(core, "touch", session_id="s")
    doc = session_doc(store)
    assert doc["pms"] >= doc["exp"]
    assert chunk_docs(store) and all(c["pms"] == doc["pms"] and c["pa"] == doc["pa"] for c in chunk_docs(store))
    assert whole_history(core) == [(i + 1, f"m{i}") for i in range(12)]


def test_a_session_without_auto_clean_has_chunks_without_a_purge_date(core, store):
    run(core, "create", session_id="s", options={"auto_clean": False})
    append(core, 12)
    assert chunk_docs(store) and all("pa" not in c for c in chunk_docs(store))


def append_overtaken(core: Sessions, store: SessionStore, rival_move) -> None:
    """Append the 8th message, whose archive is overtaken by `rival_move` once its chunk is written."""
    run(core, "create", session_id="s")
    append(core, 7)
    insert = store.archive._insert_chunks

    def overtaken(chunks: list[dict], persist: bool) -> bool:
        reused = insert(chunks, persist)
        rival_move()
        return reused

    store.archive._insert_chunks = overtaken
    try:
        append(core, 1, start=7)
    finally:
        store.archive._insert_chunks = insert


def test_an_archive_that_loses_to_a_clear_leaves_no_chunk_behind(mongo_uri, db_name, clock, core, store):
    other, client = make_store(mongo_uri, db_name, clock)
    try:
        append_overtaken(core, store, lambda: run(Sessions(other, LIMITS), "clear_history", session_id="s"))
        assert chunk_docs(store) == []
        assert whole_history(core) == []
        append(core, 8, start=50)
        assert whole_history(core) == [(9 + i, f"m{50 + i}") for i in range(8)]
    finally:
        client.close()


def test_an_archive_that_loses_to_an_append_keeps_its_chunk_for_the_next_one(mongo_uri, db_name, clock, core, store):
    other, client = make_store(mongo_uri, db_name, clock)
    other.archive.shrink = lambda s, persist: None  # a rival whose own archive step comes later
    try:
        append_overtaken(core, store, lambda: append(Sessions(other, LIMITS), 1, start=100))
        assert [c["seq"] for c in chunk_docs(store)] == [1]  # written, not yet referenced
        assert session_doc(store)["bk"] == []
        append(core, 3, start=8)
        assert session_doc(store)["bk"] == [1, 5]
        assert whole_history(core) == [(i + 1, f"m{i}") for i in range(8)] + [(9, "m100")] + [
            (10 + i, f"m{8 + i}") for i in range(3)
        ]
    finally:
        client.close()


def test_parallel_appends_from_two_processes_keep_every_message_exactly_once(mongo_uri, db_name, clock, core):
    stores = [make_store(mongo_uri, db_name, clock) for _ in range(2)]
    try:
        run(core, "create", session_id="s")
        cores = [Sessions(s, LIMITS) for s, _ in stores]
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(30):
                    run(cores[n % 2], "append_messages", session_id="s", role="user", content=f"w{n}-{i}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        history = whole_history(core, limit=50)
        assert [seq for seq, _ in history] == list(range(1, 241))
        assert sorted(content for _, content in history) == sorted(f"w{n}-{i}" for n in range(8) for i in range(30))
        for n in range(8):  # each writer's messages in the order it wrote them
            mine = [c for _, c in history if c.startswith(f"w{n}-")]
            assert mine == [f"w{n}-{i}" for i in range(30)]
    finally:
        for _, client in stores:
            client.close()


def test_a_delete_racing_an_archive_leaves_no_chunk(mongo_uri, db_name, clock, core, store):
    """The delete lands between the archive's chunk insert and its session update."""
    other, client = make_store(mongo_uri, db_name, clock)
    try:
        run(core, "create", session_id="s", options={"auto_clean": False})  # no TTL would ever clean up
        append_overtaken(core, store, lambda: run(Sessions(other, LIMITS), "delete", session_id="s"))
        assert list(store.collections.read.find({"uid": "u1"})) == []
    finally:
        client.close()


def killed_archiver_chunk(store: SessionStore, first: int) -> None:
    """The chunk an archiver writes before it records it, left alone because its process died in between."""
    s = layout.from_doc(session_doc(store))
    store.collections.read.insert_one(documents.new_chunk(s, first, ["user|1|lost"] * INLINE))


@pytest.mark.parametrize("op", ["delete", "clear_history"])
def test_a_chunk_whose_archiver_died_before_recording_it_goes_with_delete_and_clear(core, store, op):
    run(core, "create", session_id="s", options={"auto_clean": False})  # no TTL would ever clean up
    append(core, 2 * INLINE - 1)  # one more append would archive: a dying archiver got that far
    killed_archiver_chunk(store, 1)
    run(core, op, session_id="s")
    assert chunk_docs(store) == []


def test_a_chunk_a_losing_archiver_left_is_deleted_once_it_falls_out_of_view(mongo_uri, db_name, clock, core, store):
    other, client = make_store(mongo_uri, db_name, clock)
    other.archive.shrink = lambda s, persist: None
    try:
        run(core, "create", session_id="s", options={"auto_clean": False, "max_history": 6})
        four = [{"role": "user", "content": f"r{i}"} for i in range(4)]
        append_overtaken(
            core, store, lambda: run(Sessions(other, LIMITS), "append_messages", session_id="s", messages=four)
        )
        append(core, 1, start=100)  # archives from the new state: chunk 1 is out of view now
        refs = set(session_doc(store)["bk"])
        assert [c["seq"] for c in chunk_docs(store) if c["seq"] not in refs] == []
        run(core, "delete", session_id="s")
        assert chunk_docs(store) == []
    finally:
        client.close()


def test_a_chunk_written_earlier_takes_the_purge_date_of_the_session_that_adopts_it(
    mongo_uri, db_name, clock, core, store
):
    other, client = make_store(mongo_uri, db_name, clock)
    other.archive.shrink = lambda s, persist: None

    def later_append() -> None:
        clock.advance(400)  # far enough for the rival's sliding write to move the purge date
        append(Sessions(other, LIMITS), 1, start=100)

    try:
        run(core, "create", session_id="s", options={"timeout": 600})
        append_overtaken(core, store, later_append)  # our chunk 1 keeps the older purge date
        append(core, 1, start=8)  # archives again: chunk 1 exists already, now referenced
        doc = session_doc(store)
        assert 1 in doc["bk"]
        assert all(c["pms"] == doc["pms"] for c in chunk_docs(store))
    finally:
        client.close()


def test_workers_with_different_inline_settings_cut_the_same_chunks(mongo_uri, db_name, clock, core, store):
    """The chunk size is the session's, fixed when it was created."""
    other, client = make_store(mongo_uri, db_name, clock, inline=2 * INLINE)
    try:
        run(core, "create", session_id="s")
        wide = Sessions(other, LIMITS)
        for i in range(40):
            append(wide if i % 20 else core, 1, start=i)  # mostly the worker with the wider setting
        assert {len(c["msgs"]) for c in chunk_docs(store)} == {INLINE}
        assert whole_history(wide, limit=7) == [(i + 1, f"m{i}") for i in range(40)]
    finally:
        client.close()


def test_an_append_that_was_stored_is_answered_even_if_archiving_fails(core, store):
    run(core, "create", session_id="s")
    append(core, 7)
    insert = store.archive._insert_chunks

    def down(chunks: list[dict], persist: bool) -> bool:
        raise ConnectionFailure("database gone for a moment")

    store.archive._insert_chunks = down
    try:
        out = run(core, "append_messages", session_id="s", role="user", content="m7")
    finally:
        store.archive._insert_chunks = insert
    assert [m["seq"] for m in out["messages"]] == [8]  # no 503: a retry would store it twice
    append(core, 1, start=8)  # the next append archives
    assert whole_history(core) == [(i + 1, f"m{i}") for i in range(9)]
    assert chunk_docs(store)


@pytest.mark.parametrize("max_history", [1, 3, 4, 5, 7, 8, 9, 13, 30, 1000])
def test_history_matches_a_simple_model_through_appends_clears_and_paging(core, store, max_history):
    rng = random.Random(max_history)
    run(core, "create", session_id="s", options={"max_history": max_history})
    model: list[tuple[int, str]] = []
    n = total = 0
    for step in range(120):
        if rng.random() < 0.9:
            k = rng.choice([1, 1, 1, 2, 3, 5, 9])
            batch = [{"role": "user", "content": f"x{total + i + 1}"} for i in range(k)]
            out = run(core, "append_messages", session_id="s", messages=batch)
            kept_from = total + k - min(n + k, max_history) + 1  # the answer lists what max_history kept
            assert [m["seq"] for m in out["messages"]] == list(range(max(total + 1, kept_from), total + k + 1))
            model += [(total + i + 1, f"x{total + i + 1}") for i in range(k)]
            total, n = total + k, n + k
        else:
            run(core, "clear_history", session_id="s")
            model, n = [], 0
        visible = model[-min(n, max_history) :] if n else []
        limit = rng.choice([1, 2, 3, 4, 5, 7, 50])
        assert whole_history(core, limit=limit) == visible, (step, limit)
        cursor = rng.randint(0, total + 3)
        page = run(core, "history", session_id="s", options={"limit": limit, "cursor": str(cursor)})["messages"]
        assert [(m["seq"], m["content"]) for m in page] == [m for m in visible if m[0] < cursor][-limit:]
        assert run(core, "get", session_id="s")["message_count"] == len(visible)


def test_clear_history_deletes_the_archive_even_a_chunk_nothing_refers_to(mongo_uri, db_name, clock, core, store):
    other, client = make_store(mongo_uri, db_name, clock)
    other.archive.shrink = lambda s, persist: None
    try:
        run(core, "create", session_id="s", options={"auto_clean": False})  # no TTL would ever clean up
        append_overtaken(core, store, lambda: append(Sessions(other, LIMITS), 1, start=100))
        append(core, 3, start=8)  # adopts chunk 1, archives chunk 5
        assert sorted(c["seq"] for c in chunk_docs(store)) == [1, 5]
        run(core, "clear_history", session_id="s")
        assert chunk_docs(store) == []
        append(core, 12, start=200)
        run(core, "delete", session_id="s")
        assert list(store.collections.read.find({"uid": "u1"})) == []
    finally:
        client.close()


def test_clear_history_right_after_a_lost_archive_leaves_no_chunk(mongo_uri, db_name, clock, core, store):
    other, client = make_store(mongo_uri, db_name, clock)
    other.archive.shrink = lambda s, persist: None
    try:
        run(core, "create", session_id="s", options={"auto_clean": False})
        append_overtaken(core, store, lambda: append(Sessions(other, LIMITS), 1, start=100))
        assert [c["seq"] for c in chunk_docs(store)] == [1] and session_doc(store)["bk"] == []  # kept, unreferenced
        run(core, "clear_history", session_id="s")
        assert chunk_docs(store) == []
    finally:
        client.close()


CONTROL = "".join(chr(c) for c in range(2, 32))  # escaped as \u00XX in JSON: six bytes each there


@pytest.mark.slow
def test_a_session_fed_64_kib_messages_of_control_characters_keeps_every_document_far_below_16_mib(
    mongo_uri, db_name, clock
):
    """Stored bytes are what is counted: no document can grow until every append fails."""
    store, client = open_store(mongo_uri, db_name, clock)  # the default chunk size
    try:
        core = Sessions(store, LIMITS)
        run(core, "create", session_id="s", context=json.dumps({"pad": "x" * 1_000_000}))  # near the 1 MiB limit
        huge = (CONTROL * 2185)[:65536]
        with_nul = ("\x00" + CONTROL)[:32] * 1024  # NUL counts twice: 32 KiB of it is a full message
        sizes = []
        for i in range(110):  # past two archives: by stored bytes at 50 messages, then again
            content = with_nul if i % 10 == 9 else huge
            out = run(core, "append_messages", session_id="s", role="user", content=content)
            assert out["error_code"] == "" and out["messages"][0]["seq"] == i + 1
            if i % 10 == 9:
                sizes += [len(bson.encode(d)) for d in store.collections.read.find({"uid": "u1"})]
        assert max(sizes) < 8 * 1024 * 1024  # half of MongoDB's 16 MiB, whatever the history
        page = run(core, "history", session_id="s", options={"limit": 1000})["messages"]
        assert [m["content"] for m in page] == [with_nul if i % 10 == 9 else huge for i in range(110)]
    finally:
        client.close()
