"""Rewind (undo turns, seqs never reused) and fork (another branch of a conversation), archived
messages included: the tests' sessions keep 3 messages inline, so most histories reach the archive."""

from __future__ import annotations

import json

import pytest

from app import seqs
from tests.support import ctx, fail, ok

IDS = {"user_id": "u1"}


def conversation(api, n: int, **create) -> str:
    sid = api.create("u1", **create)["session_id"]
    for i in range(1, n + 1):
        role = "user" if i % 2 else "assistant"
        ok(api.call("append_messages", {**IDS, "session_id": sid, "role": role, "content": f"m{i}"}))
    return sid


def history(api, sid: str, user: str = "u1", **options) -> list[tuple[int, str]]:
    """Every visible message (seq, content), oldest first, paging back with the cursor."""
    out: list[tuple[int, str]] = []
    cursor = ""
    while True:
        page = ok(api.call("history", {"user_id": user, "session_id": sid, "options": {"cursor": cursor, **options}}))
        out = [(m["seq"], m["content"]) for m in page["messages"]] + out
        cursor = page["next_cursor"]
        if not cursor:
            return out


def rewind(api, sid: str, to_seq: int, **body) -> dict:
    return api.call("rewind", {**IDS, "session_id": sid, "options": {"to_seq": to_seq}, **body})


def fork(api, sid: str, **options) -> dict:
    return api.call("fork", {**IDS, "session_id": sid, "options": options})


# pure: the gaps


def test_first_visible_walks_back_over_gaps():
    assert seqs.first_visible(10, 3, ()) == 8
    assert seqs.first_visible(10, 3, ((8, 9),)) == 6
    assert seqs.first_visible(10, 0, ((8, 9),)) == 11
    assert seqs.first_visible(12, 2, ((5, 6), (9, 12))) == 7
    assert seqs.live_between(1, 12, ((5, 6), (9, 12))) == 6
    assert seqs.cut(((5, 6),), 8, 12, 1) == ((5, 6), (9, 12))
    assert seqs.cut(((5, 6), (9, 12)), 6, 15, 1) == ((5, 15),)
    assert seqs.cut(((2, 3), (9, 12)), 20, 15, 5) == ((9, 12),)
    assert seqs.clip(((5, 6), (9, 12)), 10) == ((5, 6), (9, 10))


# rewind


def test_rewind_drops_the_later_messages_and_the_next_append_continues_after_the_highest_seq(api):
    sid = conversation(api, 6)
    data = ok(rewind(api, sid, 4))
    assert (data["dropped"], data["message_count"], data["version"]) == (2, 4, 8)
    assert history(api, sid) == [(1, "m1"), (2, "m2"), (3, "m3"), (4, "m4")]
    more = ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "assistant", "content": "again"}))
    assert [m["seq"] for m in more["messages"]] == [7]  # 5 and 6 are never given again
    assert history(api, sid) == [(1, "m1"), (2, "m2"), (3, "m3"), (4, "m4"), (7, "again")]
    ok(rewind(api, sid, 3))
    ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "assistant", "content": "third"}))
    assert history(api, sid) == [(1, "m1"), (2, "m2"), (3, "m3"), (8, "third")]
    assert [s for s, _ in history(api, sid, limit=1)] == [1, 2, 3, 8]  # paging one by one skips the gaps


def test_rewind_into_the_archive_to_zero_and_past_the_newest(api):
    sid = conversation(api, 20)  # 3 inline: most are archived
    data = ok(rewind(api, sid, 5))
    assert (data["dropped"], data["message_count"]) == (15, 5)
    assert history(api, sid) == [(i, f"m{i}") for i in range(1, 6)]
    assert ok(rewind(api, sid, 99))["dropped"] == 0  # past the newest: nothing to drop
    data = ok(rewind(api, sid, 0))
    assert (data["dropped"], data["message_count"], history(api, sid)) == (5, 0, [])
    more = ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "user", "content": "fresh"}))
    assert [m["seq"] for m in more["messages"]] == [21]


