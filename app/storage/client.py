"""The MongoDB client's whole life, the write concerns, and the one mapping of pymongo's errors. I/O (pymongo).

The client is created per process on first use (after gunicorn forks its workers: MongoClient is
not fork-safe) and closed at exit; indexes are ensured once per process, never per request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from pymongo import MongoClient, ReadPreference, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from app import errors
from app.settings import Settings

if TYPE_CHECKING:
    from app.storage.store import SessionStore

log = logging.getLogger(__name__)
TOO_LARGE = {10334, 17419, 17420}  # BSONObjectTooLarge, and an update or insert past 16 MiB


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


class Database:
    """Owns one MongoClient per process and the SessionStore on it."""

    def __init__(self, settings: Settings, clock: Callable[[], int]) -> None:
        self.settings = settings
        self.clock = clock
        self._pid = 0
        self._client: MongoClient | None = None
        self._store: SessionStore | None = None
        self._stores: dict[int, SessionStore] = {}  # by MAX_SESSIONS: a tenant's own limit, on the same client
        self._indexed = False
        self._lock = threading.Lock()

    def _connect(self) -> SessionStore:
        s = self.settings
        if not s.mongodb_uri:
            raise errors.StorageUnavailable()
        self._client = MongoClient(
            s.mongodb_uri,
            serverSelectionTimeoutMS=s.mongodb_server_selection_timeout_ms,
            connectTimeoutMS=s.mongodb_connect_timeout_ms,
            socketTimeoutMS=s.mongodb_socket_timeout_ms,
            readPreference="primary",  # a secondary in the URI would make reads stale
            maxIdleTimeMS=60_000,
            appname="coze-session-node",
            tz_aware=True,
        )
        self._pid = os.getpid()
        self._collections = Collections(self._client[s.mongodb_db][s.mongodb_collection], s.mongodb_wtimeout_ms)
        self._stores = {}
        return self._on_collections(s.max_sessions)

    def _on_collections(self, max_sessions: int) -> SessionStore:
        from app.storage.store import SessionStore

        s = self.settings
        return SessionStore(
            self._collections,
            self.clock,
            max_sessions=max_sessions,
            purge_grace_ms=s.purge_grace * 1000,
            retention_ms=s.expired_retention * 1000,
            default_timeout_ms=s.session_timeout * 1000,
            default_max_history=s.max_history,
            inline=s.history_inline,
        )

    def store(self, max_sessions: int | None = None) -> SessionStore:
        """This process's store (with another MAX_SESSIONS: a tenant's); indexes are ensured before the first use."""
        if self._store is None or self._pid != os.getpid():
            with self._lock:
                if self._store is None or self._pid != os.getpid():
                    self._store, self._indexed = self._connect(), False
        if not self._indexed:
            with self._lock:
                if not self._indexed:
                    self._store.ensure_indexes()
                    self._indexed = True
        if max_sessions is None or max_sessions == self._store.max_sessions:
            return self._store
        store = self._stores.get(max_sessions)
        if store is None:
            with self._lock:
                store = self._stores.setdefault(max_sessions, self._on_collections(max_sessions))
        return store

    def ping(self) -> None:
        self.store()
        with storage_errors(writing=False):
            self._client.admin.command("ping")

    def describe(self) -> str:
        """Where the sessions are, without credentials: hosts, database and collection."""
        s = self.settings
        hosts = s.mongodb_uri.partition("://")[2].rpartition("@")[2].partition("/")[0] or "(no MONGODB_URI)"
        return f"{hosts}/{s.mongodb_db}.{s.mongodb_collection}"

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = self._store = None
        self._stores = {}
