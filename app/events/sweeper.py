"""The sweeper: one background thread per worker that records due events and delivers them. No Flask.

Started after the fork (create_app runs in each gunicorn worker), stopped at exit. Each pass asks the
storage for sessions whose next event is due (an index on the due time), records their events, then
claims due deliveries one at a time (a lease: several workers and instances never send one event at
once) and sends them. It never holds a request's thread: requests only write the event fields their
own command writes anyway. Times come from the injected clock (epoch ms), so tests can move them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import orjson

from app import errors
from app.events.targets import Undelivered
from app.tenants import DEFAULT

if TYPE_CHECKING:
    from app.storage.outbox import Outbox

log = logging.getLogger("app.events")
BATCH = 500  # sessions read per query of a pass
PASS_BUDGET_S = 5.0  # a pass yields to the next after this long (a backlog is taken over several)
GAUGE_EVERY_S = 15.0  # how often a worker counts what is pending (a query over the deliveries)


class Target(Protocol):
    def send(self, event_id: str, body: str, fields: dict) -> None: ...


class EventMetrics(Protocol):
    def event_delivered(self, event_type: str, tenant: str, seconds: float) -> None: ...
    def event_failed(self, event_type: str, tenant: str, *, dead: bool) -> None: ...
    def events_pending(self, counts: dict) -> None: ...


def _log(message: str, event_id: str, event_type: str, tenant: str, **more: object) -> None:
    """The event's id, type and tenant (and why it failed), never its body: the context stays out of logs."""
    log.info(
        "%s %s %s",
        message,
        event_type,
        event_id,
        extra={
            "request": {"event": event_id, "state": message.split()[-1], "type": event_type, "tenant": tenant, **more}
        },
    )


class Sweeper:
    def __init__(
        self,
        outbox: Callable[[], Outbox],
        target: Target,
        clock: Callable[[], int],
        metrics: EventMetrics,
        *,
        poll_ms: int = 1000,
    ) -> None:
        self.outbox, self.target, self.clock, self.metrics = outbox, target, clock, metrics
        self.poll_s = poll_ms / 1000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counted = 0.0

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="event-sweeper", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except errors.ServiceError:  # the database is away: the events wait in it, try again
                log.warning("event sweeper: storage unavailable, next pass in %.1f s", self.poll_s)
            except Exception:  # noqa: BLE001 - the thread must outlive any one bad pass
                log.exception("event sweeper pass failed")
            self._stop.wait(self.poll_s)

    def run_once(self) -> tuple[int, int]:
        """One pass: (events recorded, deliveries tried)."""
        started = time.monotonic()
        return self.record(started), self.deliver(started)

    def record(self, started: float) -> int:
        outbox, recorded = self.outbox(), 0
        while time.monotonic() - started < PASS_BUDGET_S and not self._stop.is_set():
            now = self.clock()
            due = outbox.due_sessions(now, BATCH)
            for doc in due:
                if time.monotonic() - started >= PASS_BUDGET_S or self._stop.is_set():
                    return recorded  # the rest is due still: the next pass takes it
                try:
                    recorded += bool(outbox.settle(doc, now))
                except errors.ServiceError:
                    raise  # the database is away: the whole pass waits
                except Exception:  # noqa: BLE001 - one document this cannot read must not hold back the others
                    log.exception("event sweeper: could not settle one session document; the others go on")
            if len(due) < BATCH:
                break
        return recorded

    def deliver(self, started: float) -> int:
        outbox, tried = self.outbox(), 0
        while time.monotonic() - started < PASS_BUDGET_S and not self._stop.is_set():
            claim = outbox.claim(self.clock())
            if claim is None:
                break
            tried += 1
            fields = _fields(claim.body)
            tenant = str(fields.get("tenant", DEFAULT))
            try:
                self.target.send(claim.id, claim.body, fields)
            except Undelivered as exc:
                dead = outbox.failed(claim, self.clock(), str(exc))
                self.metrics.event_failed(claim.type, tenant, dead=dead)
                _log("event dead" if dead else "event retried", claim.id, claim.type, tenant, error=str(exc))
                continue
            now = self.clock()
            outbox.delivered(claim, now)
            self.metrics.event_delivered(claim.type, tenant, max(0, now - claim.occurred) / 1000)
            _log("event delivered", claim.id, claim.type, tenant, attempt=claim.attempts)
        if time.monotonic() - self._counted >= GAUGE_EVERY_S:
            self._counted = time.monotonic()
            self.metrics.events_pending(outbox.backlog.pending_by_type())
        return tried


def _fields(body: str) -> dict:
    fields: dict = orjson.loads(body)
    return fields
