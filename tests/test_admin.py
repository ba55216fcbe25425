"""The admin CLI through its entry point (`flask admin ...` on the app), with its real exit codes.

Export then import into a fresh database must leave every answer as it was (archived messages,
expiry, locks, request ids and all); import twice changes nothing; wipe-user leaves no trace of
the user in any collection and every other user as it was.
"""

from __future__ import annotations

import dataclasses
import json
import re

import orjson
import pytest
from pymongo import MongoClient

from app import create_app
from app.storage import records
from app.storage.database import Database, IndexBuildFailed, epoch_ms
from app.storage.records import SESSION_FIELDS
from scripts.embedded import free_port
from tests.support import Api, fail, fresh_database, ok

USERS = ("u1", "u2", "u3")


def admin(app, *args: str):
    """Run `flask admin <args>` on `app`: click's result, with its exit code, stdout and stderr."""
    return app.test_cli_runner().invoke(args=["admin", *args])


def populate(api: Api, clock) -> tuple[list[tuple[str, str]], str]:
    """Sessions in every state the service keeps: (user, session id) of each, and the held lock's token."""
    made: list[tuple[str, str]] = []

    def new(user: str, sid: str, context: dict | None = None, **options) -> None:
        made.append((user, sid))
        clock.advance(1)  # list orders by creation time
        body = {"user_id": user, "session_id": sid, "context": json.dumps(context or {}), "options": options}
        ok(api.call("create", body))

    def say(user: str, sid: str, n: int, prefix: str = "m", request_ids: bool = False) -> None:
        for i in range(n):
            body = {"user_id": user, "session_id": sid, "role": "user", "content": f"{prefix}{i}"}
            ok(api.call("append_messages", body | ({"request_id": f"{sid}-{i}"} if request_ids else {})))

    new("u1", "long", {"a": {"b": 1}, "big": 12345678901234567890123, "a.b": "$x"})
    say("u1", "long", 20, request_ids=True)
    for i in range(3):  # merges onto the patch log
        ok(api.call("update", {"user_id": "u1", "session_id": "long", "context": json.dumps({f"k{i}": [i, None]})}))
    new("u1", "dropping", max_history=5)
    say("u1", "dropping", 12)
    new("u1", "cleared")
    say("u1", "cleared", 8)
    ok(api.call("clear_history", {"user_id": "u1", "session_id": "cleared"}))
    say("u1", "cleared", 2, prefix="after")
    new("u1", "closed")
    say("u1", "closed", 2)
    ok(api.call("close", {"user_id": "u1", "session_id": "closed"}))
    new("u1", "gone")
    ok(api.call("delete", {"user_id": "u1", "session_id": "gone", "request_id": "del-1"}))
    made.remove(("u1", "gone"))
    new("u1", "locked")
    new("u2", "kept", timeout=60, auto_clean=False)
    say("u2", "kept", 4)
    new("u2", "unicode", {"语言": "中文"})
    odd = [{"role": "assistant", "content": "你好\x00世界\x01 🎉\n第二行"}, {"role": "tool", "content": '{"a": 1}'}]
    ok(api.call("append_messages", {"user_id": "u2", "session_id": "unicode", "messages": odd}))
    new("u3", "purgeable", timeout=60)
    new("u3", "tiny", max_history=2)
    say("u3", "tiny", 7)
    clock.advance(120)  # kept and purgeable expire; the others (1800 s) go on
    token = ok(api.call("lock", {"user_id": "u1", "session_id": "locked", "options": {"lease": 300}}))["lock_token"]
    return made, token


def answers(api: Api, sessions: list[tuple[str, str]]) -> dict:
    """What every reading tool answers: list of each user (every page), get and history of each session (every page)."""
    out: dict = {}
    for user in USERS:
        out["list", user] = pages(api, "list", {"user_id": user, "options": {"limit": 3}})
    for user, sid in sessions:
        ids = {"user_id": user, "session_id": sid}
        out["get", user, sid] = api.call("get", ids)
        out["history", user, sid] = pages(api, "history", {**ids, "options": {"limit": 4}})
    return out


def pages(api: Api, op: str, body: dict) -> list[dict]:
    got, cursor = [], ""
    while True:
        page = api.call(op, {**body, "options": {**body["options"], "cursor": cursor}})
        got.append(page)
        cursor = page["next_cursor"]
        if not cursor:
            return got


