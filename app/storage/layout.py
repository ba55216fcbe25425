"""The stored documents: field names, indexes, ids, filters and update fragments, documents -> values. Pure.

The one module that spells a stored field name (`F`); the others build their filters and updates
from `F` and the helpers here (tests/test_layout_names.py checks it); new documents are built in
storage.documents.

Times are integer epoch milliseconds (nx-27017 turns `$set` datetimes into strings, and integers
compare the same everywhere); only `pa`, the TTL field, is a BSON date. `exp` is always exactly the
last use plus `tmo`: every sliding write sets it and filters on the `tmo` it assumed.
The visible history is the newest min(n, mh) seqs. `msgs` keeps the newest of them inline; older
ones move, in whole chunks of `cs`, to archive documents that only `history` pages reaching back read
(`storage.messages` encodes them and says where each seq lives).
"""

from __future__ import annotations

import datetime as dt

from app import jsontext, seqs
from app.model import Session, Stored


class F:
    """The stored field names, by meaning, and what each holds: other modules spell a field only as F.<NAME>."""

    # every document
    # session '<sid>@<uid>', tombstone '~' + that, archive chunk that + '#<r>#<first seq>', receipt '!' + that
    ID = "_id"
    KIND = "k"  # kind: 's' session, 't' tombstone, 'm' archive chunk, 'd' receipt of a delete
    USER = "uid"  # user id: in every document and every filter (the shard key)
    SESSION = "sid"  # session id
    SLOT = "slot"  # 0..MAX_SESSIONS-1 while the session holds one of its user's active slots, else its own _id
    PURGE_AT = "pa"  # purge date, a BSON date (the TTL index); absent: never purged
    PURGE_MS = "pms"  # pa in epoch ms
    # sessions
    STATUS = "st"  # 'active', 'closed', or 'deleted' while a delete removes it (expired is computed from exp)
    CONTEXT = "ctx"  # the context's JSON text, before the patches in cp
    PATCHES = "cp"  # JSON Merge Patch texts still to apply to ctx, oldest first
    CONTEXT_BYTES = "csz"  # bound on the merged context's bytes: ctx's plus the patches' (a patch never grows it more)
    VERSION = "v"  # version, +1 on every change
    CREATED = "c"  # created (ms)
    UPDATED = "u"  # updated (ms)
    EXPIRES = "exp"  # expires (ms): last use + tmo
    TIMEOUT = "tmo"  # timeout (ms)
    MAX_HISTORY = "mh"  # max_history
    AUTO_CLEAN = "ac"  # auto_clean
    # the newest messages as message texts (see storage.messages), oldest first; in a chunk, its messages
    MESSAGES = "msgs"
    APPENDED = "n"  # messages appended since the last clear
    LAST_SEQ = "tot"  # messages ever appended: the newest seq
    INLINE = "pl"  # how many messages msgs holds: seqs tot-pl+1 .. tot
    INLINE_BYTES = "sb"  # stored bytes of msgs (kept where archiving uses it: max_history above the chunk size)
    CHUNKS = "bk"  # first seqs of the archive chunks, ascending
    CHUNK_SIZE = "cs"  # messages per archive chunk, fixed at creation (every worker cuts the same chunks)
    NONCE = "r"  # random incarnation: a session re-created under the same id is another one
    LOCK_TOKEN = "lk"  # the session lock's token ('' when never locked or released)
    LOCKED_UNTIL = "lu"  # the session lock held until (ms); at or before now: unlocked
    REQUESTS = "rq"  # the last request ids applied to the session (in a receipt, to it and its delete), oldest first
    CREATE_REQUEST = "cq"  # the request id of the create that made the session, '' when none (kept in its receipt)
    SUMMARY = "sm"  # the summary compact left in place of the messages up to su
    SUMMARY_UPTO = "su"  # the last seq the summary covers (0: no summary)
    GAPS = "gp"  # seqs a rewind dropped, flat [first, last, ...] of ascending ranges (app.seqs); absent: none
    FORKED_FROM = "ff"  # the session id this one was forked from; absent: not made by fork
    FORKED_AT = "fa"  # the seq the fork was cut at
    # archive chunks
    FIRST_SEQ = "seq"  # the chunk's first seq
    # lifecycle events, only with them on (see storage.outbox): absent otherwise
    NEXT_DUE = "nd"  # when the event sweeper next has something to do with the session (ms; indexed); absent: nothing
    EVENT_ID = "ei"  # the pending event's id, written by the command that caused it, until the sweeper moves it
    EVENT_TYPE = "et"  # the pending event's type
    EVENT_AT = "eo"  # when the pending event occurred (ms)
    EVENT_EXPIRY = "ex"  # the expiry (ms) the pending event names


FIELDS = frozenset(v for k, v in vars(F).items() if k.isupper())  # every stored field name
LIST_SORT = [(F.CREATED, -1), (F.SESSION, -1)]  # list: newest first
# (keys, options) of every index: the unique slot per user, the list's equality then its sort (ESR), the TTL
INDEXES: list[tuple[list[tuple[str, int]], dict]] = [
    ([(F.USER, 1), (F.SLOT, 1)], {"unique": True}),
    ([(F.USER, 1), (F.KIND, 1), *LIST_SORT], {}),
    ([(F.PURGE_AT, 1)], {"expireAfterSeconds": 0}),
]
SESSION, TOMBSTONE, CHUNK, RECEIPT = "s", "t", "m", "d"  # the kinds (`k`) of document
KINDS = {SESSION: "sessions", TOMBSTONE: "tombstones", CHUNK: "archive chunks", RECEIPT: "delete receipts"}