def test_max_history_counts_the_messages_left_not_the_dropped_seqs(api):
    sid = conversation(api, 5, options={"max_history": 5})
    ok(rewind(api, sid, 3))
    ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "user", "content": "x"}))
    assert history(api, sid) == [(1, "m1"), (2, "m2"), (3, "m3"), (6, "x")]  # nothing dropped: 4 of 5
    for i in range(3):
        ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "user", "content": f"y{i}"}))
    assert history(api, sid) == [(3, "m3"), (6, "x"), (7, "y0"), (8, "y1"), (9, "y2")]


def test_rewind_below_the_summary_is_refused_at_it_allowed(api):
    sid = conversation(api, 8)
    ok(api.call("compact", {**IDS, "session_id": sid, "summary": "s", "options": {"upto_seq": 4}}))
    fail(rewind(api, sid, 3), "INVALID_ARGUMENT", field="options.to_seq")
    data = ok(rewind(api, sid, 4))
    assert (data["dropped"], data["message_count"], data["summary_upto"]) == (4, 0, 4)
    fail(api.call("rewind", {**IDS, "session_id": sid}), "INVALID_ARGUMENT", field="options.to_seq")


def test_rewind_is_idempotent_and_obeys_the_lock(api):
    sid = conversation(api, 6)
    first = ok(rewind(api, sid, 4, request_id="rw-1"))
    ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "user", "content": "after"}))
    again = ok(rewind(api, sid, 2, request_id="rw-1"))
    assert again["replayed"] and again["message_count"] == 5 and again["version"] == first["version"] + 1
    token = ok(api.call("lock", {**IDS, "session_id": sid}))["lock_token"]
    fail(rewind(api, sid, 1), "SESSION_LOCKED")
    assert ok(rewind(api, sid, 1, lock_token=token))["dropped"] == 4


def test_the_operation_tool_rewinds_with_to_seq_zero(api):
    sid = conversation(api, 3)
    body = {**IDS, "session_id": sid, "options": {"to_seq": 0}}
    assert ok(api.call("rewind", body, manage=True))["dropped"] == 3


def test_regenerate_the_answer(api):
    sid = conversation(api, 4)  # ... user m3, assistant m4
    ok(rewind(api, sid, 3))
    ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "assistant", "content": "better"}))
    assert history(api, sid)[-2:] == [(3, "m3"), (5, "better")]


def test_export_then_import_keeps_the_gaps(api, app):
    from app.storage import records

    sid = conversation(api, 12)
    ok(rewind(api, sid, 5))
    ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "user", "content": "x"}))
    store = app.extensions["database"].store()
    coll = store.collections.read
    doc = coll.find_one({"_id": f"{sid}@u1"})
    chunks = {c["_id"]: c for c in coll.find({"k": "m", "sid": sid})}
    record = records.check(json.loads(json.dumps(records.session_record(doc, chunks))))
    assert [m["seq"] for m in record["messages"]] == [1, 2, 3, 4, 5, 13]
    rebuilt, new_chunks = records.session_docs(record, 3)
    coll.delete_many({"sid": sid})
    coll.insert_many([rebuilt, *new_chunks])
    assert history(api, sid) == [*[(i, f"m{i}") for i in range(1, 6)], (13, "x")]


# fork


def test_fork_of_a_300_message_session_cut_inside_the_archive(api):
    sid = conversation(api, 300, context='{"cart": [1]}')
    ok(api.call("compact", {**IDS, "session_id": sid, "summary": "early talk", "options": {"upto_seq": 10}}))
    data = ok(fork(api, sid, at_seq=150))
    new = data["session_id"]
    assert new != sid and data["created"] and data["version"] == 1
    assert (data["forked_from"], data["forked_at_seq"], data["message_count"]) == (sid, 150, 140)
    assert (ctx(data), data["summary"], data["summary_upto"]) == ({"cart": [1]}, "early talk", 10)
    assert history(api, new) == [(i, f"m{i}") for i in range(11, 151)]
    more = ok(api.call("append_messages", {**IDS, "session_id": new, "role": "user", "content": "branch"}))
    assert [m["seq"] for m in more["messages"]] == [151]
    assert history(api, sid)[-1] == (300, "m300")  # the source is untouched
    source = ok(api.call("get", {**IDS, "session_id": sid}))
    assert (source["version"], source["forked_from"], source["forked_at_seq"]) == (302, "", 0)