def documents(uri: str, db: str) -> dict[str, list[dict]]:
    """Every document of every collection of a database, in _id order."""
    client = MongoClient(uri)
    try:
        return {name: list(client[db][name].find().sort("_id", 1)) for name in client[db].list_collection_names()}
    finally:
        client.close()


def stored(uri: str, app) -> list[dict]:
    """Sessions, tombstones and receipts as stored: every field but how the messages are laid out in chunks."""
    kept = {field for field, _ in SESSION_FIELDS.values()} | {"_id", "k", "uid", "sid", "slot", "pa", "pms"}
    docs = documents(uri, app.extensions["database"].settings.mongodb_db)["sessions"]
    return [{f: v for f, v in d.items() if f in kept} for d in docs if d["k"] != "m"]


@pytest.fixture
def target(mongo_uri, settings, make_app):
    """The service on a fresh database of its own (same clock): where exports are imported."""
    with fresh_database(mongo_uri) as name:
        yield make_app(dataclasses.replace(settings, mongodb_db=name))


def test_export_then_import_into_a_fresh_database_answers_every_session_the_same(
    api, app, clock, target, tmp_path, mongo_uri
):
    sessions, token = populate(api, clock)
    backup = tmp_path / "backup.jsonl"
    exported = admin(app, "export", "--out", str(backup))
    assert exported.exit_code == 0, exported.output
    assert "sessions: 9, tombstones: 8, delete receipts: 1" in exported.stderr
    imported = admin(target, "import", str(backup))
    assert imported.exit_code == 0, imported.output
    assert "imported in" in imported.stdout and "sessions: 9, tombstones: 8, delete receipts: 1" in imported.stdout
    assert stored(mongo_uri, target) == stored(mongo_uri, app)  # ids, versions, times, expiry, slots, as they were
    copy = Api(target.test_client())
    assert answers(copy, sessions) == answers(api, sessions)
    for side in (api, copy):  # and from here on, both go on alike
        long = {"user_id": "u1", "session_id": "long"}
        assert [
            m["seq"] for m in ok(side.call("append_messages", {**long, "role": "user", "content": "next"}))["messages"]
        ] == [21]
        again = ok(side.call("append_messages", {**long, "role": "user", "content": "m3", "request_id": "long-3"}))
        assert again["replayed"] and [m["seq"] for m in again["messages"]] == [4]
        assert ok(side.call("delete", {"user_id": "u1", "session_id": "gone", "request_id": "del-1"}))["replayed"]
        locked = {"user_id": "u1", "session_id": "locked", "context": "{}"}
        fail(side.call("update", locked), "SESSION_LOCKED")
        assert ok(side.call("update", {**locked, "lock_token": token}))["version"] == 2
        assert ok(side.call("get", {"user_id": "u2", "session_id": "kept", "options": {"resume": True}}))["resumed"]
    assert answers(copy, sessions) == answers(api, sessions)


def test_a_compacted_sessions_summary_and_kept_messages_survive_export_and_import(
    api, app, target, tmp_path, mongo_uri
):
    body = {"user_id": "u9", "session_id": "summed"}
    ok(api.call("create", body))
    for i in range(10):
        ok(api.call("append_messages", {**body, "role": "user", "content": f"m{i}"}))
    ok(api.call("compact", {**body, "summary": "the first four", "options": {"upto_seq": 4}}))
    backup = tmp_path / "backup.jsonl"
    assert admin(app, "export", "--user", "u9", "--out", str(backup)).exit_code == 0
    assert admin(target, "import", str(backup)).exit_code == 0
    assert stored(mongo_uri, target) == stored(mongo_uri, app)
    read = {**body, "options": {"format": "transcript", "limit": 100}}
    copy = Api(target.test_client())
    assert ok(copy.call("history", read)) == ok(api.call("history", read))
    assert ok(copy.call("history", read))["transcript"].startswith("summary: the first four\nuser: m4")


def test_importing_twice_changes_nothing(api, app, clock, target, tmp_path, mongo_uri):
    populate(api, clock)
    backup = tmp_path / "backup.jsonl"
    assert admin(app, "export", "--out", str(backup)).exit_code == 0
    assert admin(target, "import", str(backup)).exit_code == 0
    db = target.extensions["database"].settings.mongodb_db
    before = documents(mongo_uri, db)
    again = admin(target, "import", str(backup))
    assert again.exit_code == 0, again.output
    assert re.search(r"^imported in [0-9.]+ s: sessions: 0, tombstones: 0, delete receipts: 0$", again.stdout, re.M)
    assert "left alone: sessions: 9, tombstones: 8, delete receipts: 1" in again.stdout
    assert documents(mongo_uri, db) == before


