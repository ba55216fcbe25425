"""Prometheus metrics: the only module that imports prometheus_client. No Flask, no I/O of its own.

Under gunicorn (PROMETHEUS_MULTIPROC_DIR, set up by gunicorn.conf.py) every worker writes its counts
to its own files in that directory and a scrape, answered by any one worker, sums them all; a dead
worker's counts stay, as a counter's must. Without it (one process: tests, `flask run`) the counts
live in this process's registry. No label ever carries a user or session id: labels are tool names,
operation names and error codes, all from the spec, and tenant names, from the operator's TENANTS file
("" for a request no token opened): every label's values are bounded.
"""

from __future__ import annotations

import hmac

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from app import events, spec
from app.core import LOCK_WAIT, WRITE_RACE
from app.settings import Settings, SettingsError

# lock waits take up to 25 s (MAX_WAIT): the top buckets tell a waiting lock from a slow database
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)
DATABASE_ERRORS = ("STORAGE_UNAVAILABLE", "INTERNAL")  # INTERNAL counts here only when storage raised it
LOCK_CONFLICTS = ("SESSION_LOCKED", "LOCK_NOT_HELD")
# events wait for a receiver that is down for up to WEBHOOK_RETRY_HOURS: buckets reach a day
EVENT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)
disable_created_metrics()  # no `_created` twin of every series: the multiprocess scrape has none either


class Metrics:
    """The service's counters and histogram, and their exposition."""

    def __init__(self, settings: Settings) -> None:
        self.token = settings.metrics_token
        self.directory = settings.metrics_dir
        if self.directory and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client chose its storage at import, from the environment: it missed the variable
            raise SettingsError("PROMETHEUS_MULTIPROC_DIR must be set before the service starts")
        # multiprocess: the metrics write to files and a scrape reads the files, not a registry
        self.registry = None if self.directory else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "session_requests",
            "Requests answered, by tenant, tool and error code (OK: success)",
            ["tenant", "tool", "error_code"],
            registry=r,
        )
        self.duration = Histogram(
            "session_request_duration_seconds",
            "Time to answer a request, by tenant and tool",
            ["tenant", "tool"],
            buckets=BUCKETS,
            registry=r,
        )
        self.database_errors = Counter(
            "session_database_errors",
            "Requests failed by the database, by tenant and error code",
            ["tenant", "error_code"],
            registry=r,
        )
        self.lock_conflicts = Counter(
            "session_lock_conflicts",
            "Writes refused by the session lock, by tenant and error code",
            ["tenant", "error_code"],
            registry=r,
        )
        self.lock_waits = Counter(
            "session_lock_waits", "lock calls that waited for a held session lock, by tenant", ["tenant"], registry=r
        )
        self.write_races = Counter(
            "session_write_races",
            "Conditional writes that lost a race to another write and were re-applied on the fresher state, by tenant",
            ["tenant"],
            registry=r,
        )
        self.replays = Counter(
            "session_replays",
            "Writes answered as repeats of a request_id, by tenant and operation",
            ["tenant", "operation"],
            registry=r,
        )
        self.resumes = Counter(
            "session_resumes",
            "Expired sessions revived by options.resume, by tenant and operation",
            ["tenant", "operation"],
            registry=r,
        )
        self.events_delivered = Counter(
            "session_events_delivered",
            "Lifecycle events delivered (a 2xx answer), by tenant and type",
            ["tenant", "type"],
            registry=r,
        )
        self.events_retried = Counter(
            "session_events_retried",
            "Deliveries that failed and will be tried again, by tenant and type",
            ["tenant", "type"],
            registry=r,
        )
        self.events_dead = Counter(
            "session_events_dead",
            "Events given up after WEBHOOK_RETRY_HOURS (kept; see admin events), by tenant and type",
            ["tenant", "type"],
            registry=r,
        )
        self.pending_gauge = Gauge(
            "session_events_pending",
            "Events recorded and not yet delivered, by type (counted by each worker's sweeper every 15 s)",
            ["type"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.event_latency = Histogram(
            "session_event_delivery_seconds",
            "From an event's occurrence to its delivery, by tenant and type",
            ["tenant", "type"],
            buckets=EVENT_BUCKETS,
            registry=r,
        )
        for tenant in settings.tenants.names:  # present at zero from the start, so rate() and alerts see them
            for code in DATABASE_ERRORS:
                self.database_errors.labels(tenant, code)
            for code in LOCK_CONFLICTS:
                self.lock_conflicts.labels(tenant, code)
        if settings.events_enabled:
            for kind in events.TYPES:
                self.pending_gauge.labels(kind)
                for tenant in settings.tenants.names:
                    for family in (self.events_delivered, self.events_retried, self.events_dead):
                        family.labels(tenant, kind)

    def request(self, tool: str, tenant: str, code: str, seconds: float, *, from_storage: bool) -> None:
        """One answered request of `tenant` ("" if no token opened one); `code` "" for success;
        `from_storage`: the error came from the database layer."""
        self.requests.labels(tenant, tool, code or "OK").inc()
        self.duration.labels(tenant, tool).observe(seconds)
        if code in DATABASE_ERRORS and from_storage:
            self.database_errors.labels(tenant, code).inc()
        elif code in LOCK_CONFLICTS:
            self.lock_conflicts.labels(tenant, code).inc()

    def outcome(self, operation: str, tenant: str, *, replayed: bool, resumed: bool) -> None:
        if operation not in spec.OPERATIONS:
            return
        if replayed:
            self.replays.labels(tenant, operation).inc()
        if resumed:
            self.resumes.labels(tenant, operation).inc()

    def event(self, name: str, tenant: str) -> None:
        """What the core reports while it works (core.Sessions' `events`), for `tenant`."""
        if name == LOCK_WAIT:
            self.lock_waits.labels(tenant).inc()
        elif name == WRITE_RACE:
            self.write_races.labels(tenant).inc()

    def event_delivered(self, event_type: str, tenant: str, seconds: float) -> None:
        self.events_delivered.labels(tenant, event_type).inc()
        self.event_latency.labels(tenant, event_type).observe(seconds)

    def event_failed(self, event_type: str, tenant: str, *, dead: bool) -> None:
        (self.events_dead if dead else self.events_retried).labels(tenant, event_type).inc()

    def events_pending(self, counts: dict) -> None:
        for kind in events.TYPES:
            self.pending_gauge.labels(kind).set(counts.get(kind, 0))

    def authorized(self, header: str) -> bool:
        """Without METRICS_TOKEN the endpoint is open; with it, `Bearer <token>`, compared in constant time."""
        if not self.token:
            return True
        presented = header[7:] if header[:7].lower() == "bearer " else ""
        return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), self.token.encode())

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of every worker's counts, and its content type."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
