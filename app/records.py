"""The stored session document and its mapping to a Session value. Pure: no I/O.

Times are integer epoch milliseconds (nx-27017 turns `$set` datetimes into strings, and integers
compare the same everywhere); only `pa`, the TTL field, is a BSON date. `exp` is always exactly the
last use plus `tmo`: every sliding write sets it and filters on the `tmo` it assumed.

Session document fields:
  _id "<sid>@<uid>"   k "s"            uid, sid        st "active" | "closed"
  slot 0..N-1 while it holds one of the user's active-session slots, else its own _id
  ctx   JSON text     v version        c, u, exp       created / updated / expires (ms)
  tmo   timeout (ms)  mh max_history   ac auto_clean   pa, pms purge date (TTL) and its ms mirror
  msgs  JSON texts of messages, oldest first (physically `pl` long, logically the last min(n, mh))
  n     messages appended since the last clear         tot messages ever appended (newest seq)
  r     random incarnation: a session deleted and created again under the same id is another one
A tombstone {_id "~<sid>@<uid>", k "t"} outlives a purged auto-clean session, so it still answers
"expired" after the TTL reaper removed it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def key(user_id: str, session_id: str) -> str:
    """The session's _id: session ids cannot contain "@", so the first "@" splits it exactly."""
    return f"{session_id}@{user_id}"


def tomb_key(session_key: str) -> str:
    return "~" + session_key


def to_ms(t: dt.datetime) -> int:
    return (t - EPOCH) // dt.timedelta(milliseconds=1)


def from_ms(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ms)


def iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-23T20:42:12.123Z."""
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True)
class Session:
    """A stored session as the core sees it."""

    key: str
    user_id: str
    session_id: str
    status: str
    context: str
    version: int
    created: int
    updated: int
    expires: int
    timeout_ms: int
    max_history: int
    auto_clean: bool
    purge_ms: int
    slot: object
    n: int
    total: int
    physical: int
    nonce: str = ""
    messages: tuple[str, ...] | None = None

    def expired(self, now: int) -> bool:
        return self.expires <= now

    def effective_status(self, now: int) -> str:
        return "expired" if self.expired(now) else self.status

    @property
    def message_count(self) -> int:
        return min(self.n, self.max_history)

    @property
    def holds_slot(self) -> bool:
        return type(self.slot) is int


def from_doc(doc: dict) -> Session:
    msgs = doc.get("msgs")
    return Session(
        key=doc["_id"],
        user_id=doc["uid"],
        session_id=doc["sid"],
        status=doc["st"],
        context=doc.get("ctx", "{}"),
        version=doc["v"],
        created=doc["c"],
        updated=doc["u"],
        expires=doc["exp"],
        timeout_ms=doc["tmo"],
        max_history=doc["mh"],
        auto_clean=doc["ac"],
        purge_ms=doc.get("pms", 0),
        slot=doc["slot"],
        n=doc["n"],
        total=doc["tot"],
        physical=doc["pl"],
        nonce=doc.get("r", ""),
        messages=tuple(msgs) if msgs is not None else None,
    )


def new_doc(
    user_id: str,
    session_id: str,
    *,
    context: str,
    now: int,
    timeout_ms: int,
    max_history: int,
    auto_clean: bool,
    slot: int,
    purge_ms: int,
) -> dict:
    """A fresh session document, version 1."""
    doc = {
        "_id": key(user_id, session_id),
        "k": "s",
        "uid": user_id,
        "sid": session_id,
        "st": "active",
        "slot": slot,
        "ctx": context,
        "v": 1,
        "c": now,
        "u": now,
        "exp": now + timeout_ms,
        "tmo": timeout_ms,
        "mh": max_history,
        "ac": auto_clean,
        "msgs": [],
        "n": 0,
        "tot": 0,
        "pl": 0,
        "r": secrets.token_hex(8),
    }
    if auto_clean:
        doc["pa"] = from_ms(purge_ms)
        doc["pms"] = purge_ms
    return doc


def new_tomb(session_doc: dict, purge_ms: int) -> dict:
    """The tombstone of an auto-clean session, purged `purge_ms` (after the session itself)."""
    tid = tomb_key(session_doc["_id"])
    return {
        "_id": tid,
        "k": "t",
        "uid": session_doc["uid"],
        "sid": session_doc["sid"],
        "slot": tid,
        "pa": from_ms(purge_ms),
        "pms": purge_ms,
    }


@dataclass(frozen=True)
class Miss:
    """Why a conditional write did not apply: what is stored under the key (read just after)."""

    stored: Session | None
    tomb: bool