def test_export_with_user_writes_that_users_records_only(api, app, clock, tmp_path):
    populate(api, clock)
    out = tmp_path / "u2.jsonl"
    assert admin(app, "export", "--user", "u2", "--out", str(out)).exit_code == 0
    header, *records, end = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert (header["format"], header["version"], header["user"]) == ("coze-session-node", 1, "u2")
    assert {r["user_id"] for r in records} == {"u2"}
    assert sorted((r["kind"], r["session_id"]) for r in records) == [
        ("session", "kept"),
        ("session", "unicode"),
        ("tombstone", "unicode"),  # kept has auto_clean false: never purged, so no tombstone
    ]
    assert end == {"kind": "end", "records": {"session": 2, "tombstone": 1, "receipt": 0}}
    unicode = next(r for r in records if r["session_id"] == "unicode" and r["kind"] == "session")
    assert [m["content"] for m in unicode["messages"]] == ["你好\x00世界\x01 🎉\n第二行", '{"a": 1}']


def test_after_wipe_user_no_document_in_any_collection_holds_that_user_id_and_the_others_are_untouched(
    api, app, clock, mongo_uri, collection
):
    victim = "victim-7c1e@example.com"
    populate(api, clock)
    sid = ok(api.call("create", {"user_id": victim, "options": {"max_history": 50}}))["session_id"]
    for i in range(10):  # archive chunks
        ok(api.call("append_messages", {"user_id": victim, "session_id": sid, "role": "user", "content": str(i)}))
    ok(api.call("create", {"user_id": victim, "session_id": "second"}))
    ok(api.call("delete", {"user_id": victim, "session_id": "second", "request_id": "erase-me"}))  # a receipt
    later = {"_id": "later-kind", "k": "z", "uid": victim, "slot": "later-kind"}  # what a later issue may add
    collection.insert_one(later)
    db = app.extensions["database"].settings.mongodb_db
    before = documents(mongo_uri, db)
    others = {name: [d for d in docs if d["uid"] != victim] for name, docs in before.items()}
    wiped = admin(app, "wipe-user", victim)
    assert wiped.exit_code == 0, wiped.output
    assert wiped.stdout == (
        f"removed 6 documents of user {victim!r} of tenant 'default' "
        "(sessions: 1, tombstones: 1, archive chunks: 2, delete receipts: 1, other: 1)\n"
    )
    after = documents(mongo_uri, db)
    for name, docs in after.items():
        assert not [d for d in docs if victim in repr(d)], name
    assert after == others


def test_wipe_user_of_an_unknown_user_prints_zeros_and_exits_0(api, app):
    api.create("u1")
    wiped = admin(app, "wipe-user", "nobody")
    assert wiped.exit_code == 0
    assert wiped.stdout == (
        "removed 0 documents of user 'nobody' of tenant 'default' "
        "(sessions: 0, tombstones: 0, archive chunks: 0, delete receipts: 0, other: 0)\n"
    )
    assert ok(api.call("list", {"user_id": "u1"}))["sessions"]


def test_a_failed_import_line_is_reported_with_its_number_and_the_import_exits_1(api, app, clock, target, tmp_path):
    populate(api, clock)
    good = tmp_path / "good.jsonl"
    assert admin(app, "export", "--user", "u3", "--out", str(good)).exit_code == 0
    header, first, *rest = good.read_bytes().splitlines()
    broken = dict(orjson.loads(first))
    del broken["version"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join([header, first, b"{not json", orjson.dumps(broken), *rest]) + b"\n")
    result = admin(target, "import", str(bad))
    assert result.exit_code == 1
    assert "line 3: not a JSON object" in result.stderr
    assert "line 4: version is missing" in result.stderr
    assert "2 lines not imported" in result.stderr
    assert "sessions: 2, tombstones: 2" in result.stdout  # the good lines went in
    truncated = tmp_path / "cut.jsonl"
    truncated.write_bytes(b"\n".join([header, first]) + b"\n")
    cut = admin(target, "import", str(truncated))
    assert cut.exit_code == 1 and "no end record" in cut.stderr
    other = tmp_path / "other.jsonl"
    other.write_bytes(b'{"format": "something else"}\n')
    assert admin(target, "import", str(other)).exit_code == 1


