"""The one response shape: every declared output present, never null. Pure: no I/O.

The core answers an Outcome of values; this turns it (or an error) into the fields of the contract.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from app import jsontext, spec
from app.context_schema import ContextSchema
from app.errors import ServiceError
from app.model import Message, Outcome, Session

_ZERO = {"string": "", "integer": 0, "boolean": False}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-23T20:42:12.123Z."""
    return (EPOCH + dt.timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


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


def message(m: Message) -> dict[str, Any]:
    return {"seq": m.seq, "role": m.role, "content": m.content, "ts": iso(m.ts)}


def session(s: Session, now: int) -> dict[str, Any]:
    """The full answer about one session; an expired session shows no context."""
    out = blank()
    out.update(summary(s, now))
    out.update(
        context="" if s.expired(now) else s.context,
        timeout=s.timeout_ms // 1000,
        max_history=s.max_history,
        auto_clean=s.auto_clean,
        locked_until=iso(s.locked_until) if s.locked(now) else "",
        summary=s.summary,
        summary_upto=s.summary_upto,
        forked_from=s.forked_from,
        forked_at_seq=s.forked_at_seq,
    )
    return out


def render(outcome: Outcome) -> dict[str, Any]:
    """The answer of a successful operation."""
    out = session(outcome.session, outcome.at) if outcome.session is not None else blank()
    if outcome.session is None:
        out.update(session_id=outcome.session_id, status=outcome.status)
    out.update(
        created=outcome.created,
        replayed=outcome.replayed,
        resumed=outcome.resumed,
        lock_token=outcome.lock_token,
        dropped=outcome.dropped,
        messages=[message(m) for m in outcome.messages],
        sessions=[summary(s, outcome.at) for s in outcome.sessions],
        next_cursor=outcome.next_cursor,
        transcript=outcome.transcript,
        tokens=outcome.tokens,
    )
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


def project(out: dict[str, Any], tool: spec.Tool, schema: ContextSchema | None = None) -> dict[str, Any]:
    """Only the outputs the tool declares (Coze drops the rest anyway); with a context schema, the
    context's typed `fields` too ({} when there is no context to show)."""
    answer = {n: out[n] for n in tool.outputs}
    if schema is not None:
        answer["fields"] = schema.fields_of(jsontext.loads(out["context"])) if out["context"] else {}
    return answer
