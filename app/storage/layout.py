"""The stored documents: field names, indexes, ids, filter guards, the message codec, documents <-> values. Pure.

Times are integer epoch milliseconds (nx-27017 turns `$set` datetimes into strings, and integers
compare the same everywhere); only `pa`, the TTL field, is a BSON date. `exp` is always exactly the
last use plus `tmo`: every sliding write sets it and filters on the `tmo` it assumed.
The visible history is the newest min(n, mh) seqs. `msgs` keeps the newest of them inline; older
ones move, in whole chunks of `cs`, to archive documents that only `history` pages reaching back read.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator

from app import jsontext
from app.model import NewSession, Session, Stored

FIELDS: dict[str, str] = {
    # every document
    "_id": "session '<sid>@<uid>', tombstone '~' + that, archive chunk that + '#<r>#<first seq>', receipt '!' + that",
    "k": "kind: 's' session, 't' tombstone, 'm' archive chunk, 'd' receipt of a delete",
    "uid": "user id: in every document and every filter (the shard key)",
    "sid": "session id",
    "slot": "0..MAX_SESSIONS-1 while the session holds one of its user's active slots, else its own _id",
    "pa": "purge date, a BSON date (the TTL index); absent: never purged",
    "pms": "pa in epoch ms",
    # sessions
    "st": "'active', 'closed', or 'deleted' while a delete removes it (expired is computed from exp)",
    "ctx": "the context's JSON text, before the patches in cp",
    "cp": "JSON Merge Patch texts still to apply to ctx, oldest first",
    "csz": "bound on the merged context's bytes: ctx's plus the patches' (a patch never grows it more)",
    "v": "version, +1 on every change",
    "c": "created (ms)",
    "u": "updated (ms)",
    "exp": "expires (ms): last use + tmo",
    "tmo": "timeout (ms)",
    "mh": "max_history",
    "ac": "auto_clean",
    "msgs": "the newest messages as message texts (see encode_message), oldest first; in a chunk, its messages",
    "n": "messages appended since the last clear",
    "tot": "messages ever appended: the newest seq",
    "pl": "how many messages msgs holds: seqs tot-pl+1 .. tot",
    "sb": "stored bytes of msgs (kept where archiving uses it: max_history above the chunk size)",
    "bk": "first seqs of the archive chunks, ascending",
    "cs": "messages per archive chunk, fixed at creation (every worker cuts the same chunks)",
    "r": "random incarnation: a session re-created under the same id is another one",
    "lk": "the session lock's token ('' when never locked or released)",
    "lu": "the session lock held until (ms); at or before now: unlocked",
    "rq": "the last request ids applied to the session (in a receipt, to it and its delete), oldest first",
    "cq": "the request id of the create that made the session, '' when none (kept in its receipt too)",
    "sm": "the summary compact left in place of the messages up to su",
    "su": "the last seq the summary covers (0: no summary)",
    # archive chunks
    "seq": "the chunk's first seq",
    # lifecycle events, only with them on (see outbox): absent otherwise
    "nd": "when the event sweeper next has something to do with the session (ms; indexed); absent: nothing",
    "ei": "the pending event's id, written by the command that caused it, until the sweeper moves it",
    "et": "the pending event's type",
    "eo": "when the pending event occurred (ms)",
    "ex": "the expiry (ms) the pending event names",
}
LIST_SORT = [("c", -1), ("sid", -1)]  # list: newest first
# (keys, options) of every index: the unique slot per user, the list's equality then its sort (ESR), the TTL
INDEXES: list[tuple[list[tuple[str, int]], dict]] = [
    ([("uid", 1), ("slot", 1)], {"unique": True}),
    ([("uid", 1), ("k", 1), *LIST_SORT], {}),
    ([("pa", 1)], {"expireAfterSeconds": 0}),
]
KINDS: dict[str, str] = {"s": "sessions", "t": "tombstones", "m": "archive chunks", "d": "delete receipts"}  # `k`

ACTIVE, CLOSED, DELETED = "active", "closed", "deleted"  # `st`; deleted: marked by a delete removing it
REQUESTS_KEPT = 100  # request ids a session remembers (PRODUCT: at least its last 100)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ESCAPED = re.compile("[\x00\x01]")
_UNESCAPED = re.compile("\x01[\x02\x03]")
_HEAD = re.compile(r"([a-z]+)([|:])(\d+)(?:#([A-Za-z0-9_.:-]+))?\|")


def key(user_id: str, session_id: str) -> str:
    """A session's _id: session ids cannot contain "@", so the first "@" splits it exactly."""
    return f"{session_id}@{user_id}"


