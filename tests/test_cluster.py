"""What a replica set and a sharded cluster demand, proved by what the service sends (command monitoring).

nx-27017 is a standalone that ignores write concerns, so these tests read every command off the
wire: each must be targeted by the shard key (uid) and each write must carry its request's
write concern, through every operation and every path of the storage (archive, purge dates,
slots, compare-and-set, expiry).
"""

from __future__ import annotations

import json

import pytest
from pymongo import MongoClient, ReadPreference

from app import errors
from app.core import Sessions
from app.settings import Settings
from app.storage.database import Database
from app.storage.updates import PATCH_LOG_BYTES
from app.tenants import DEFAULT, user_key
from tests.support import CommandLog, open_store, run
from tests.test_store import LIMITS

WRITES = {"findAndModify", "insert", "update", "delete"}
READS = {"get", "history", "list"}
DURABLE = {"w": "majority", "j": True, "wtimeout": 5000}
FAST = {"w": 1}


def filters(command: dict) -> list[dict]:
    """The filters of a data command (an insert's documents stand for its filters)."""
    name = next(iter(command))
    if name == "find":
        return [command["filter"]]
    if name == "findAndModify":
        return [command["query"]]
    if name == "update":
        return [u["q"] for u in command["updates"]]
    if name == "delete":
        return [d["q"] for d in command["deletes"]]
    if name == "insert":
        return list(command["documents"])
    raise AssertionError(f"unexpected data command {name}")


class Workload:
    """Runs operations on a store of its own and checks the commands each one sent."""

    def __init__(self, core: Sessions, log: CommandLog) -> None:
        self.core, self.log = core, log
        self.tenant = core.tenant
        self.seen: set[str] = set()
        self.codes: set[str] = set()
        self.sent = 0

    def __call__(self, op: str, user_id: str = "u1", **body) -> dict:
        self.log.clear()
        try:
            out = run(self.core, op, user_id=user_id, **body)
        except errors.ServiceError as exc:  # provoked on purpose: the commands that found out count too
            out = {"error_code": exc.code, "next_cursor": ""}
        self.codes.add(out["error_code"])
        # a write waits for a majority unless persist is false; a read's timeout restart never does
        persist = body.get("options", {}).get("persist", op not in READS)
        for command in self.log.commands:
            name = next(iter(command))
            self.seen.add(name)
            self.sent += 1
            for where in filters(command):  # the stored user key: the tenant with the user id
                assert type(where.get("uid")) is str and where["uid"] == user_key(self.tenant, user_id), (op, command)
            if name in WRITES:
                assert command.get("writeConcern") == (DURABLE if persist else FAST), (op, persist, command)
        return out


@pytest.fixture(params=[DEFAULT, "acme"])
def workload(request, mongo_uri, db_name, clock):
    log = CommandLog()
    store, client = open_store(mongo_uri, db_name, clock, log, chunk_size=4)
    yield Workload(Sessions(store, LIMITS, tenant=request.param), log)
    client.close()


@pytest.mark.parametrize("persist", [True, False])
def test_every_command_of_every_operation_is_targeted_by_uid_and_carries_its_requests_write_concern(
    workload, clock, persist
):
    p = {"persist": persist}
    big = json.dumps({"pad": "x" * (PATCH_LOG_BYTES + 1)})
    generated = workload("create", options=p)["session_id"]
    workload("create", session_id="s", context='{"a":1}', options=p)
    workload("create", session_id="s", options=p)  # exists: answered as it is
    for i in range(9):  # onto the patch log, folded on the 8th
        workload("update", session_id="s", context=json.dumps({f"k{i}": i}), options=p)
    workload("update", session_id="s", context=big, options={**p, "merge": False})
    workload("update", session_id="s", context='{"b":2}', options=p)  # a large context: compare-and-set
    workload("update", session_id="s", context='{"c":3}', options={**p, "expected_version": 1})  # conflict
    for i in range(20):  # past the archive threshold, more than once
        workload("append_messages", session_id="s", role="user", content=f"m{i}", options=p)
    cursor = ""
    while True:  # deep history: pages reaching into the archive
        page = workload("history", session_id="s", options={"limit": 3, **({"cursor": cursor} if cursor else {})})
        cursor = page["next_cursor"]
        if not cursor:
            break
    workload("list", options={"limit": 1})
    workload("list", options={"limit": 1, "cursor": workload("list", options={"limit": 1})["next_cursor"]})
    workload("touch", session_id="s", options={**p, "timeout": 600})
    clock.advance(590)  # close to the purge date: the next sliding write moves it and the tombstone's
    workload("get", session_id="s")
    workload("clear_history", session_id="s", options=p)
    workload("close", session_id=generated, options=p)
    workload("delete", session_id="s", options=p)
    workload("get", session_id="s")  # not found: why the write missed is read too
    workload("create", session_id="short", options={**p, "timeout": 60, "auto_clean": False})
    clock.advance(61)
    workload("get", session_id="short")  # expired
    for i in range(10):  # every slot taken, then reclaimed from the expired session by touch and create
        workload("create", session_id=f"full{i}", options={**p, "timeout": 60})
    clock.advance(61)
    workload("touch", session_id="short", options=p)  # revived: its slot was free
    workload("create", session_id="short", options=p)  # exists again
    workload("create", options=p)  # the user's slots are all expired but one: one is taken back
    workload("create", session_id="full0", options=p)  # an expired id: started afresh
    assert {"find", "findAndModify", "insert", "update", "delete"} <= workload.seen
    assert workload.codes == {"", "VERSION_CONFLICT", "SESSION_NOT_FOUND", "SESSION_EXPIRED"}
    assert workload.sent > 100


def test_reads_go_to_the_primary_whatever_the_connection_string_says(mongo_uri, db_name, clock):
    settings = Settings(env="test", mongodb_uri=mongo_uri + "/?readPreference=secondaryPreferred", mongodb_db=db_name)
    database = Database(settings, clock)
    try:
        collections = database.store().collections
        assert collections.read.read_preference == ReadPreference.PRIMARY
        assert collections.durable.read_preference == ReadPreference.PRIMARY
        assert database._client.read_preference == ReadPreference.PRIMARY
    finally:
        database.close()


def test_the_client_keeps_server_selection_apart_from_the_socket_timeout(mongo_uri, db_name, clock):
    settings = Settings(
        env="test",
        mongodb_uri=mongo_uri,
        mongodb_db=db_name,
        mongodb_server_selection_timeout_ms=12_000,
        mongodb_socket_timeout_ms=9_000,
        mongodb_wtimeout_ms=4_000,
    )
    database = Database(settings, clock)
    try:
        store = database.store()
        client: MongoClient = database._client
        assert client.options.server_selection_timeout == 12
        assert client.options.pool_options.socket_timeout == 9
        assert store.collections.durable.write_concern.document == {"w": "majority", "j": True, "wtimeout": 4000}
        assert store.collections.fast.write_concern.document == {"w": 1}
    finally:
        database.close()
