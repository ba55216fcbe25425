"""The database's whole life in one process: its MongoClient, its SessionStore, its indexes. I/O (pymongo).

The client is created per process on first use (after gunicorn forks its workers: MongoClient is
not fork-safe) and closed at exit. Indexes are built at start-up (gunicorn's master, with a client
of its own that it closes before the fork) and by `flask admin ensure-indexes`, never by a request.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from pymongo import MongoClient

from app import errors
from app.settings import Settings
from app.storage import layout
from app.storage.mongo import Collections, storage_errors
from app.storage.outbox import Outbox
from app.storage.store import SessionStore


def events_collection(settings: Settings) -> str:
    """The deliveries of lifecycle events: beside the sessions, `<MONGODB_COLLECTION>_events`."""
    return settings.mongodb_collection + "_events"


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def build_indexes(collections: Collections) -> None:
    """Create the indexes layout.INDEXES lists (idempotent)."""
    with storage_errors(writing=False):
        for keys, options in layout.INDEXES:
            collections.read.create_index(keys, **options)


class IndexBuildFailed(RuntimeError):
    """The indexes could not be built: start-up stops, naming the database and the cause."""


class Database:
    """Owns one MongoClient per process and the SessionStore on it."""

    def __init__(self, settings: Settings, clock: Callable[[], int]) -> None:
        self.settings = settings
        self.clock = clock
        self._pid = 0
        self._client: MongoClient | None = None
        self._store: SessionStore | None = None
        self._collections: Collections | None = None
        self._stores: dict[int, SessionStore] = {}  # by MAX_SESSIONS: a tenant's own limit, on the same client
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
        collections = Collections(self._client[s.mongodb_db][s.mongodb_collection], s.mongodb_wtimeout_ms)
        self._collections = collections
        self._outbox = None  # lifecycle events: one per process, shared by every tenant's store
        if s.events_enabled:
            deliveries = Collections(self._client[s.mongodb_db][events_collection(s)], s.mongodb_wtimeout_ms)
            self._outbox = Outbox(
                collections,
                deliveries,
                lead_ms=s.webhook_expiring_lead * 1000,
                include_context=s.webhook_include_context,
                retry_ms=s.webhook_retry_hours * 3_600_000,
                purge_grace_ms=s.purge_grace * 1000,
                retention_ms=s.expired_retention * 1000,
            )
        self._stores = {}
        return self._on_collections(collections, s.max_sessions)

    def _on_collections(self, collections: Collections, max_sessions: int) -> SessionStore:
        s = self.settings
        return SessionStore(
            collections,
            self.clock,
            max_sessions=max_sessions,
            purge_grace_ms=s.purge_grace * 1000,
            retention_ms=s.expired_retention * 1000,
            default_timeout_ms=s.session_timeout * 1000,
            default_max_history=s.max_history,
            chunk_size=s.history_inline,
            outbox=self._outbox,
        )

    def store(self, max_sessions: int | None = None) -> SessionStore:
        """This process's store, on a client this process created (with another MAX_SESSIONS: a tenant's)."""
        if self._store is None or self._pid != os.getpid():
            with self._lock:
                if self._store is None or self._pid != os.getpid():
                    self._store = self._connect()
        if max_sessions is None or max_sessions == self._store.max_sessions:
            return self._store
        store = self._stores.get(max_sessions)
        if store is None:
            with self._lock:
                store = self._stores.setdefault(
                    max_sessions, self._on_collections(self._store.collections, max_sessions)
                )
        return store

    def ensure_indexes(self) -> None:
        """Build the indexes (idempotent); IndexBuildFailed names the database and the cause."""
        try:
            store = self.store()
            assert self._collections is not None
            build_indexes(self._collections)
            if store.outbox is not None:
                store.outbox.ensure_indexes()
        except errors.ServiceError as exc:
            cause = "MONGODB_URI is not set" if not self.settings.mongodb_uri else f"{exc.code}: {exc.message('en')}"
            raise IndexBuildFailed(f"could not build the indexes of {self.describe()}: {cause}") from None

    def ping(self) -> None:
        self.store()
        assert self._client is not None  # store() connected it
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
        self._client = self._store = self._collections = None
        self._stores = {}
