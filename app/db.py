"""The MongoDB client's whole life, and the embedded nx-27017 server. I/O module.

The client is created per process on first use (after gunicorn forks its workers: pymongo's
MongoClient is not fork-safe) and closed at exit; indexes are ensured once per process.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

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


def nx_command() -> list[str]:
    """nx-27017 run by this interpreter through app.nx_throttled (its per-read purge throttled)."""
    try:
        import nx_27017  # noqa: F401
    except ImportError:
        raise RuntimeError("nx-27017 is not installed: run `make run` or pip install -r requirements.txt") from None
    return [sys.executable, "-m", "app.nx_throttled"]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_embedded(db_path: str, port: int, log_file: str, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start nx-27017 (a MongoDB wire-protocol server on SQLite) and wait until it answers."""
    if port_open(host, port):
        raise RuntimeError(f"port {port} is already in use; set EMBEDDED_DB_PORT or MONGODB_URI")
    for path in (db_path, log_file):
        if path != "memory":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    args = [
        *nx_command(),
        "--db",
        db_path,
        "--host",
        host,
        "-p",
        str(port),
        "--log-file",
        log_file,
        "--pid-file",
        str(Path(log_file).with_suffix(".pid")),
    ]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nx-27017 exited with {proc.returncode}; see {log_file}")
        if port_open(host, port):
            client = MongoClient(host, port, serverSelectionTimeoutMS=2000)
            try:
                client.admin.command("ping")
                return proc
            except Exception:  # noqa: BLE001 - not ready yet, keep waiting
                pass
            finally:
                client.close()
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"nx-27017 did not answer on {host}:{port} within 20 s")


def stop_embedded(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
