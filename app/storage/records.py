"""The export format's records <-> stored documents, both ways. Pure: no I/O.

A session record holds what every answer about the session is made of: ids, incarnation, status,
context, version, times as stored (epoch ms), settings, counters, lock, request ids and its whole
visible history, archived messages included. Every record names its `tenant` and the plain `user_id`
(a record without `tenant`, from before tenants, is the default tenant's). A document is rebuilt from
a record by `new_doc` (its defaults) and SESSION_FIELDS (the record's values), its messages cut into
archive chunks as the store cuts them: an imported session answers exactly as the original and goes
on from there.
"""

from __future__ import annotations

import re
from typing import Any

from app import jsontext, seqs, spec, tenants
from app.model import NewSession, Session
from app.storage.archive import INLINE_BYTES
from app.storage.documents import new_chunk, new_doc, receipt_doc, tomb_doc
from app.storage.layout import (
    TOMBSTONE,
    F,
    chunk_key,
    from_doc,
    key,
    purge_fields,
)
from app.storage.messages import (
    DROPPED,
    chunk_ranges,
    chunk_texts,
    decode_message,
    encode_message,
    inline_texts,
    text_bytes,
)

FORMAT, VERSION = "coze-session-node", 1
# record name: (stored field, its value when a document or a record lacks it, whose type a record's
# value must have). A new session field is one line here: exported as stored, imported over new_doc's.
SESSION_FIELDS: dict[str, tuple[str, Any]] = {
    "incarnation": (F.NONCE, ""),
    "status": (F.STATUS, "active"),
    "version": (F.VERSION, 1),
    "created": (F.CREATED, 0),
    "updated": (F.UPDATED, 0),
    "expires": (F.EXPIRES, 0),
    "timeout_ms": (F.TIMEOUT, 0),
    "max_history": (F.MAX_HISTORY, 1),
    "auto_clean": (F.AUTO_CLEAN, True),
    "appended": (F.APPENDED, 0),
    "last_seq": (F.LAST_SEQ, 0),
    "chunk_size": (F.CHUNK_SIZE, 0),
    "lock_token": (F.LOCK_TOKEN, ""),
    "locked_until": (F.LOCKED_UNTIL, 0),
    "request_ids": (F.REQUESTS, []),
    "create_request": (F.CREATE_REQUEST, ""),
    "summary": (F.SUMMARY, ""),
    "summary_upto": (F.SUMMARY_UPTO, 0),
    "gaps": (F.GAPS, []),
    "forked_from": (F.FORKED_FROM, ""),
    "forked_at_seq": (F.FORKED_AT, 0),
}
# what no record can do without; the others (and any field added later) import at their default
REQUIRED = frozenset(
    ("incarnation", "status", "version", "created", "updated", "expires", "timeout_ms", "max_history", "auto_clean")
    + ("appended", "last_seq", "chunk_size")
)
_SESSION_ID = re.compile(spec.SESSION_ID_PATTERN)
_USER_ID = re.compile(spec.USER_ID_PATTERN)


class BadRecord(ValueError):
    """A record that cannot be imported; the message says why."""


def chunk_ids(s: Session) -> list[str]:
    """The ids of the archive chunks that hold some of the session's visible messages."""
    return [chunk_key(s.stored.key, s.stored.nonce, first) for first, last in chunk_ranges(s) if last >= s.first_seq]


def session_record(doc: dict, chunks: dict[str, dict]) -> dict | None:
    """The record of a session document read with its messages; None if `chunks` misses one it needs."""
    s = from_doc(doc)
    texts = dict(inline_texts(s))
    for cid in chunk_ids(s):
        if cid not in chunks:
            return None
        texts.update(chunk_texts(chunks[cid], s.gaps))
    seqs = _visible(s.last_seq, s.message_count, s.gaps)
    if any(seq not in texts for seq in seqs):
        return None
    tenant, user_id = tenants.split_user_key(s.user_id)
    record: dict[str, Any] = {"kind": "session", "tenant": tenant, "user_id": user_id, "session_id": s.session_id}
    record.update((name, doc.get(field, default)) for name, (field, default) in SESSION_FIELDS.items())
    record.update(
        context=s.context,  # the patch log folded in: the text every answer shows
        slot=s.stored.slot if s.stored.holds_slot else None,
        purge=s.stored.purge_ms if F.PURGE_MS in doc else None,
        messages=[_message(seq, texts[seq]) for seq in seqs],
    )
    return record


