"""The values the core, the storage and the answers share. Pure: no I/O, no stored field names.

The core asks the storage for a `Change` of one session under an `Expect`ation and gets a `Session`
back; it answers with an `Outcome`, which the HTTP edge shapes into the tool's output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app import errors, jsontext, seqs
from app.edits import Edit, apply_edits


@dataclass(frozen=True)
class Message:
    seq: int
    role: str
    content: str
    ts: int  # epoch milliseconds, set by the server


@dataclass(frozen=True)
class Stored:
    """The storage's own state of a session, besides what the core sees: only app.storage reads it."""

    key: str
    nonce: str
    slot: int | str  # a slot number, or the session's own key when it holds none
    purge_ms: int
    inline: int  # pl
    inline_bytes: int  # sb
    chunks: tuple[int, ...] = ()
    patches: int = 0
    chunk_size: int = 0
    texts: tuple[str, ...] | None = None  # msgs, when asked for
    lock_token: str = ""
    requests: tuple[str, ...] = ()
    create_request: str = ""  # the request id of the create that made the session

    @property
    def holds_slot(self) -> bool:
        return type(self.slot) is int


@dataclass(frozen=True)
class Session:
    """A stored session as the core sees it; `stored` is the storage's own state, opaque to the core."""

    user_id: str
    session_id: str
    status: str  # "active" or "closed"; expiry is computed from `expires`
    context: str  # JSON text
    version: int
    created: int  # epoch milliseconds
    updated: int
    expires: int
    timeout_ms: int
    max_history: int
    auto_clean: bool
    message_count: int  # visible messages: the newest min(appended, max_history)
    appended: int  # messages appended since the last clear (less those a rewind dropped)
    last_seq: int  # the highest seq ever given (0 before the first): the next append continues after it
    locked_until: int = 0  # epoch milliseconds; the lock is held while it is in the future
    summary: str = ""  # what compact left in place of the messages up to summary_upto
    summary_upto: int = 0
    gaps: seqs.Gaps = ()  # seqs a rewind dropped: no message holds them (see app.seqs)
    forked_from: str = ""  # the session this one was forked from ("" if not made by fork)
    forked_at_seq: int = 0
    stored: Stored = field(kw_only=True, compare=False, repr=False)

    @property
    def first_seq(self) -> int:
        """The seq of the oldest message the history shows."""
        return seqs.first_visible(self.last_seq, self.message_count, self.gaps)

    def expired(self, now: int) -> bool:
        return self.expires <= now

    def effective_status(self, now: int) -> str:
        return "expired" if self.expired(now) else self.status

    def locked(self, now: int) -> bool:
        return self.locked_until > now


@dataclass(frozen=True)
class NewSession:
    user_id: str
    session_id: str
    context: str
    timeout_ms: int
    max_history: int
    auto_clean: bool


# Changes: what one atomic write does to a session. Every one restarts the sliding timeout.


@dataclass(frozen=True)
class Slide:
    """Only restart the timeout (get, history), optionally with a new one (touch, which also revives)."""

    timeout_ms: int | None = None
    revive: bool = False  # an expired session that is still stored comes back, taking a free slot


@dataclass(frozen=True)
class ReplaceContext:
    text: str


@dataclass(frozen=True)
class MergeContext:
    """JSON Merge Patch `patch` (then typed `fields`, then `edits`) into the context; the result must
    stay within `limit` bytes and, if `check` is given, satisfy it (the storage then merges it before
    writing; with edits always, on the state it compares-and-sets)."""

    patch: dict
    limit: int
    fields: dict | None = None
    check: Callable[[dict], dict] | None = None
    edits: tuple[Edit, ...] = ()  # applied last, in order, all or nothing

    @property
    def text(self) -> str:
        return jsontext.dumps(self.patch)

    @property
    def computed(self) -> bool:
        """Whether the result must be computed from the stored context (never left on the patch log)."""
        return bool(self.edits) or self.check is not None

    def onto(self, context: str) -> str:
        """The merged (then edited) context's text, refused if over the limit or against the check."""
        merged = jsontext.merge_patch(jsontext.loads(context), self.patch)
        merged = jsontext.merge_patch(merged, self.fields or {})
        return context_text(apply_edits(merged, self.edits), self.limit, self.check)


@dataclass(frozen=True)
class Append:
    messages: tuple[tuple[str, str], ...]  # (role, content)
    at: int  # the messages' timestamp
    reject_overflow: bool = False  # refuse (HISTORY_LIMIT) rather than drop the oldest


@dataclass(frozen=True)
class ClearHistory:
    pass


@dataclass(frozen=True)
class Close:
    """End the session; with lifecycle events on, the storage names the session.closed event it records."""

    event_id: str = ""


@dataclass(frozen=True)
class Lock:
    """Take the session lock for `lease_ms`, or renew it when Expect.lock_token is the holder's.

    The storage chooses the token (`token` is what it will write)."""

    lease_ms: int
    token: str = ""


@dataclass(frozen=True)
class Unlock:
    """Release the lock; with `slide`, also restart the timeout (only ever asked of a live session)."""

    slide: bool = False


@dataclass(frozen=True)
class Compact:
    """Keep `summary` in place of the messages with seq <= upto; later ones stay, appended meanwhile or not."""

    summary: str
    upto: int


@dataclass(frozen=True)
class Rewind:
    """Drop every message with seq > to_seq; their seqs become a gap and are never given again."""

    to_seq: int


Change = Slide | ReplaceContext | MergeContext | Append | ClearHistory | Close | Lock | Unlock | Compact | Rewind


@dataclass(frozen=True)
class Expect:
    """The conditions a write needs; the storage answers the precise error when one fails."""

    writable: bool = True  # not closed
    live: bool = True  # not expired
    version: int | None = None  # exactly this version (expected_version)
    guarded: bool = True  # a write the session lock guards (reads are never blocked)
    lock_token: str = ""  # the token the caller holds the lock with, if any
    request_id: str = ""  # applied at most once per session: a repeat is answered, not applied


@dataclass(frozen=True)
class Applied:
    """What a write left: the session, and whether it was a repeat of an earlier request_id.

    No session: a create's repeat of a request applied to a session that has since been deleted."""

    session: Session | None
    replayed: bool = False
    created: bool = False
    seqs: range = range(0)  # the seqs an append's messages got (the first time, for a repeat)
    dropped: int = 0  # the messages a rewind dropped
    races: int = 0  # conditional writes that missed because another write came first, then re-applied
    lock_token: str = ""  # the token a lock took or renewed (the first time, for a repeat)


@dataclass(frozen=True)
class Outcome:
    """What an operation answers; `at` is the time its expiry figures are counted from."""

    at: int
    session: Session | None = None
    session_id: str = ""  # when no session is returned (delete)
    status: str = ""
    created: bool = False
    replayed: bool = False
    resumed: bool = False
    lock_token: str = ""
    dropped: int = 0
    messages: tuple[Message, ...] = ()
    sessions: tuple[Session, ...] = ()
    next_cursor: str = ""
    transcript: str = ""
    tokens: int = 0


def context_text(value: dict, limit: int, check: Callable[[dict], dict] | None = None) -> str:
    """The compact JSON text of a context, refused if its UTF-8 bytes pass `limit` or `check` refuses
    it; `check` answers the value to store (the context schema's, with integer fields as integers)."""
    if check is not None:
        value = check(value)
    text = jsontext.dumps(value)
    size = len(text.encode("utf-8"))
    if size > limit:
        raise errors.ContextTooLarge(size=size, limit=limit)
    return text
