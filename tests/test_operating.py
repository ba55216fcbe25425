"""Operating at scale and on the embedded database: export memory, `make admin`, a live SQLite backup.

Slow: thousands of sessions, real nx-27017 processes on files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from pymongo import MongoClient

from app.storage.records import session_docs
from scripts.embedded import free_port, port_open, start_embedded, stop_embedded
from tests.support import HISTORY_INLINE, ROOT

pytestmark = pytest.mark.slow


def synthetic(i: int, now: int) -> dict:
    """An export record of a live session with 8 messages (some of them archived) and a small context."""
    messages = [
        {
            "seq": k + 1,
            "role": "user",
            "content": f"message {k} of session {i} " + "y" * 100,
            "ts": now,
            "request_id": "",
        }
        for k in range(8)
    ]
    return {
        "kind": "session",
        "user_id": f"user-{i % 2500}",
        "session_id": f"s-{i}",
        "incarnation": f"{i:016x}",
        "status": "active",
        "version": 3,
        "created": now + i,
        "updated": now + i,
        "expires": now + 10**9,
        "timeout_ms": 1_800_000,
        "max_history": 1000,
        "auto_clean": True,
        "appended": 8,
        "last_seq": 8,
        "chunk_size": HISTORY_INLINE,
        "context": json.dumps({"n": i, "text": "x" * 200}),
        "slot": i // 2500,  # each user's sessions hold slots 0..3
        "purge": now + 10**9,
        "messages": messages,
    }


def insert_sessions(collection, first: int, last: int, now: int) -> None:
    """Sessions first..last-1 straight into the collection, built as an import builds them."""
    batch: list[dict] = []
    for i in range(first, last):
        doc, chunks = session_docs(synthetic(i, now), HISTORY_INLINE)
        batch += [*chunks, doc]
        if len(batch) >= 2000:
            collection.insert_many(batch)
            batch = []
    if batch:
        collection.insert_many(batch)


def export_peak(app, out) -> tuple[int, float, int]:
    """(peak bytes Python allocated while `flask admin export` ran, its seconds, the lines it wrote)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        result = app.test_cli_runner().invoke(args=["admin", "export", "--out", str(out)])
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    with open(out, "rb") as f:
        return peak, seconds, sum(1 for _ in f)


def test_an_export_of_10000_sessions_keeps_the_cli_memory_flat(app, collection, clock, tmp_path):
    insert_sessions(collection, 0, 1000, clock.now)
    peak_1k, seconds_1k, lines_1k = export_peak(app, tmp_path / "1k.jsonl")
    insert_sessions(collection, 1000, 10_000, clock.now)
    peak_10k, seconds_10k, lines_10k = export_peak(app, tmp_path / "10k.jsonl")
    print(
        f"\nexport peak: 1,000 sessions {peak_1k / 2**20:.2f} MiB ({seconds_1k:.1f} s), "
        f"10,000 sessions {peak_10k / 2**20:.2f} MiB ({seconds_10k:.1f} s)"
    )
    assert (lines_1k, lines_10k) == (1000 + 2, 10_000 + 2)  # the header, every session, the end record
    # Ten times the sessions, not ten times the memory: one batch in memory at a time, whatever the count.
    assert peak_10k < 1.5 * peak_1k + 2**19, (peak_1k, peak_10k)
    assert peak_10k < 8 * 2**20


def test_make_admin_starts_the_embedded_database_on_the_var_file_and_stops_it_after(tmp_path):
    var, port = tmp_path / "var", free_port()
    env = {**os.environ, "MONGODB_URI": "", "VAR_DIR": str(var), "EMBEDDED_DB_PORT": str(port), "SERVICE_TOKEN": ""}
    env["APP_ENV"] = "development"

    def admin(*args: str) -> subprocess.CompletedProcess:
        command = [str(Path(sys.executable).with_name("session-admin")), *args]  # what `make admin ARGS="..."` runs
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    stats = admin("stats")
    assert stats.returncode == 0, stats.stderr
    assert f"database: 127.0.0.1:{port}/coze_sessions.sessions" in stats.stdout
    assert "started the embedded database" in stats.stderr
    assert (var / "sessions.db").exists() and not port_open("127.0.0.1", port)  # stopped after the command
    assert admin("wipe-user").returncode == 2
    running = start_embedded(str(var / "sessions.db"), port, str(var / "nx.log"))  # as `make run` leaves it
    try:
        client = MongoClient(port=port)
        client.coze_sessions.sessions.insert_one({"_id": "x", "k": "z", "uid": "someone", "slot": "x"})
        client.close()
        wiped = admin("wipe-user", "someone")
        assert wiped.returncode == 0, wiped.stderr
        assert "removed 1 documents of user 'someone'" in wiped.stdout
        assert "using the embedded database that answers" in wiped.stderr
        assert port_open("127.0.0.1", port)  # the service's database is left running
    finally:
        stop_embedded(running)


def test_a_backup_of_the_sqlite_file_taken_while_nx_27017_writes_holds_every_write_acknowledged_before_it(tmp_path):
    live, copy, port = tmp_path / "sessions.db", tmp_path / "backup.db", free_port()
    server = start_embedded(str(live), port, str(tmp_path / "nx.log"))
    acknowledged: list[int] = []
    stop = threading.Event()

    def write() -> None:
        client = MongoClient(port=port)
        coll = client.coze_sessions.sessions
        n = 0
        while not stop.is_set():
            coll.insert_one({"_id": n, "uid": f"u{n}", "slot": n, "msgs": ["z" * 500] * 5})
            acknowledged.append(n)
            n += 1
        client.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 300:
            time.sleep(0.05)
        before = len(acknowledged)
        # what docs/operating.md says to run, while the service writes: SQLite's online backup, in one step
        src, dst = sqlite3.connect(live), sqlite3.connect(copy)
        src.backup(dst)
        dst.close()
        src.close()
        while len(acknowledged) < before + 100:  # writes go on during and after the copy
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
        stop_embedded(server)
    check = sqlite3.connect(copy)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    restored_port = free_port()
    restored = start_embedded(str(copy), restored_port, str(tmp_path / "nx2.log"))
    try:
        client = MongoClient(port=restored_port)
        ids = {d["_id"] for d in client.coze_sessions.sessions.find({}, {"_id": 1})}
        client.close()
    finally:
        stop_embedded(restored)
    assert set(range(before)) <= ids