def _message(seq: int, text: str) -> dict:
    role, content, ts, request_id = decode_message(text)
    return {"seq": seq, "role": role, "content": content, "ts": ts, "request_id": request_id}


def marker_record(doc: dict) -> dict:
    """The record of a tombstone or a delete receipt."""
    tenant, user_id = tenants.split_user_key(doc[F.USER])
    record = {"tenant": tenant, "user_id": user_id, "session_id": doc[F.SESSION], "purge": doc.get(F.PURGE_MS, 0)}
    if doc[F.KIND] == TOMBSTONE:
        return {"kind": "tombstone", **record}
    receipt = {"request_ids": list(doc.get(F.REQUESTS, ())), "create_request": doc.get(F.CREATE_REQUEST, "")}
    return {"kind": "receipt", **record, **receipt}


def session_docs(record: dict, chunk_size: int) -> tuple[dict, list[dict]]:
    """The session document and its archive chunks, rebuilt from a checked record (see `check`)."""
    context = record["context"]
    new = NewSession(
        user_id=stored_user(record),
        session_id=record["session_id"],
        context=context,
        timeout_ms=record["timeout_ms"],
        max_history=record["max_history"],
        auto_clean=record["auto_clean"],
    )
    size = record["chunk_size"] or chunk_size
    doc = new_doc(new, now=record["created"], slot=0, purge_ms=record["purge"] or 0, chunk_size=size)
    doc.update((field, record[name]) for name, (field, _) in SESSION_FIELDS.items() if name in record)
    for field, absent in ((F.GAPS, []), (F.FORKED_FROM, ""), (F.FORKED_AT, 0)):  # stored only once set
        if doc.get(field) == absent:
            doc.pop(field)
    doc[F.CHUNK_SIZE] = size
    doc[F.SLOT] = record["slot"] if record["slot"] is not None else doc[F.ID]
    if record["purge"] is None:
        doc.pop(F.PURGE_AT, None)
        doc.pop(F.PURGE_MS, None)
    else:
        doc.update(purge_fields(record["purge"]))
    by_seq = {m["seq"]: encode_message(m["role"], m["content"], m["ts"], m["request_id"]) for m in record["messages"]}
    gaps = seqs.from_stored(record.get("gaps", []))
    first = seqs.first_visible(record["last_seq"], len(by_seq), gaps)
    texts = [by_seq.get(seq, DROPPED) for seq in range(first, record["last_seq"] + 1)]  # gaps keep their places
    whole = _whole_chunks(texts, size, record["max_history"])
    inline_part = texts[whole * size :]
    doc.update(
        {
            F.MESSAGES: inline_part,
            F.INLINE: len(inline_part),
            F.INLINE_BYTES: text_bytes(inline_part),
            F.CHUNKS: [first + j * size for j in range(whole)],
        }
    )
    s = from_doc(doc)
    chunks = [new_chunk(s, first + j * size, texts[j * size : (j + 1) * size]) for j in range(whole)]
    return doc, chunks


