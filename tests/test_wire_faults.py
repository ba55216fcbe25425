"""The fault-injecting proxy itself: real pymongo, over real TCP, through WireProxy, to a real server.

First that untouched traffic arrives intact, then that each injected fault reaches pymongo the way
a failing replica set's reply would, and what pymongo makes of it.
"""

from __future__ import annotations

import datetime
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import bson
import pytest
from bson import Int64
from pymongo import ASCENDING, MongoClient, ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    WriteConcernError,
)

from tests.wire_faults import (
    CHECKSUM_PRESENT,
    OP_MSG,
    CommandFailure,
    Delay,
    DropConnection,
    Rule,
    WireProxy,
    WriteConcernFailure,
    WriteError,
    WriteErrors,
    command_named,
    writes_with_majority,
)

MAJORITY = WriteConcern(w="majority")


@pytest.fixture
def client(wire_proxy: WireProxy) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(wire_proxy.uri, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def direct(mongo_uri: str, db_name: str) -> Iterator[Collection]:
    """The test's collection, straight from the server (not through the proxy)."""
    client: MongoClient = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    yield client[db_name]["c"]
    client.close()


@pytest.fixture
def coll(client: MongoClient, db_name: str) -> Collection:
    """The test's collection through the proxy, writing with w: majority as the service does."""
    return client[db_name].get_collection("c", write_concern=MAJORITY)


def names(wire_proxy: WireProxy) -> list[str]:
    return [name for name, _ in wire_proxy.commands]


def test_plain_traffic_passes_through_unchanged(wire_proxy: WireProxy, coll: Collection, direct: Collection) -> None:
    coll.insert_one({"_id": "one", "n": 1})
    assert coll.find_one({"_id": "one"}) == {"_id": "one", "n": 1}
    after = coll.find_one_and_update({"_id": "one"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)
    assert after == {"_id": "one", "n": 2}

    many = [{"_id": i, "pad": "p" * (i % 50)} for i in range(5000)]
    assert len(coll.insert_many(many).inserted_ids) == 5000
    assert list(coll.find({"_id": {"$type": "int"}}).sort("_id", ASCENDING).batch_size(300)) == many  # getMores

    big = {"_id": "big", "text": "x" * (2 << 20), "bytes": bytes(range(256)) * 4096}
    coll.insert_one(big)
    assert coll.find_one({"_id": "big"}) == big
    assert direct.find_one({"_id": "big"}) == big

    coll.create_index([("n", ASCENDING)], name="by_n")
    [create] = [command for name, command in wire_proxy.commands if name == "createIndexes"]
    assert create["indexes"] == [{"key": {"n": 1}, "name": "by_n"}]
    # nx-27017 names the index its own way (idx_c_n), so look for it by key
    assert [("n", 1)] in [index["key"] for index in coll.index_information().values()]
    assert direct.count_documents({}) == 5002


def test_concurrent_clients_on_eight_threads_each_get_their_own_answers(
    wire_proxy: WireProxy, db_name: str, direct: Collection
) -> None:
    def work(worker: int) -> list[int]:
        with MongoClient(wire_proxy.uri, serverSelectionTimeoutMS=5000) as client:
            coll = client[db_name].get_collection("c", write_concern=MAJORITY)
            coll.insert_one({"_id": worker, "n": 0})
            seen = []
            for _ in range(50):
                doc = coll.find_one_and_update({"_id": worker}, {"$inc": {"n": 1}}, return_document=True)
                seen.append(doc["n"])
            return seen

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert results == [list(range(1, 51))] * 8
    assert sorted(direct.find(), key=lambda d: d["_id"]) == [{"_id": w, "n": 50} for w in range(8)]


def test_every_command_is_recorded_with_its_document_sequence_merged_in(
    wire_proxy: WireProxy, coll: Collection
) -> None:
    docs = [{"_id": 1, "at": datetime.datetime(2024, 1, 2, 3, 4, 5)}, {"_id": 2, "big": Int64(7)}]
    coll.insert_many(docs)
    inserts = [command for name, command in wire_proxy.commands if name == "insert"]
    assert len(inserts) == 1
    assert inserts[0]["documents"] == docs
    assert inserts[0]["writeConcern"] == {"w": "majority"}


def test_pymongo_sends_write_concern_on_each_write_only_when_the_collection_asks_for_it(
    wire_proxy: WireProxy, coll: Collection
) -> None:
    coll.insert_one({"_id": 1})
    coll.update_one({"_id": 1}, {"$set": {"a": 1}})
    coll.find_one_and_update({"_id": 1}, {"$set": {"a": 2}})
    coll.delete_many({"_id": 1})
    coll.with_options(write_concern=WriteConcern(w="majority", j=True)).insert_one({"_id": 2})  # the service's DURABLE
    coll.with_options(write_concern=WriteConcern(w=1)).insert_one({"_id": 3})  # the service's FAST
    coll.with_options(write_concern=WriteConcern()).insert_one({"_id": 4})
    coll.find_one({"_id": 2})

    majority = writes_with_majority()
    seen = [(name, c.get("writeConcern"), majority(c)) for name, c in wire_proxy.commands if name != "ismaster"]
    assert seen == [
        ("insert", {"w": "majority"}, True),
        ("update", {"w": "majority"}, True),
        ("findAndModify", {"w": "majority"}, True),
        ("delete", {"w": "majority"}, True),
        ("insert", {"w": "majority", "j": True}, True),
        ("insert", {"w": 1}, False),
        ("insert", None, False),
        ("find", None, False),
    ]


def test_a_write_concern_failure_on_find_and_modify_raises_but_the_update_is_applied(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    direct.insert_one({"_id": 1, "n": 0})
    wire_proxy.inject(
        Rule(lambda c: command_named("findAndModify")(c) and writes_with_majority()(c), WriteConcernFailure())
    )
    with pytest.raises(WriteConcernError) as raised:
        coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
    assert raised.value.code == 64
    assert raised.value.details["errInfo"] == {"wtimeout": True}
    assert direct.find_one({"_id": 1}) == {"_id": 1, "n": 1}


def test_insert_one_surfaces_a_write_concern_failure_as_write_concern_error(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    wire_proxy.inject(Rule(command_named("insert"), WriteConcernFailure()))
    with pytest.raises(WriteConcernError):
        coll.insert_one({"_id": 1})
    assert direct.find_one({"_id": 1}) == {"_id": 1}


def test_insert_many_with_a_write_concern_failure_raises_bulk_write_error_with_both_inserted(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    wire_proxy.inject(Rule(command_named("insert"), WriteConcernFailure()))
    with pytest.raises(BulkWriteError) as raised:
        coll.insert_many([{"_id": "a"}, {"_id": "b"}], ordered=True)
    details = raised.value.details
    assert details["nInserted"] == 2
    assert details["writeErrors"] == []
    assert [e["code"] for e in details["writeConcernErrors"]] == [64]
    assert direct.count_documents({}) == 2


def test_a_write_error_on_the_second_document_inserts_only_the_first_and_reports_both_errors(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    first = {
        "_id": "a",
        "when": datetime.datetime(2024, 5, 6, 7, 8, 9, 123000),
        "count": Int64(2**40),
        "b": b"\x00\xff",
    }
    wire_proxy.inject(
        Rule(command_named("insert"), WriteErrors((WriteError(1, 11000),), write_concern_error=WriteConcernFailure()))
    )
    with pytest.raises(BulkWriteError) as raised:
        coll.insert_many([first, {"_id": "b"}], ordered=True)
    details = raised.value.details
    assert details["nInserted"] == 1
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
    assert [e["code"] for e in details["writeConcernErrors"]] == [64]
    assert list(direct.find()) == [first]  # the rewritten request kept the first document byte for byte


def test_an_unordered_insert_applies_every_document_but_the_failing_one(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    wire_proxy.inject(Rule(command_named("insert"), WriteErrors((WriteError(1, 11000),))))
    with pytest.raises(BulkWriteError) as raised:
        coll.insert_many([{"_id": 0}, {"_id": 1}, {"_id": 2}], ordered=False)
    assert raised.value.details["nInserted"] == 2
    assert [(e["index"], e["op"]) for e in raised.value.details["writeErrors"]] == [(1, {"_id": 1})]
    assert sorted(d["_id"] for d in direct.find()) == [0, 2]


def test_write_errors_without_forwarding_apply_nothing(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    wire_proxy.inject(Rule(command_named("insert"), WriteErrors((WriteError(1),), forward=False)))
    with pytest.raises(BulkWriteError) as raised:
        coll.insert_many([{"_id": 0}, {"_id": 1}])
    assert raised.value.details["nInserted"] == 0
    assert [e["index"] for e in raised.value.details["writeErrors"]] == [1]
    assert direct.count_documents({}) == 0


def test_update_one_and_delete_many_with_a_write_concern_failure_raise_write_concern_error(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    direct.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "gone": True}, {"_id": 3, "gone": True}])
    wire_proxy.inject(Rule(command_named("update", "delete"), WriteConcernFailure()))
    with pytest.raises(WriteConcernError):
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    with pytest.raises(WriteConcernError):
        coll.delete_many({"gone": True})
    assert list(direct.find()) == [{"_id": 1, "n": 1}]


@pytest.mark.parametrize(
    ("code", "errmsg"),
    [(17419, "Resulting document after update is larger than 16777216"), (10334, "BSONObjectTooLarge")],
)
def test_a_command_failure_on_find_and_modify_raises_operation_failure_and_changes_nothing(
    wire_proxy: WireProxy, coll: Collection, direct: Collection, code: int, errmsg: str
) -> None:
    direct.insert_one({"_id": 1, "n": 0})
    wire_proxy.inject(Rule(command_named("findAndModify"), CommandFailure(code, errmsg)))
    with pytest.raises(OperationFailure) as raised:
        coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
    assert raised.value.code == code
    assert errmsg in str(raised.value)
    assert "findAndModify" in names(wire_proxy)
    assert direct.find_one({"_id": 1}) == {"_id": 1, "n": 0}


@pytest.mark.parametrize("code", [91, 11600])
def test_a_shutdown_reply_surfaces_as_not_primary_error_which_is_an_auto_reconnect(
    wire_proxy: WireProxy, coll: Collection, direct: Collection, code: int
) -> None:
    wire_proxy.inject(Rule(command_named("insert"), CommandFailure(code, "the server is shutting down"), times=1))
    with pytest.raises(NotPrimaryError) as raised:
        coll.insert_one({"_id": 1})
    assert isinstance(raised.value, AutoReconnect)
    assert raised.value.details["code"] == code
    assert direct.count_documents({}) == 0
    coll.insert_one({"_id": 2})  # the client rediscovers the server
    assert direct.count_documents({}) == 1


def test_a_dropped_connection_raises_auto_reconnect_and_the_next_call_works(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    wire_proxy.inject(Rule(command_named("insert"), DropConnection(), times=1))
    with pytest.raises(AutoReconnect):
        coll.insert_one({"_id": 1})
    assert direct.count_documents({}) == 0
    coll.insert_one({"_id": 2})
    assert direct.find_one() == {"_id": 2}


def test_a_read_dropped_once_is_retried_by_pymongo_even_on_a_standalone(
    wire_proxy: WireProxy, coll: Collection
) -> None:
    coll.insert_one({"_id": 1})
    once = wire_proxy.inject(Rule(command_named("find"), DropConnection(), times=1))
    assert coll.find_one({"_id": 1}) == {"_id": 1}
    assert once.fired == 1
    wire_proxy.inject(Rule(command_named("find"), DropConnection(), times=2))
    with pytest.raises(AutoReconnect):
        coll.find_one({"_id": 1})
    assert names(wire_proxy).count("find") == 4  # each find_one: the attempt and one retry


def test_a_times_one_rule_fires_once_and_clear_stops_the_rest(
    wire_proxy: WireProxy, coll: Collection, direct: Collection
) -> None:
    direct.insert_one({"_id": 1, "n": 0})
    once = wire_proxy.inject(Rule(command_named("update"), WriteConcernFailure(), times=1))
    with pytest.raises(WriteConcernError):
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    assert once.fired == 1

    always = wire_proxy.inject(Rule(command_named("update"), WriteConcernFailure()))
    for _ in range(2):
        with pytest.raises(WriteConcernError):
            coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    wire_proxy.clear()
    coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    assert always.fired == 2
    assert direct.find_one() == {"_id": 1, "n": 5}


def test_a_delay_holds_the_command_back_and_a_long_one_times_the_client_out(
    wire_proxy: WireProxy, coll: Collection, db_name: str
) -> None:
    coll.insert_one({"_id": 1})
    wire_proxy.inject(Rule(command_named("find"), Delay(0.3), times=1))
    started = time.monotonic()
    assert coll.find_one({"_id": 1}) == {"_id": 1}
    assert time.monotonic() - started >= 0.3

    wire_proxy.inject(Rule(command_named("insert"), Delay(2.0)))
    with MongoClient(wire_proxy.uri, socketTimeoutMS=300, serverSelectionTimeoutMS=5000) as impatient:
        started = time.monotonic()
        with pytest.raises(NetworkTimeout):
            impatient[db_name]["c"].insert_one({"_id": 2})
        assert time.monotonic() - started < 1.5


def test_a_request_with_a_checksum_is_still_understood_and_the_answer_carries_none(wire_proxy: WireProxy) -> None:
    # pymongo never sends checksums (and nx-27017 misreads them), so speak OP_MSG over a raw socket.
    body = bson.encode({"find": "c", "$db": "x"})
    payload = struct.pack("<I", CHECKSUM_PRESENT) + b"\x00" + body + b"\xde\xad\xbe\xef"  # the checksum is not checked
    wire_proxy.inject(Rule(command_named("find"), CommandFailure(91, "shutting down")))
    with socket.create_connection(("127.0.0.1", wire_proxy.port), timeout=5) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(payload), 77, 0, OP_MSG) + payload)
        with sock.makefile("rb") as stream:
            header = stream.read(16)
            assert len(header) == 16, "the wire_proxy hung up without answering"
            length, _, response_to, op_code = struct.unpack("<iiii", header)
            reply = stream.read(length - 16)
    flags = struct.unpack_from("<I", reply)[0]
    assert (response_to, op_code, flags, reply[4]) == (77, OP_MSG, 0, 0)
    assert bson.decode(reply[5:]) == {
        "ok": 0.0,
        "errmsg": "shutting down",
        "code": 91,
        "codeName": "ShutdownInProgress",
    }
    assert wire_proxy.commands == [("find", {"find": "c", "$db": "x"})]
