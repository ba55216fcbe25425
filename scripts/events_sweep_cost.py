"""What one pass of the event sweeper costs at many stored sessions, and whether requests wait behind it.

    .venv/bin/python -m scripts.events_sweep_cost [--sessions 150000] [--due 1000] [--db FILE|memory]

Starts its own nx-27017 (the embedded default, patched as `make run` runs it), fills it with raw
inserts of session documents shaped exactly as the service writes them with events on (built by
app.storage.layout and Outbox.hold_purge), then measures on the real clock:
1. a pass with nothing due (the cost every worker pays every second);
2. a pass recording `--due` expired sessions (their session.expired moved to the deliveries);
3. `get` latency (p50/p99/max, in-process through the Flask app) with no sweeper, then while a
   sweeper thread runs passes without pause over a backlog, in the same process (so sharing its
   GIL, as a gunicorn worker's sweeper does).
Development tooling, like scripts/bench.py; prints one line per figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from pymongo import MongoClient

from app import create_app
from app.events.sweeper import Sweeper
from app.model import NewSession
from app.settings import Settings
from app.storage import documents
from scripts.embedded import free_port, start_embedded, stop_embedded

TOKEN = "sweep-cost-token-0123456789"
DEAD_URL = "http://127.0.0.1:9/never"  # deliveries fail at once (connection refused): only recording is timed


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fill(app, uri: str, count: int, due: int) -> None:
    """`count` sessions of 1,000 users, `due` of them expired a minute ago, the rest live for an hour."""
    store = app.extensions["database"].store()
    filler: MongoClient = MongoClient(uri, socketTimeoutMS=0)  # raw inserts, as many as fast as the server takes them
    coll = filler["coze_sessions"]["sessions"]
    batch, t0, at = [], time.monotonic(), now_ms()
    for i in range(count):
        expired = i < due
        new = NewSession(f"user{i % 1000}", f"s{i}", '{"cart":["apple"]}', 3_600_000, 1000, True)
        created = at - 3_660_000 if expired else at
        doc = documents.new_doc(new, now=created, slot=i // 1000, purge_ms=0, chunk_size=3)
        store.outbox.hold_purge(doc)
        batch.append(doc)
        if len(batch) == 1000:
            coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        coll.insert_many(batch, ordered=False)
    filler.close()
    print(f"filled {count:,} sessions ({due:,} expired) in {time.monotonic() - t0:.1f} s")


def latencies(client, seconds: float, first: int, count: int) -> list[float]:
    """`get` of the live sessions s<first>..s<count - 1> (each of its own user) for `seconds`: each call's ms."""
    out, end, n = [], time.monotonic() + seconds, 0
    while time.monotonic() < end:
        i = first + n % (count - first)
        n += 1
        t0 = time.perf_counter()
        r = client.post(
            "/v1/session/get",
            json={"user_id": f"user{i % 1000}", "session_id": f"s{i}"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200 and not r.json["error_code"], r.json
    return out


def describe(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p99 = ms[int(len(ms) * 0.99) - 1]
    print(f"{name}: {len(ms)} gets, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=150_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="sweep-cost-")
    db_path = args.db or str(Path(tmp) / "sessions.db")
    proc = start_embedded(db_path, port, str(Path(tmp) / "nx.log"))
    try:
        settings = Settings(
            env="test",
            mongodb_uri=f"mongodb://127.0.0.1:{port}",
            service_tokens=(TOKEN,),
            webhook_url=DEAD_URL,
            webhook_secret="x" * 16,
            webhook_poll_ms=0,
            log_level="WARNING",
        )
        app = create_app(settings)
        app.extensions["database"].ensure_indexes()
        fill(app, settings.mongodb_uri, args.sessions, args.due)
        sweeper = app.extensions["events"]
        outbox = app.extensions["database"].store().outbox
        t0 = time.perf_counter()
        recorded = sweeper.record(time.monotonic())
        print(f"pass recording {recorded:,} session.expired: {(time.perf_counter() - t0) * 1000:.0f} ms")
        for n in range(3):
            t0 = time.perf_counter()
            recorded = sweeper.record(time.monotonic())
            t1 = time.perf_counter()
            outbox.claim(now_ms())  # the deliveries side of a pass: one claim (none due: all just failed or none)
            t2 = time.perf_counter()
            print(
                f"idle pass {n + 1} at {args.sessions:,} sessions: find due {(t1 - t0) * 1000:.1f} ms "
                f"(recorded {recorded}), claim {(t2 - t1) * 1000:.1f} ms"
            )
        client = app.test_client()
        describe("gets, no sweeper", latencies(client, 10, args.due, args.sessions))
        paced = Sweeper(lambda: outbox, sweeper.target, now_ms, sweeper.metrics, poll_ms=1000)
        paced.start()
        describe("gets, sweeper thread at its pace (a pass a second)", latencies(client, 10, args.due, args.sessions))
        paced.stop()
        stop = threading.Event()
        passes = [0]

        def busy() -> None:
            while not stop.is_set():
                sweeper.record(time.monotonic())
                outbox.claim(now_ms())
                passes[0] += 1

        thread = threading.Thread(target=busy, daemon=True)
        thread.start()
        describe("gets, sweeper passing without pause", latencies(client, 10, args.due, args.sessions))
        stop.set()
        thread.join()
        print(f"({passes[0]} sweeper passes during those 10 s)")
        mongo: MongoClient = MongoClient(port=port)
        print(f"deliveries stored: {mongo['coze_sessions']['sessions_events'].count_documents({}):,}")
        app.extensions["database"].close()
    finally:
        stop_embedded(proc)


if __name__ == "__main__":
    main()