def tomb_key(session_key: str) -> str:
    return "~" + session_key


def chunk_key(session_key: str, nonce: str, first_seq: int) -> str:
    """An archive chunk's _id: per incarnation, so a deleted session's chunks never reappear."""
    return f"{session_key}#{nonce}#{first_seq}"


def receipt_key(session_key: str) -> str:
    """The _id of the receipt a delete with a request_id leaves, so that a repeat is answered."""
    return "!" + session_key


def chunk_seq(chunk_id: str) -> int:
    return int(chunk_id.rsplit("#", 1)[1])


def from_ms(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ms)


# Filter guards and the request-id record: every conditional write builds them here.


def in_slot(max_sessions: int) -> dict:
    """Filter: the document holds one of its user's slots (only numbers match the range)."""
    return {"slot": {"$gte": 0, "$lt": max_sessions}}


def unlocked(now: int) -> dict:
    """Filter: nobody holds the session lock.

    Never `$or`: nx-27017's findAndModify with a top-level $or ignores every other condition and
    updates whatever document the $or matches.
    """
    return {"lu": {"$lte": now}}


def held(lock_token: str, now: int) -> dict:
    """Filter: the lock is held, with this token."""
    return {"lk": lock_token, "lu": {"$gt": now}}


def not_deleted() -> dict:
    """Filter: no delete has marked the session."""
    return {"st": {"$ne": DELETED}}


def request_not_applied(request_id: str) -> dict:
    """Filter: the request id is not among those recorded (not $ne: nx-27017 gets $ne on an array wrong)."""
    return {"rq": {"$nin": [request_id]}}


def record_request(*request_ids: str) -> dict:
    """The `$push` that records request ids, keeping the last REQUESTS_KEPT."""
    return {"rq": {"$each": list(request_ids), "$slice": -REQUESTS_KEPT}}


# Messages are stored as "<role>|<ts>|<content>", so stored bytes are the content's own: MongoDB's 16 MiB
# counts what is stored. NUL (which nx-27017's $push truncates at) and \x01 are escaped as \x01\x03 and
# \x01\x02, after ":" instead of the first "|"; the spec counts those characters twice (message_bytes).
# A message appended under a request_id carries it, "<role>|<ts>#<request id>|<content>": a repeat of
# that request finds the seqs its messages got.


def encode_message(role: str, content: str, ts: int, request_id: str = "") -> str:
    head = f"{ts}#{request_id}" if request_id else str(ts)
    if "\x00" in content or "\x01" in content:
        return f"{role}:{head}|" + _ESCAPED.sub(lambda m: "\x01\x03" if m.group() == "\x00" else "\x01\x02", content)
    return f"{role}|{head}|{content}"


def decode_message(text: str) -> tuple[str, str, int, str]:
    """(role, content, ts, request id or "") of a stored message text."""
    head = _HEAD.match(text)
    content = text[head.end() :]
    if head[2] == ":":
        content = _UNESCAPED.sub(lambda m: "\x00" if m.group() == "\x01\x03" else "\x01", content)
    return head[1], content, int(head[3]), head[4] or ""


