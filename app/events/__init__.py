"""Lifecycle events: their types, body, signature and retry schedule. Pure: no I/O, no stored field names.

An event tells a receiver that a session is about to expire, has expired, was closed or was deleted.
Its body is compact JSON with the fields of the contract (docs/events.md); it is signed the way
Stripe signs webhooks: `X-Session-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
so a receiver can reuse the verification code it has.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

from app.responses import iso

EXPIRING, EXPIRED, CLOSED, DELETED = "session.expiring", "session.expired", "session.closed", "session.deleted"
TYPES = (EXPIRING, EXPIRED, CLOSED, DELETED)
STATUS = {EXPIRING: "active", EXPIRED: "expired", CLOSED: "closed", DELETED: "deleted"}
SIGNATURE_HEADER, ID_HEADER = "X-Session-Signature", "X-Session-Event-Id"
FIRST_PAUSE_S, LONGEST_PAUSE_S = 1, 3600  # retries: about 1 s, doubling, at most an hour apart
SEND_TIMEOUT_S = 10  # a 2xx answer within this is delivery (PRODUCT, "Lifecycle events")


@dataclass(frozen=True)
class Event:
    """One event as the receiver gets it; times are epoch milliseconds."""

    id: str
    type: str
    occurred: int
    tenant: str  # the tenant's name ("default" without TENANTS): one user id may live in two tenants
    user_id: str
    session_id: str
    version: int
    expires: int
    message_count: int
    context: str  # JSON text

    def fields(self, *, include_context: bool) -> dict:
        """The body's fields, in the contract's order (also the Coze workflow's `parameters`)."""
        out = {
            "id": self.id,
            "type": self.type,
            "occurred_at": iso(self.occurred),
            "tenant": self.tenant,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "status": STATUS[self.type],
            "version": self.version,
            "expires_at": iso(self.expires),
            "message_count": self.message_count,
        }
        if include_context:
            out["context"] = self.context
        return out

    def body(self, *, include_context: bool) -> str:
        return orjson.dumps(self.fields(include_context=include_context)).decode()


def new_event_id() -> str:
    """The id of an event caused by a request (close, delete): 128 random bits."""
    return "evt_" + secrets.token_hex(16)


def expiry_event_id(session_key: str, nonce: str, event_type: str, expires: int) -> str:
    """The id of an expiry event: the same for one expiry of one session, whoever records it (no twin)."""
    digest = hashlib.sha256(f"{session_key}\0{nonce}\0{event_type}\0{expires}".encode()).hexdigest()
    return "evt_" + digest[:32]


def signature(secret: str, timestamp: int, body: str) -> str:
    """The X-Session-Signature value of `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: str, now: int, tolerance: int = 300) -> bool:
    """What a receiver checks: a v1 signature of this body, made at most `tolerance` seconds from `now`."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if not parts.get("t", "").isdigit() or abs(now - int(parts["t"])) > tolerance:
        return False
    expected = signature(secret, int(parts["t"]), body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def pause_s(attempts: int) -> int:
    """Seconds to wait after the `attempts`-th failed try: 1, 2, 4, ... at most an hour."""
    return int(min(FIRST_PAUSE_S * 2 ** max(attempts - 1, 0), LONGEST_PAUSE_S))