def test_fork_copies_settings_unless_given_keeps_gaps_and_answers_a_repeat(api):
    sid = conversation(api, 6, options={"timeout": 600, "max_history": 50, "auto_clean": False})
    ok(rewind(api, sid, 3))
    ok(api.call("append_messages", {**IDS, "session_id": sid, "role": "user", "content": "x"}))
    data = ok(api.call("fork", {**IDS, "session_id": sid, "request_id": "f-1", "options": {"max_history": 2}}))
    assert (data["timeout"], data["max_history"], data["auto_clean"], data["forked_at_seq"]) == (600, 2, False, 7)
    assert history(api, data["session_id"]) == [(3, "m3"), (7, "x")]
    again = ok(api.call("fork", {**IDS, "session_id": sid, "request_id": "f-1", "options": {"max_history": 2}}))
    assert again["replayed"] and again["session_id"] == data["session_id"]
    named = ok(fork(api, sid, new_session_id="branch-b"))
    assert named["session_id"] == "branch-b" and named["max_history"] == 50
    assert ok(api.call("list", IDS))["sessions"].__len__() == 3


def test_fork_counts_toward_the_limit(api):
    sid = conversation(api, 2)
    for _ in range(9):
        ok(fork(api, sid))
    fail(fork(api, sid), "SESSION_LIMIT_EXCEEDED")
    assert len(ok(api.call("list", IDS))["sessions"]) == 10


def test_fork_reads_a_locked_closed_or_expired_source_without_changing_its_version(api, clock):
    sid = conversation(api, 2)
    ok(api.call("lock", {**IDS, "session_id": sid}))
    assert ok(fork(api, sid))["forked_from"] == sid  # no token needed
    before = ok(api.call("get", {**IDS, "session_id": sid}))["version"]
    clock.advance(100)
    ok(fork(api, sid))
    after = ok(api.call("get", {**IDS, "session_id": sid}))
    assert after["version"] == before and after["expires_in"] == 1800  # its timeout restarted
    closed = conversation(api, 1)
    ok(api.call("close", {**IDS, "session_id": closed}))
    assert ok(fork(api, closed))["status"] == "active"
    kept = conversation(api, 1, options={"auto_clean": False})
    clock.advance(1801)
    assert ok(fork(api, kept))["message_count"] == 1


@pytest.mark.parametrize(("at", "field"), [(9, "options.at_seq"), (2, "options.at_seq")])
def test_fork_past_the_newest_or_below_the_summary_is_refused(api, at, field):
    sid = conversation(api, 6)
    ok(api.call("compact", {**IDS, "session_id": sid, "summary": "s", "options": {"upto_seq": 3}}))
    fail(fork(api, sid, at_seq=at), "INVALID_ARGUMENT", field=field)
    assert len(ok(api.call("list", IDS))["sessions"]) == 1


def test_fork_of_another_users_session_is_not_found(api):
    sid = conversation(api, 1)
    fail(api.call("fork", {"user_id": "u2", "session_id": sid}), "SESSION_NOT_FOUND")


def test_a_repeat_of_a_fork_whose_session_was_deleted_makes_no_second_one(api):
    sid = conversation(api, 2)
    made = ok(api.call("fork", {**IDS, "session_id": sid, "request_id": "f-del"}))
    assert made["created"]
    ok(api.call("delete", {**IDS, "session_id": made["session_id"], "request_id": "d-1"}))
    again = ok(api.call("fork", {**IDS, "session_id": sid, "request_id": "f-del"}))
    assert (again["replayed"], again["status"], again["session_id"]) == (True, "deleted", made["session_id"])
    assert len(ok(api.call("list", IDS))["sessions"]) == 1