def text_bytes(texts: tuple[str, ...] | list[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


def inline_first(s: Session) -> int:
    """The seq of the oldest message kept in the session document."""
    return s.last_seq - s.stored.inline + 1


def inline_texts(s: Session) -> Iterator[tuple[int, str]]:
    """(seq, message text) of the messages kept in the session document (`s` read with them), oldest first."""
    start = inline_first(s)
    return ((start + i, text) for i, text in enumerate(s.stored.texts or ()))


def chunk_texts(chunk: dict) -> Iterator[tuple[int, str]]:
    """(seq, message text) of an archive chunk's messages, oldest first."""
    return ((chunk["seq"] + i, text) for i, text in enumerate(chunk["msgs"]))


def chunk_ranges(s: Session) -> list[tuple[int, int]]:
    """The archive chunks as (first seq, last seq), oldest first."""
    chunks = s.stored.chunks
    if not chunks:
        return []
    ends = [*chunks[1:], inline_first(s)]
    return [(first, end - 1) for first, end in zip(chunks, ends, strict=True)]


def from_doc(doc: dict) -> Session:
    msgs = doc.get("msgs")
    return Session(
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
        message_count=min(doc["n"], doc["mh"]),
        appended=doc["n"],
        last_seq=doc["tot"],
        locked_until=doc.get("lu", 0),
        summary=doc.get("sm", ""),
        summary_upto=doc.get("su", 0),
        stored=Stored(
            key=doc["_id"],
            nonce=doc.get("r", ""),
            slot=doc["slot"],
            purge_ms=doc.get("pms", 0),
            inline=doc["pl"],
            inline_bytes=doc.get("sb", 0),
            chunks=tuple(doc.get("bk", ())),
            patches=len(doc.get("cp", ())),
            chunk_size=doc.get("cs", 0),
            texts=tuple(msgs) if msgs is not None else None,
            lock_token=doc.get("lk", ""),
            requests=tuple(doc.get("rq", ())),
            create_request=doc["cq"] if "cq" in doc else next(iter(doc.get("rq", ())), ""),  # older docs: rq[0]
        ),
    )


def new_doc(
    new: NewSession, *, now: int, slot: int, purge_ms: int, chunk_size: int, request_id: str = "", earlier=()
) -> dict:
    """A fresh session document, version 1; `request_id` is the create's, `earlier` the request ids a
    deleted session of the same id had (its receipt's): none of them applies to this one again."""
    doc = {
        "_id": key(new.user_id, new.session_id),
        "k": "s",
        "uid": new.user_id,
        "sid": new.session_id,
        "st": "active",
        "slot": slot,
        "ctx": new.context,
        "cp": [],
        "csz": len(new.context.encode()),
        "v": 1,
        "c": now,
        "u": now,
        "exp": now + new.timeout_ms,
        "tmo": new.timeout_ms,
        "mh": new.max_history,
        "ac": new.auto_clean,
        "msgs": [],
        "n": 0,
        "tot": 0,
        "pl": 0,
        "sb": 0,
        "bk": [],
        "cs": chunk_size,
        "r": secrets.token_hex(8),
        "lk": "",
        "lu": 0,
        "rq": [*earlier, request_id] if request_id else list(earlier),
        "cq": request_id,
        "sm": "",
        "su": 0,
    }
    if new.auto_clean:
        doc.update(purge_fields(purge_ms))
    return doc


def new_tomb(session_doc: dict, purge_ms: int) -> dict:
    """The tombstone of an auto-clean session: it answers "expired" after the session is purged."""
    return tomb_doc(session_doc["uid"], session_doc["sid"], purge_ms)


def tomb_doc(user_id: str, session_id: str, purge_ms: int) -> dict:
    tid = tomb_key(key(user_id, session_id))
    return {"_id": tid, "k": "t", "uid": user_id, "sid": session_id, "slot": tid, **purge_fields(purge_ms)}


def receipt_fields(user_id: str, session_id: str, purge_ms: int) -> dict:
    """A receipt's fields besides its request ids: what a delete under a request_id leaves for its repeats."""
    rid = receipt_key(key(user_id, session_id))
    return {"k": "d", "uid": user_id, "sid": session_id, "slot": rid, **purge_fields(purge_ms)}


def receipt_doc(user_id: str, session_id: str, purge_ms: int, request_ids: list[str], create_request: str) -> dict:
    rid = receipt_key(key(user_id, session_id))
    made_by = {"cq": create_request} if create_request else {}  # as a delete leaves it
    return {"_id": rid, **receipt_fields(user_id, session_id, purge_ms), "rq": request_ids, **made_by}


def purge_fields(purge_ms: int) -> dict:
    """When the TTL index may remove a document: `pa` (a BSON date, what the index reads) and its ms mirror."""
    return {"pa": from_ms(purge_ms), "pms": purge_ms}


def request_fields(s: Session) -> dict:
    """The request-id fields of a stored session, as its document holds them."""
    return {"rq": list(s.stored.requests), "cq": s.stored.create_request}


def new_chunk(s: Session, first_seq: int, texts: list[str]) -> dict:
    """An archive document holding `texts`, seqs first_seq onwards; it is purged with its session."""
    cid = chunk_key(s.stored.key, s.stored.nonce, first_seq)
    doc = {"_id": cid, "k": "m", "uid": s.user_id, "sid": s.session_id, "slot": cid, "seq": first_seq, "msgs": texts}
    if s.auto_clean and s.stored.purge_ms:  # none yet: the session's expiry event is not recorded (outbox)
        doc.update(purge_fields(s.stored.purge_ms))
    return doc
