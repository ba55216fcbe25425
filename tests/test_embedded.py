"""The embedded nx-27017 answers every query the service sends from an index (scripts/nx_patch.py).

Checked on neosqlite itself, in this process: the SQL it runs for each query, and SQLite's plan for
that SQL. Nothing here is timed (`make bench` measures speed); a plan that scans the whole table is
what made `list` and the TTL purge grow with the number of stored sessions.
"""

from __future__ import annotations

import datetime as dt

import pytest
from neosqlite import Connection

from scripts import nx_patch
from scripts.nx_server import throttle

NOW = 1_800_000_000_000
USER = "user-7"


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    assert throttle() is True  # False would mean the pinned neosqlite changed and every read purges again
    assert nx_patch.apply() == ["eq-index-guard", "fallback-prefilter", "ttl-index+ttl-batched"]
    conn = Connection(str(tmp_path_factory.mktemp("nx") / "sessions.db"))
    coll = conn["sessions"]
    coll.create_index([("uid", 1), ("slot", 1)], unique=True)
    coll.create_index([("uid", 1), ("k", 1), ("c", -1), ("sid", -1)])
    coll.create_index([("pa", 1)], expireAfterSeconds=0)
    purge_at = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    for u in range(40):
        for s in range(3):
            key = f"s{s}@user-{u}"
            common = {"uid": f"user-{u}", "sid": f"s{s}", "pa": purge_at}
            coll.insert_one({"_id": key, "k": "s", "slot": s, "c": NOW + s, "st": "active", "exp": NOW + 60, **common})
            coll.insert_one({"_id": "~" + key, "k": "t", "slot": "~" + key, **common})
            coll.insert_one({"_id": f"{key}#n#1", "k": "m", "slot": f"{key}#n#1", "seq": 1, **common})
    yield conn, coll
    conn.close()


def plans(conn: Connection, run) -> list[str]:
    """SQLite's plan for each data statement neosqlite runs for `run()`."""
    statements: list[str] = []
    conn.db.set_trace_callback(statements.append)
    try:
        run()
    finally:
        conn.db.set_trace_callback(None)
    data = [s for s in statements if s.startswith(("SELECT id", "DELETE", "UPDATE")) and "sqlite_master" not in s]
    assert data, statements
    return [" | ".join(row[-1] for row in conn.db.execute("EXPLAIN QUERY PLAN " + s)) for s in data]


QUERIES = {
    "list": lambda c: list(c.find({"uid": USER, "k": "s"}, {"msgs": 0}).sort([("c", -1), ("sid", -1)]).limit(21)),
    "list by status": lambda c: list(c.find({"uid": USER, "k": "s", "st": "active", "exp": {"$gt": NOW}}).limit(21)),
    "list, a later page": lambda c: list(
        c.find({"uid": USER, "k": "s", "$or": [{"c": {"$lt": NOW + 2}}, {"c": NOW + 2, "sid": {"$lt": "s2"}}]})
        .sort([("c", -1), ("sid", -1)])
        .limit(21)
    ),
    "slot holders": lambda c: list(c.find({"uid": USER, "slot": {"$gte": 0, "$lt": 10}}, {"slot": 1, "exp": 1})),
    "a session by id": lambda c: c.find_one({"_id": f"s1@{USER}", "uid": USER}),
    "a sliding write": lambda c: c.find_one_and_update(
        {"_id": f"s1@{USER}", "uid": USER, "exp": {"$gt": NOW}}, {"$set": {"exp": NOW + 90}}
    ),
    "chunks by id": lambda c: c.update_many({"_id": {"$in": [f"s1@{USER}#n#1"]}, "uid": USER}, {"$set": {"pms": 1}}),
    "cleared chunks by key": lambda c: c.delete_many({"uid": USER, "sid": "s2", "k": "m", "seq": {"$lte": 0}}),
    "delete by key": lambda c: c.delete_many({"uid": USER, "sid": "nothing-here"}),
    "the TTL purge": lambda c: c.purge_expired(),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_every_query_the_service_sends_is_answered_from_an_index_not_a_table_scan(sessions, name):
    conn, coll = sessions
    for plan in plans(conn, lambda: QUERIES[name](coll)):
        assert "SCAN sessions" not in plan and "USING" in plan, plan