def test_a_different_session_under_the_same_id_is_refused_unless_replace(api, app, clock, target, tmp_path):
    populate(api, clock)
    backup = tmp_path / "backup.jsonl"
    assert admin(app, "export", "--user", "u1", "--out", str(backup)).exit_code == 0
    copy = Api(target.test_client())
    ok(copy.call("create", {"user_id": "u1", "session_id": "long", "context": '{"mine": true}'}))
    refused = admin(target, "import", str(backup))
    assert refused.exit_code == 1
    line = next(n for n, raw in enumerate(backup.read_bytes().splitlines(), 1) if b'"session_id":"long"' in raw)
    assert f"line {line}: another state of this session is stored (--replace overwrites it)" in refused.stderr
    assert ok(copy.call("get", {"user_id": "u1", "session_id": "long"}))["context"] == '{"mine":true}'
    replaced = admin(target, "import", "--replace", str(backup))
    assert replaced.exit_code == 0, replaced.output
    long = {"user_id": "u1", "session_id": "long", "options": {"limit": 50}}
    assert copy.call("history", long) == api.call("history", long)


def test_stats_counts_documents_sessions_by_status_users_and_messages(api, app, clock):
    populate(api, clock)
    text = admin(app, "stats")
    assert text.exit_code == 0
    assert "sessions: 9 (6 active, 2 expired, 1 closed, 1 locked now, 1 never purged (auto_clean false))" in text.stdout
    numbers = json.loads(admin(app, "stats", "--json").stdout)
    assert numbers["documents"]["sessions"] == 9 and numbers["documents"]["delete receipts"] == 1
    assert numbers["users"] == {"total": 3, "at the session limit": 0}
    assert numbers["messages"]["visible"] == 20 + 5 + 2 + 2 + 4 + 2 + 2


@pytest.mark.parametrize(
    "args",
    [["import"], ["export", "--bogus"], ["wipe-user"], ["wipe-user", ""], ["import", "/no/such/file"], ["nothing"]],
)
def test_bad_usage_exits_2(app, args):
    result = admin(app, *args)
    assert result.exit_code == 2, result.output


def test_without_a_database_the_cli_says_how_to_get_one_and_exits_1(settings, make_app):
    result = admin(make_app(dataclasses.replace(settings, mongodb_uri="")), "stats")
    assert result.exit_code == 1
    assert "set MONGODB_URI, or run `session-admin`" in result.stderr


def test_an_imported_session_whose_slot_is_taken_here_gets_a_free_one_and_none_free_is_refused(
    api, app, clock, target, tmp_path
):
    populate(api, clock)  # u1 has four active sessions (each holds a slot) and a closed one (none)
    backup = tmp_path / "u1.jsonl"
    assert admin(app, "export", "--user", "u1", "--out", str(backup)).exit_code == 0
    records = [orjson.loads(line) for line in backup.read_bytes().splitlines()[1:-1]]
    theirs = {r["slot"] for r in records if r["kind"] == "session"} - {None}
    copy = Api(target.test_client())
    for i in range(10):  # every slot of u1 taken here...
        copy.create("u1", session_id=f"here-{i}")
    slots = {d["sid"]: d["slot"] for d in target.extensions["database"].store().collections.read.find({"k": "s"})}
    free = next(sid for sid, slot in slots.items() if slot not in theirs)
    ok(copy.call("close", {"user_id": "u1", "session_id": free}))  # ...but one none of theirs holds
    result = admin(target, "import", str(backup))
    assert result.exit_code == 1
    assert result.stderr.count("its user already holds all 10 active slots (MAX_SESSIONS) here") == 3
    listed = ok(copy.call("list", {"user_id": "u1", "options": {"limit": 50}}))["sessions"]
    imported = {s["session_id"] for s in listed} - {f"here-{i}" for i in range(10)}
    assert "closed" in imported and len(imported) == 2  # the closed one, and one that took the free slot
    fail(copy.call("create", {"user_id": "u1"}), "SESSION_LIMIT_EXCEEDED")  # the limit holds after the import


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": "3"}, "version must be int"),
        ({"auto_clean": 1}, "auto_clean must be bool"),
        ({"request_ids": "r1"}, "request_ids must be list"),
        ({"status": "expired"}, "status must be active or closed"),
        ({"context": "[1]"}, "context must be the JSON text of an object"),
        ({"session_id": "a b"}, "session_id is missing or not a valid id"),
        ({"appended": 3}, "messages holds 2, but appended and max_history make 3 visible"),
        ({"last_seq": 9}, "messages[0].seq must continue to last_seq without a gap"),
        ({"slot": -1}, "slot must be a non-negative integer"),
    ],
)
def test_a_record_that_cannot_be_imported_exactly_is_refused_with_the_reason(change, reason):
    record = {
        "kind": "session", "user_id": "u", "session_id": "s", "incarnation": "ab", "status": "active",
        "version": 3, "created": 1, "updated": 2, "expires": 3, "timeout_ms": 1000, "max_history": 10,
        "auto_clean": True, "appended": 2, "last_seq": 2, "chunk_size": 3, "context": "{}", "slot": 0, "purge": 4,
        "messages": [
            {"seq": 1, "role": "user", "content": "a", "ts": 1, "request_id": ""},
            {"seq": 2, "role": "assistant", "content": "b", "ts": 2, "request_id": "r"},
        ],
    }  # fmt: skip
    assert records.check(dict(record)) == record
    with pytest.raises(records.BadRecord, match=re.escape(reason)):
        records.check({**record, **change})