ACTIVE, CLOSED, DELETED = "active", "closed", "deleted"  # `st`; deleted: marked by a delete removing it
REQUESTS_KEPT = 100  # request ids a session remembers (PRODUCT: at least its last 100)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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


# Filters and the request-id record: every conditional write builds them here.


def by_id(doc_id: str, user_id: str) -> dict:
    """Filter: one document by its _id, targeted by its user (one shard)."""
    return {F.ID: doc_id, F.USER: user_id}


def by_ids(doc_ids: list[str], user_id: str | None = None) -> dict:
    """Filter: the documents with these _ids (of one user, when given: one shard)."""
    where: dict = {F.ID: {"$in": doc_ids}}
    if user_id is not None:
        where[F.USER] = user_id
    return where


def of_session(user_id: str, session_id: str, kind: str | dict) -> dict:
    """Filter: the documents of one kind (or a condition on the kind) that belong to a session."""
    return {F.USER: user_id, F.SESSION: session_id, F.KIND: kind}


def of_user(user_id: str | None, kind: str | dict | None = None) -> dict:
    """Filter: a user's documents (every user's when None), of one kind if given."""
    where: dict = {} if user_id is None else {F.USER: user_id}
    if kind is not None:
        where[F.KIND] = kind
    return where


def only(*fields: str) -> dict:
    """Projection: just these fields (and _id)."""
    return dict.fromkeys(fields, 1)


def without(*fields: str) -> dict:
    """Projection: everything but these fields."""
    return dict.fromkeys(fields, 0)


def in_slot(max_sessions: int) -> dict:
    """Filter: the document holds one of its user's slots (only numbers match the range)."""
    return {F.SLOT: {"$gte": 0, "$lt": max_sessions}}


def unlocked(now: int) -> dict:
    """Filter: nobody holds the session lock.

    Never `$or`: nx-27017's findAndModify with a top-level $or ignores every other condition and
    updates whatever document the $or matches.
    """
    return {F.LOCKED_UNTIL: {"$lte": now}}


def held(lock_token: str, now: int) -> dict:
    """Filter: the lock is held, with this token."""
    return {F.LOCK_TOKEN: lock_token, F.LOCKED_UNTIL: {"$gt": now}}


def not_deleted() -> dict:
    """Filter: no delete has marked the session."""
    return {F.STATUS: {"$ne": DELETED}}


def request_not_applied(request_id: str) -> dict:
    """Filter: the request id is not among those recorded (not $ne: nx-27017 gets $ne on an array wrong)."""
    return {F.REQUESTS: {"$nin": [request_id]}}


def record_request(*request_ids: str) -> dict:
    """The `$push` that records request ids, keeping the last REQUESTS_KEPT."""
    return {F.REQUESTS: {"$each": list(request_ids), "$slice": -REQUESTS_KEPT}}


def context_fields(text: str) -> dict:
    """The `$set` of a context stored whole: its text, no patches, its size."""
    return {F.CONTEXT: text, F.PATCHES: [], F.CONTEXT_BYTES: len(text.encode())}


def from_doc(doc: dict) -> Session:
    msgs = doc.get(F.MESSAGES)
    return Session(
        user_id=doc[F.USER],
        session_id=doc[F.SESSION],
        status=doc[F.STATUS],
        context=jsontext.fold(doc.get(F.CONTEXT, "{}"), doc.get(F.PATCHES, ())),
        version=doc[F.VERSION],
        created=doc[F.CREATED],
        updated=doc[F.UPDATED],
        expires=doc[F.EXPIRES],
        timeout_ms=doc[F.TIMEOUT],
        max_history=doc[F.MAX_HISTORY],
        auto_clean=doc[F.AUTO_CLEAN],
        message_count=min(doc[F.APPENDED], doc[F.MAX_HISTORY]),
        appended=doc[F.APPENDED],
        last_seq=doc[F.LAST_SEQ],
        locked_until=doc.get(F.LOCKED_UNTIL, 0),
        summary=doc.get(F.SUMMARY, ""),
        summary_upto=doc.get(F.SUMMARY_UPTO, 0),
        gaps=seqs.from_stored(doc.get(F.GAPS, ())),
        forked_from=doc.get(F.FORKED_FROM, ""),
        forked_at_seq=doc.get(F.FORKED_AT, 0),
        stored=Stored(
            key=doc[F.ID],
            nonce=doc.get(F.NONCE, ""),
            slot=doc[F.SLOT],
            purge_ms=doc.get(F.PURGE_MS, 0),
            inline=doc[F.INLINE],
            inline_bytes=doc.get(F.INLINE_BYTES, 0),
            chunks=tuple(doc.get(F.CHUNKS, ())),
            patches=len(doc.get(F.PATCHES, ())),
            chunk_size=doc.get(F.CHUNK_SIZE, 0),
            texts=tuple(msgs) if msgs is not None else None,
            lock_token=doc.get(F.LOCK_TOKEN, ""),
            requests=tuple(doc.get(F.REQUESTS, ())),
            create_request=doc.get(F.CREATE_REQUEST, next(iter(doc.get(F.REQUESTS, ())), "")),  # older: rq[0]
        ),
    )


def purge_fields(purge_ms: int) -> dict:
    """When the TTL index may remove a document: `pa` (a BSON date, what the index reads) and its ms mirror."""
    return {F.PURGE_AT: from_ms(purge_ms), F.PURGE_MS: purge_ms}
