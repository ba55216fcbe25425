"""The MongoDB client's whole life, and the embedded nx-27017 server. I/O module.

The client is created per process on first use (after gunicorn forks its workers: pymongo's
MongoClient is not fork-safe) and closed at exit; indexes are ensured once per process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from pymongo import MongoClient

from app import errors
from app.settings import Settings
from app.store import SessionStore, storage_errors

log = logging.getLogger(__name__)


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class Database:
    """Owns one MongoClient per process and the SessionStore on it."""

    def __init__(self, settings: Settings, clock: Callable[[], int] = epoch_ms) -> None:
        self.settings = settings
        self.clock = clock
        self._pid = 0
        self._client: MongoClient | None = None
        self._store: SessionStore | None = None
        self._indexed = False
        self._lock = threading.Lock()

    def _connect(self) -> SessionStore:
        s = self.settings
        if not s.mongodb_uri:
            raise errors.StorageUnavailable()
        self._client = MongoClient(
            s.mongodb_uri,
            serverSelectionTimeoutMS=s.mongodb_timeout_ms,
            connectTimeoutMS=s.mongodb_timeout_ms,
            socketTimeoutMS=s.mongodb_timeout_ms,
            maxIdleTimeMS=60_000,
            appname="coze-session-node",
            tz_aware=True,
        )
        self._pid = os.getpid()
        return SessionStore(
            self._client[s.mongodb_db][s.mongodb_collection],
            self.clock,
            max_sessions=s.max_sessions,
            purge_grace_ms=s.purge_grace * 1000,
            retention_ms=s.expired_retention * 1000,
            default_timeout_ms=s.session_timeout * 1000,
            default_max_history=s.max_history,
            inline=s.history_inline,
        )

    def store(self) -> SessionStore:
        """This process's store; indexes are ensured before the first use."""
        if self._store is None or self._pid != os.getpid():
            with self._lock:
                if self._store is None or self._pid != os.getpid():
                    self._store, self._indexed = self._connect(), False
        if not self._indexed:
            with self._lock:
                if not self._indexed:
                    self._store.ensure_indexes()
                    self._indexed = True
        return self._store

    def ping(self) -> None:
        store = self.store()
        with storage_errors():
            store.collection.database.client.admin.command("ping")

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = self._store = None
