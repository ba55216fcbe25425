"""What the storage takes from pymongo: the write-concern collections and the one mapping of its errors. I/O.

Every pymongo error the storage can meet is interpreted here, and only here: `storage_errors` maps
them to the service's errors, and the named helpers answer the outcomes a caller branches on (a
duplicate key, the documents a duplicate kept out of a bulk insert).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from pymongo import ReadPreference, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from app import errors

__all__ = ["Collections", "DuplicateKeyError", "insert_new", "insert_ordered", "is_id_conflict", "storage_errors"]

log = logging.getLogger(__name__)
TOO_LARGE = {10334, 17419, 17420}  # BSONObjectTooLarge, and an update or insert past 16 MiB
DUPLICATE_KEY = 11000


@contextlib.contextmanager
def storage_errors(*, writing: bool = True) -> Iterator[None]:
    """Map pymongo's errors to the service's, in one place.

    A write whose answer was lost (a write-concern error, a connection dropped after sending) may
    have been applied: it is a 503 that says so, never a success and never "already exists".
    """
    try:
        yield
    except ServerSelectionTimeoutError:
        log.warning("storage unavailable: no server selected")
        raise errors.StorageUnavailable() from None
    except (ConnectionFailure, WriteConcernError) as exc:
        log.warning("storage unavailable: %s", type(exc).__name__)
        raise errors.StorageUnavailable(unknown_outcome=writing) from None
    except BulkWriteError as exc:
        if exc.details.get("writeConcernErrors"):
            log.warning("storage unavailable: write concern error on a bulk write")
            raise errors.StorageUnavailable(unknown_outcome=True) from None
        if any(e.get("code") in TOO_LARGE for e in exc.details.get("writeErrors", [])):
            raise errors.HistoryLimit(document=True) from None
        log.exception("storage error")
        raise errors.Internal() from None
    except DocumentTooLarge:
        raise errors.HistoryLimit(document=True) from None
    except OperationFailure as exc:
        if exc.code in TOO_LARGE:
            raise errors.HistoryLimit(document=True) from None
        log.exception("storage error")
        raise errors.Internal() from None
    except PyMongoError:
        log.exception("storage error")
        raise errors.Internal() from None


def is_id_conflict(write_error: dict) -> bool:
    """Whether a duplicate-key error is on _id (MongoDB names the key; nx-27017 the column)."""
    pattern = write_error.get("keyPattern")
    if pattern:
        return "_id" in pattern
    message = str(write_error.get("errmsg", ""))
    return message.rstrip().endswith("._id") or " index: _id_ " in message


def insert_new(coll: Collection, docs: list[dict]) -> list[int]:
    """Insert `docs` unordered: the indexes of those a duplicate key kept out (already there).

    Any other write error, or a write-concern error, is raised (for `storage_errors` to map).
    """
    try:
        coll.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        write_errors = exc.details.get("writeErrors", [])
        if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in write_errors):
            raise
        return [e["index"] for e in write_errors]
    return []


def insert_ordered(coll: Collection, docs: list[dict]) -> tuple[int, dict | None]:
    """Insert `docs` in order, stopping at the first duplicate key: (how many went in, that write error or None).

    Any other write error, or a write-concern error (inserted, but its durability unknown), is
    raised (for `storage_errors` to map).
    """
    try:
        coll.insert_many(docs, ordered=True)
    except BulkWriteError as exc:
        first = (exc.details.get("writeErrors") or [{}])[0]
        if exc.details.get("writeConcernErrors") or first.get("code") != DUPLICATE_KEY:
            raise
        return exc.details.get("nInserted", 0), first
    return len(docs), None


class Collections:
    """One collection as read (primary) and as written with each write concern."""

    def __init__(self, collection: Collection, wtimeout_ms: int) -> None:
        self.read = collection.with_options(read_preference=ReadPreference.PRIMARY)
        # persist: true waits for a journaled majority, but never past wtimeout (a lost majority
        # would otherwise hold the request until the socket times out).
        self.durable = self.read.with_options(write_concern=WriteConcern(w="majority", j=True, wtimeout=wtimeout_ms))
        self.fast = self.read.with_options(write_concern=WriteConcern(w=1))

    def write(self, persist: bool) -> Collection:
        return self.durable if persist else self.fast
