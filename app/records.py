"""The stored session document and its mapping to a Session value. Pure: no I/O.

Times are integer epoch milliseconds (nx-27017 turns `$set` datetimes into strings, and integers
compare the same everywhere); only `pa`, the TTL field, is a BSON date. `exp` is always exactly the
last use plus `tmo`: every sliding write sets it and filters on the `tmo` it assumed.

Session document fields:
  _id "<sid>@<uid>"   k "s"            uid, sid        st "active" | "closed"
  slot 0..N-1 while it holds one of the user's active-session slots, else its own _id
  ctx   JSON text, with `cp` merge patches (JSON texts) still to apply, in order; `csz` bounds the
        merged size (ctx's bytes plus the patches': a merge patch never grows text by more)
        v version        c, u, exp       created / updated / expires (ms)
  tmo   timeout (ms)  mh max_history   ac auto_clean   pa, pms purge date (TTL) and its ms mirror
  msgs  the newest messages as JSON texts, oldest first: `pl` of them, seqs tot-pl+1 .. tot
  n     messages appended since the last clear         tot messages ever appended (newest seq)
  bk    first seqs of the archive chunks, ascending    r random incarnation (a re-created id is new)
  cs    messages per archive chunk, fixed at creation (so every worker cuts the same chunks)
The visible history is the newest min(n, mh) seqs. When `msgs` reaches twice the inline size it
moves its oldest whole chunks of that size into archive documents {_id "<key>#<r>#<first seq>",
k "m", msgs}, so the session document, which every operation reads and rewrites, stays small
whatever the history length; archive chunks are only read by `history` pages that reach back.
A tombstone {_id "~<sid>@<uid>", k "t"} outlives a purged auto-clean session, so it still answers
"expired" after the TTL reaper removed it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from app import jsontext

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def key(user_id: str, session_id: str) -> str:
    """The session's _id: session ids cannot contain "@", so the first "@" splits it exactly."""
    return f"{session_id}@{user_id}"


def tomb_key(session_key: str) -> str:
    return "~" + session_key


def chunk_key(session_key: str, nonce: str, first_seq: int) -> str:
    """An archive chunk's _id: per incarnation, so chunks of a deleted session never reappear."""
    return f"{session_key}#{nonce}#{first_seq}"


def chunk_seq(chunk_id: str) -> int:
    """The first seq an archive chunk holds, from its _id."""
    return int(chunk_id.rsplit("#", 1)[1])


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
    chunks: tuple[int, ...] = ()
    patches: int = 0
    chunk_size: int = 0

    @property
    def inline_first(self) -> int:
        """The seq of the oldest message kept inline."""
        return self.total - self.physical + 1

    @property
    def visible_first(self) -> int:
        """The seq of the oldest message the history shows."""
        return self.total - self.message_count + 1

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """The archive chunks as (first seq, last seq), oldest first."""
        ends = [*self.chunks[1:], self.inline_first]
        return [(first, end - 1) for first, end in zip(self.chunks, ends, strict=True)] if self.chunks else []

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
        context=jsontext.fold(doc.get("ctx", "{}"), doc.get("cp", ())),
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
        chunks=tuple(doc.get("bk", ())),
        patches=len(doc.get("cp", ())),
        chunk_size=doc.get("cs", 0),
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
    chunk_size: int = 0,
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
        "cp": [],
        "csz": len(context.encode()),
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
        "bk": [],
        "cs": chunk_size,
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


def applied(doc: dict, update: dict) -> dict:
    """The document as `update` leaves it, computed from the one it was applied to.

    Only the operators this service writes: $set and $inc of top-level fields, $push (of one value,
    or $each with an optional $slice) onto a top-level array; a field projected out stays out.
    Asking the database for the document before the update and applying it here spares nx-27017 a
    second read of the document; MongoDB returns either at the same cost.
    """
    out = dict(doc)
    out.update(update.get("$set", {}))
    for name, step in update.get("$inc", {}).items():
        out[name] = out.get(name, 0) + step
    for name, value in update.get("$push", {}).items():
        if name in out:
            each = value["$each"] if isinstance(value, dict) else [value]
            items = [*out[name], *each]
            if isinstance(value, dict) and "$slice" in value:
                items = items[value["$slice"] :] if value["$slice"] < 0 else items[: value["$slice"]]
            out[name] = items
    return out


def new_chunk(s: Session, first_seq: int, texts: list[str]) -> dict:
    """An archive document holding `texts`, seqs first_seq onwards; it is purged with its session."""
    cid = chunk_key(s.key, s.nonce, first_seq)
    doc = {"_id": cid, "k": "m", "uid": s.user_id, "sid": s.session_id, "slot": cid, "seq": first_seq, "msgs": texts}
    if s.auto_clean:
        doc["pa"] = from_ms(s.purge_ms)
        doc["pms"] = s.purge_ms
    return doc


@dataclass(frozen=True)
class Miss:
    """Why a conditional write did not apply: what is stored under the key (read just after)."""

    stored: Session | None
    tomb: bool
