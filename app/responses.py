"""The one response shape: every declared output present, never null. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from app import spec
from app.errors import ServiceError
from app.records import Session, iso

_ZERO = {"string": "", "integer": 0, "boolean": False, "array": None}


def blank() -> dict[str, Any]:
    """Every output field at its empty value ("" / 0 / false / [])."""
    return {n: ([] if f.type == "array" else _ZERO[f.type]) for n, f in spec.OUTPUTS.items()}


def summary(s: Session, now: int) -> dict[str, Any]:
    """A session's state without its context: the items of `list`, the head of every answer."""
    return {
        "session_id": s.session_id,
        "status": s.effective_status(now),
        "version": s.version,
        "created_at": iso(s.created),
        "updated_at": iso(s.updated),
        "expires_at": iso(s.expires),
        "expires_in": max(0, (s.expires - now) // 1000),
        "message_count": s.message_count,
    }


def session(s: Session, now: int, **extra: Any) -> dict[str, Any]:
    """The full answer about one session; an expired session shows no context."""
    out = blank()
    out.update(summary(s, now))
    out["context"] = "" if s.expired(now) else s.context
    out.update(extra)
    return out


def error(exc: ServiceError, now: int, lang: str, session_id: str = "") -> dict[str, Any]:
    """The answer for an error, with the session's state when one is known."""
    if isinstance(exc.session, Session):
        out = session(exc.session, now)
    else:
        out = blank()
        out["session_id"] = session_id
        if exc.code == "SESSION_EXPIRED":
            out["status"] = "expired"
    out["error"] = exc.message(lang)
    out["error_code"] = exc.code
    if exc.code == "VERSION_CONFLICT" and "current" in exc.params:
        out["version"] = exc.params["current"]
    return out


def project(out: dict[str, Any], tool: spec.Tool) -> dict[str, Any]:
    """Only the outputs the tool declares (Coze drops the rest anyway)."""
    return {n: out[n] for n in tool.outputs}