def test_a_session_missing_an_archive_chunk_is_named_and_the_export_exits_1_with_the_rest_written(
    api, app, clock, collection, tmp_path
):
    populate(api, clock)
    collection.delete_one({"uid": "u1", "sid": "long", "k": "m"})  # a chunk lost
    out = tmp_path / "backup.jsonl"
    result = admin(app, "export", "--out", str(out))
    assert result.exit_code == 1
    assert "not exported: session 'long' of user 'u1'" in result.stderr
    assert "1 sessions could not be read whole" in result.stderr
    exported = [orjson.loads(line) for line in out.read_bytes().splitlines()[1:-1]]
    assert sorted(r["session_id"] for r in exported if r["kind"] == "session") == sorted(
        ["dropping", "cleared", "closed", "locked", "kept", "unicode", "purgeable", "tiny"]
    )


def test_a_session_whose_chunks_moved_after_it_was_read_is_read_again(api, app, clock):
    populate(api, clock)
    store = app.extensions["database"].store()
    doc = store.collections.read.find_one({"uid": "u1", "sid": "long", "k": "s"})
    transfer = store.transfer()
    (record,) = transfer._records([doc], wanted=[])  # as if its chunks were gone when the batch read them
    assert [m["seq"] for m in record["messages"]] == list(range(1, 21)) and not transfer.unreadable


def test_ensure_indexes_builds_the_indexes_and_a_request_never_does(settings, clock):
    app = create_app(dataclasses.replace(settings, mongodb_collection="fresh"), clock)  # not make_app: it builds them
    try:
        Api(app.test_client()).create("u1", session_id="s")  # served without them: no request builds them
        coll = app.extensions["database"].store().collections.read
        assert list(coll.index_information()) == ["_id_"]
        result = admin(app, "ensure-indexes")
        assert result.exit_code == 0, result.output
        assert "indexes ensured on" in result.output and result.output.rstrip().endswith(".fresh")
        keys = {tuple(k for k, _ in ix["key"]) for ix in coll.index_information().values()}
        assert {("uid", "slot"), ("uid", "k", "c", "sid"), ("pa",)} <= keys
    finally:
        app.extensions["database"].close()


def test_ensure_indexes_without_a_database_fails_naming_the_cause(make_app, settings):
    result = admin(make_app(dataclasses.replace(settings, mongodb_uri="")), "ensure-indexes")
    assert result.exit_code == 1
    assert "could not build the indexes" in result.stderr and "MONGODB_URI is not set" in result.stderr


def test_an_unreachable_database_stops_the_index_build_with_the_cause(settings):
    dead = dataclasses.replace(
        settings, mongodb_uri=f"mongodb://127.0.0.1:{free_port()}", mongodb_server_selection_timeout_ms=300
    )
    database = Database(dead, epoch_ms)
    try:
        with pytest.raises(
            IndexBuildFailed, match=r"could not build the indexes of 127\.0\.0\.1:\d+/.*STORAGE_UNAVAILABLE"
        ):
            database.ensure_indexes()
    finally:
        database.close()
