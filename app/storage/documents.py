"""New stored documents: a session, a tombstone, a delete's receipt, an archive chunk. Pure.

Built from `layout.F` and layout's keys and fragments (layout stays the one module that spells a
stored field name); no pymongo, no I/O.
"""

from __future__ import annotations

import secrets

from app.model import NewSession, Session
from app.storage.layout import (
    ACTIVE,
    CHUNK,
    RECEIPT,
    SESSION,
    TOMBSTONE,
    F,
    chunk_key,
    context_fields,
    key,
    purge_fields,
    receipt_key,
    tomb_key,
)


def new_doc(
    new: NewSession,
    *,
    now: int,
    slot: int,
    purge_ms: int,
    chunk_size: int,
    request_id: str = "",
    earlier: tuple[str, ...] = (),
) -> dict:
    """A fresh session document, version 1; `request_id` is the create's, `earlier` the request ids a
    deleted session of the same id had (its receipt's): none of them applies to this one again."""
    doc = {
        F.ID: key(new.user_id, new.session_id),
        F.KIND: SESSION,
        F.USER: new.user_id,
        F.SESSION: new.session_id,
        F.STATUS: ACTIVE,
        F.SLOT: slot,
        **context_fields(new.context),
        F.VERSION: 1,
        F.CREATED: now,
        F.UPDATED: now,
        F.EXPIRES: now + new.timeout_ms,
        F.TIMEOUT: new.timeout_ms,
        F.MAX_HISTORY: new.max_history,
        F.AUTO_CLEAN: new.auto_clean,
        F.MESSAGES: [],
        F.APPENDED: 0,
        F.LAST_SEQ: 0,
        F.INLINE: 0,
        F.INLINE_BYTES: 0,
        F.CHUNKS: [],
        F.CHUNK_SIZE: chunk_size,
        F.NONCE: secrets.token_hex(8),
        F.LOCK_TOKEN: "",
        F.LOCKED_UNTIL: 0,
        F.REQUESTS: [*earlier, request_id] if request_id else list(earlier),
        F.CREATE_REQUEST: request_id,
        F.SUMMARY: "",
        F.SUMMARY_UPTO: 0,
    }
    if new.auto_clean:
        doc.update(purge_fields(purge_ms))
    return doc


def new_tomb(session_doc: dict, purge_ms: int) -> dict:
    """The tombstone of an auto-clean session: it answers "expired" after the session is purged."""
    return tomb_doc(session_doc[F.USER], session_doc[F.SESSION], purge_ms)


def tomb_doc(user_id: str, session_id: str, purge_ms: int) -> dict:
    tid = tomb_key(key(user_id, session_id))
    return {F.ID: tid, **_marker(TOMBSTONE, user_id, session_id, tid), **purge_fields(purge_ms)}


def receipt_fields(user_id: str, session_id: str, purge_ms: int) -> dict:
    """A receipt's fields besides its request ids: what a delete under a request_id leaves for its repeats."""
    rid = receipt_key(key(user_id, session_id))
    return {**_marker(RECEIPT, user_id, session_id, rid), **purge_fields(purge_ms)}


def receipt_doc(user_id: str, session_id: str, purge_ms: int, request_ids: list[str], create_request: str) -> dict:
    rid = receipt_key(key(user_id, session_id))
    made_by = {F.CREATE_REQUEST: create_request} if create_request else {}  # as a delete leaves it
    return {F.ID: rid, **receipt_fields(user_id, session_id, purge_ms), F.REQUESTS: request_ids, **made_by}


def _marker(kind: str, user_id: str, session_id: str, doc_id: str) -> dict:
    """What a document besides a session carries: its kind, its session, and its own _id as its slot."""
    return {F.KIND: kind, F.USER: user_id, F.SESSION: session_id, F.SLOT: doc_id}


def request_fields(s: Session) -> dict:
    """The request-id fields of a stored session, as its document holds them."""
    return {F.REQUESTS: list(s.stored.requests), F.CREATE_REQUEST: s.stored.create_request}


def new_chunk(s: Session, first_seq: int, texts: list[str]) -> dict:
    """An archive document holding `texts`, seqs first_seq onwards; it is purged with its session."""
    cid = chunk_key(s.stored.key, s.stored.nonce, first_seq)
    doc = {F.ID: cid, **_marker(CHUNK, s.user_id, s.session_id, cid), F.FIRST_SEQ: first_seq, F.MESSAGES: texts}
    if s.auto_clean and s.stored.purge_ms:  # none yet: the session's expiry event is not recorded (outbox)
        doc.update(purge_fields(s.stored.purge_ms))
    return doc