def _whole_chunks(texts: list[str], size: int, max_history: int) -> int:
    """How many whole chunks of the oldest messages are archived, as the store's archiver leaves them."""
    if max_history <= size:
        return 0  # the store trims such a history inline and never archives it
    whole = max(0, (len(texts) - size) // size)
    if text_bytes(texts[whole * size :]) >= INLINE_BYTES:
        whole = len(texts) // size
    return whole


def marker_doc(record: dict) -> dict:
    if record["kind"] == "tombstone":
        return tomb_doc(stored_user(record), record["session_id"], record["purge"])
    ids = record["request_ids"]
    return receipt_doc(
        stored_user(record), record["session_id"], record["purge"], ids, record.get("create_request", "")
    )


def stored_user(record: dict) -> str:
    """The stored user key of a checked record: its user in its tenant."""
    return tenants.user_key(record.get("tenant", tenants.DEFAULT), record["user_id"])


def record_key(record: dict) -> str:
    """The stored _id of the session a record describes."""
    return key(stored_user(record), record["session_id"])


def check(record: Any) -> dict:
    """The record, if it is one this version can import exactly; else BadRecord naming what is wrong."""
    if not isinstance(record, dict) or record.get("kind") not in ("session", "tombstone", "receipt"):
        raise BadRecord("not a session, tombstone or receipt record")
    _string(record, "user_id", _USER_ID)
    _string(record, "session_id", _SESSION_ID)
    if "tenant" in record and not (isinstance(record["tenant"], str) and tenants.NAME.match(record["tenant"])):
        raise BadRecord("tenant must be 1-32 characters of a-z 0-9 _ -")
    if record["kind"] != "session":
        _integer(record, "purge")
        if record["kind"] == "receipt" and not _strings(record.get("request_ids")):
            raise BadRecord("request_ids must be a list of strings")
        if record["kind"] == "receipt" and not isinstance(record.get("create_request", ""), str):
            raise BadRecord("create_request must be a string")
        return record
    for name, (_, default) in SESSION_FIELDS.items():
        if name not in record:
            if name in REQUIRED:
                raise BadRecord(f"{name} is missing")
            continue
        want = type(default)
        if type(record[name]) is not want:
            raise BadRecord(f"{name} must be {want.__name__}")
    if record["status"] not in ("active", "closed"):
        raise BadRecord("status must be active or closed")
    if not _strings(record.get("request_ids", [])):
        raise BadRecord("request_ids must be a list of strings")
    if not isinstance(record.get("context"), str) or not _object_text(record["context"]):
        raise BadRecord("context must be the JSON text of an object")
    for name in ("slot", "purge"):
        if record.get(name) is not None:
            _integer(record, name)
    if "slot" not in record or "purge" not in record:
        raise BadRecord("slot and purge must be given (null when none)")
    _check_messages(record)
    return record


def _check_messages(record: dict) -> None:
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise BadRecord("messages must be a list")
    visible = min(record["appended"], record["max_history"])
    if len(messages) != visible:
        raise BadRecord(f"messages holds {len(messages)}, but appended and max_history make {visible} visible")
    flat = record.get("gaps", [])
    ends = [0, *flat]  # first <= last within a pair, and each pair after the one before
    if (
        len(flat) % 2
        or any(type(n) is not int for n in flat)
        or any(ends[i] >= ends[i + 1] if i % 2 == 0 else ends[i] > ends[i + 1] for i in range(len(flat)))
    ):
        raise BadRecord("gaps must be ascending, disjoint [first, last] pairs of seqs")
    wanted = _visible(record["last_seq"], visible, seqs.from_stored(flat))
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in spec.ROLES:
            raise BadRecord(f"messages[{i}] must have a role of {', '.join(spec.ROLES)}")
        if type(m.get("seq")) is not int or m["seq"] != wanted[i]:
            raise BadRecord(f"messages[{i}].seq must continue to last_seq without a gap (but those in gaps)")
        if type(m.get("ts")) is not int or type(m.get("content")) is not str or type(m.get("request_id")) is not str:
            raise BadRecord(f"messages[{i}] needs ts (integer), content and request_id (strings)")


def _visible(last: int, count: int, gaps: seqs.Gaps) -> list[int]:
    """The seqs of the visible history, oldest first: the newest `count` up to `last` outside the gaps."""
    return [q for q in range(seqs.first_visible(last, count, gaps), last + 1) if not seqs.is_gap(q, gaps)]


def _string(record: dict, name: str, pattern: re.Pattern) -> None:
    if not isinstance(record.get(name), str) or not pattern.match(record[name]):
        raise BadRecord(f"{name} is missing or not a valid id")


def _integer(record: dict, name: str) -> None:
    if type(record.get(name)) is not int or record[name] < 0:
        raise BadRecord(f"{name} must be a non-negative integer")


def _object_text(text: str) -> bool:
    try:
        return isinstance(jsontext.loads(text), dict)
    except jsontext.JSONTextError:
        return False


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
