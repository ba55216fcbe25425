"""Lifecycle events in real time: the sweeper's own thread, gunicorn killed with SIGKILL, two instances.

Every event arrives at a real receiver (tests/receiver.py); nothing here moves a clock by hand.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.receiver import Receiver
from tests.servers import ToolClient, gunicorn, service_env
from tests.support import Api, ok
from tests.test_events import SECRET, event_settings, verify_with_recipe

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def real_clock() -> int:
    return time.time_ns() // 1_000_000


def test_the_sweeper_thread_delivers_and_retries_on_the_real_clock(make_app, settings, receiver):
    app = make_app(event_settings(settings, receiver, webhook_poll_ms=200), custom_clock=real_clock)
    api = Api(app.test_client())
    sweeper = app.extensions["events"]
    receiver.answers = [500]
    sweeper.start()
    try:
        sid = api.create("u1")["session_id"]
        t0 = time.monotonic()
        ok(api.call("close", {"user_id": "u1", "session_id": sid}))
        [body] = receiver.wait_for(1, timeout=15)
        took = time.monotonic() - t0
    finally:
        sweeper.stop()
    first, second = receiver.received
    assert (first.status, second.status) == (500, 200)
    assert first.headers["X-Session-Event-Id"] == second.headers["X-Session-Event-Id"] == body["id"]
    assert 1.0 <= took < 10, took  # the first pause is about a second
    assert verify_with_recipe(second)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _kill_hard(base: str) -> None:
    """SIGKILL the gunicorn answering at `base` (its master and every worker, by their ids)."""
    port = base.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
            if any(c.endswith(b"gunicorn") for c in cmd) and f"PORT={port}".encode() in env:
                master = int(entry.name)
                if os.getppid() == master:
                    continue
                workers = _children(master)
                os.kill(master, signal.SIGKILL)
                for worker in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker, signal.SIGKILL)
                return
    raise AssertionError("no gunicorn found for " + base)


def test_sigkill_between_a_close_and_its_delivery_then_a_restart_delivers_it(mongo_uri, db_name, receiver):
    receiver.stop()  # down: the event cannot be delivered before the kill
    env = service_env(mongo_uri, db_name, WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET)
    with gunicorn(env) as base:
        client = ToolClient(base)
        sids = [client.ok("create", {"user_id": "u1"})["session_id"] for _ in range(3)]
        for sid in sids:
            client.ok("close", {"user_id": "u1", "session_id": sid})
        client.ok("delete", {"user_id": "u1", "session_id": sids[0]})
        time.sleep(1.5)  # the sweepers have tried (and failed) at least once
        _kill_hard(base)
    receiver.start()
    with gunicorn(env):
        got = receiver.wait_for(4, timeout=60)
    kinds = Counter((b["type"], b["session_id"]) for b in got)
    assert kinds == Counter(
        [("session.closed", sids[0]), ("session.closed", sids[1]), ("session.closed", sids[2])]
        + [("session.deleted", sids[0])]
    )


def test_two_instances_on_one_database_deliver_each_event_once(mongo_uri, db_name, receiver, tmp_path):
    env = service_env(mongo_uri, db_name, WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET, WEBHOOK_EXPIRING_LEAD="2")
    with gunicorn(env, log=tmp_path / "a.log") as a, gunicorn(env, log=tmp_path / "b.log") as b:
        one, two = ToolClient(a), ToolClient(b)
        made = []
        for i in range(40):
            client = one if i % 2 else two
            made.append(client.ok("create", {"user_id": f"u{i % 4}", "options": {"timeout": 4}})["session_id"])
        for i, sid in enumerate(made[:20]):
            (one if i % 2 else two).ok("close", {"user_id": f"u{i % 4}", "session_id": sid})
        for i, sid in enumerate(made[20:30], start=20):
            (two if i % 2 else one).ok("delete", {"user_id": f"u{i % 4}", "session_id": sid})
        expected = 20 + 10 + 10 + 10  # closed, deleted, then expiring and expired for the last ten
        got = receiver.wait_for(expected, timeout=90)
        time.sleep(3)  # room for a duplicate to show
        got = receiver.delivered()
    ids = Counter(b["id"] for b in got)
    assert len(ids) == expected and max(ids.values()) == 1, ids.most_common(3)
    kinds = Counter(b["type"] for b in got)
    assert kinds == {"session.closed": 20, "session.deleted": 10, "session.expiring": 10, "session.expired": 10}
    assert len(receiver.received) == expected  # not one duplicate, not one failed try


def test_the_real_ttl_reaper_purges_only_announced_sessions(make_app, settings, receiver):
    """nx-27017's reaper (the embedded default's purge) on the real clock: an expired session whose
    session.expired is not recorded stays; the one recorded is purged a grace after its expiry."""
    app = make_app(event_settings(settings, receiver, purge_grace=1), custom_clock=real_clock)
    api = Api(app.test_client())
    store = app.extensions["database"].store()
    coll = store.collections.read
    api.create("u1", session_id="kept", options={"timeout": 1})
    api.create("u1", session_id="gone", options={"timeout": 1})
    time.sleep(1.2)
    store.outbox.settle_now("gone@u1", "u1", real_clock())  # only this one's expiry recorded
    assert coll.find_one({"_id": "gone@u1"})["pa"] is not None
    deadline = time.monotonic() + 150
    while coll.find_one({"_id": "gone@u1"}) and time.monotonic() < deadline:
        time.sleep(1)
    assert coll.find_one({"_id": "gone@u1"}) is None, "the reaper never ran"
    assert coll.find_one({"_id": "kept@u1"}) is not None


def test_settings_of_the_running_service_refuse_a_bad_webhook_url(mongo_uri, db_name):
    env = service_env(mongo_uri, db_name, WEBHOOK_URL="ftp://example.com/hook", WEBHOOK_SECRET=SECRET)
    with pytest.raises(RuntimeError, match="gunicorn exited"), gunicorn(env):
        pass
