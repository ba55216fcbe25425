"""One conditional write of a session: a Change under an Expect, as a MongoDB filter and update. Pure.

Every filter is targeted: `_id` and `uid` equality, so on a collection sharded by uid it goes to one
shard. A write states what it assumes of the session (its timeout, its max_history, the state a
computed context came from); when it misses, `diagnose` says why from what is stored, and the store
either answers that error or corrects its assumption and writes again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from app import errors, seqs
from app.model import (
    Append,
    Change,
    ClearHistory,
    Close,
    Compact,
    Expect,
    Lock,
    MergeContext,
    ReplaceContext,
    Rewind,
    Session,
    Slide,
    Unlock,
)
from app.storage import layout
from app.storage.layout import F
from app.storage.messages import DROPPED, encode_message, inline_first, text_bytes

PATCH_LOG_BYTES = 64 * 1024  # contexts up to this size take merges unapplied: one round trip, no read


@dataclass(frozen=True)
class Guess:
    """What a write assumes of the stored session; corrected from what is stored after a miss."""

    timeout_ms: int
    max_history: int
    base: Session | None = None  # a merge computed here, from this state (compare-and-set)
    slot: int | None = None  # revive: the free slot to take
    cached: bool = False  # `base` is what this process remembered, not what was just read

    def learn(self, stored: Session) -> Guess:
        return replace(self, timeout_ms=stored.timeout_ms, max_history=stored.max_history)


def plan(
    key: str,
    user_id: str,
    change: Change,
    expect: Expect,
    guess: Guess,
    now: int,
    max_sessions: int,
    next_due: Callable[[int, int], int] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (filter, update) of one atomic write; every write restarts the sliding timeout.

    With lifecycle events on, `next_due(expires, timeout)` is when the event sweeper must look at the
    session next: set by every write that moves the expiry, in the same command (see storage.outbox).

    A request id is checked and recorded by the same command (`$nin` in the filter, `$push` in the
    update): of any number of concurrent repeats, exactly one applies.
    """
    where: dict[str, Any] = layout.by_id(key, user_id)
    sets: dict[str, Any] = {}
    inc: dict[str, int] = {}
    push: dict[str, Any] = {}
    if expect.writable:
        where[F.STATUS] = layout.ACTIVE
    if expect.live:
        where[F.EXPIRES] = {"$gt": now}
    if expect.version is not None:
        where[F.VERSION] = expect.version
    if isinstance(change, Slide) and change.timeout_ms is not None:
        sets.update({F.TIMEOUT: change.timeout_ms, F.EXPIRES: now + change.timeout_ms})
    elif not isinstance(change, Unlock) or change.slide:  # unlock slides only a live session (never revives)
        where[F.TIMEOUT] = guess.timeout_ms
        sets[F.EXPIRES] = now + guess.timeout_ms
    if next_due is not None and F.EXPIRES in sets:
        sets[F.NEXT_DUE] = next_due(sets[F.EXPIRES], sets.get(F.TIMEOUT, guess.timeout_ms))
    if not isinstance(change, Slide | Lock | Unlock):
        sets[F.UPDATED] = now
        inc[F.VERSION] = 1
    # a repeat recognised from the state read: the write below will miss, and be answered as a replay
    replaying = bool(expect.request_id) and guess.base is not None and expect.request_id in guess.base.stored.requests
    if expect.request_id:
        where.update(layout.request_not_applied(expect.request_id))
        push.update(layout.record_request(expect.request_id))
    if expect.guarded and expect.lock_token:
        where.update(layout.held(expect.lock_token, now))
    elif expect.guarded:
        where.update(layout.unlocked(now))

    if isinstance(change, Slide):
        if change.revive and guess.slot is None:
            where.update(layout.in_slot(max_sessions))
        elif change.revive:
            assert guess.base is not None  # a slot is chosen from the state read (SessionStore._corrected)
            where.update({F.SLOT: key, F.VERSION: guess.base.version})  # its slot was given up while it was expired
            sets[F.SLOT] = guess.slot
    elif isinstance(change, ReplaceContext):
        sets.update(layout.context_fields(change.text))
    elif isinstance(change, MergeContext) and guess.base is not None:
        text = guess.base.context if replaying else change.onto(guess.base.context)
        sets.update(layout.context_fields(text))
        where.update({F.NONCE: guess.base.stored.nonce, F.VERSION: guess.base.version})
    elif isinstance(change, MergeContext):
        # Stored unapplied, under a bound that keeps the merged context within the limit.
        patch = change.text
        size = len(patch.encode())
        push[F.PATCHES] = patch
        inc[F.CONTEXT_BYTES] = size
        where[F.CONTEXT_BYTES] = {"$lte": min(change.limit, PATCH_LOG_BYTES) - size}
    elif isinstance(change, Append):
        texts = [encode_message(role, content, change.at, expect.request_id) for role, content in change.messages]
        k = len(texts)
        push[F.MESSAGES] = {"$each": texts}
        inc.update({F.APPENDED: k, F.LAST_SEQ: k, F.INLINE: k, F.INLINE_BYTES: text_bytes(texts)})
        if change.reject_overflow:
            where.update({F.MAX_HISTORY: guess.max_history, F.APPENDED: {"$lte": guess.max_history - k}})
    elif isinstance(change, ClearHistory):
        # bk stays: its chunks are out of view now, and a clear retried after a failed drop finds them;
        # the summary goes with the messages it summed up
        # gaps stay: all below any seq to come
        sets.update({F.MESSAGES: [], F.APPENDED: 0, F.INLINE: 0, F.INLINE_BYTES: 0, F.SUMMARY: "", F.SUMMARY_UPTO: 0})
    elif isinstance(change, Close):
        sets.update({F.STATUS: layout.CLOSED, F.SLOT: key})
        if change.event_id:  # recorded by this very command; a pending event is moved before (storage.outbox)
            sets.update(
                {
                    F.EVENT_ID: change.event_id,
                    F.EVENT_TYPE: "session.closed",
                    F.EVENT_AT: now,
                    F.EVENT_EXPIRY: sets[F.EXPIRES],
                }
            )
            where[F.EVENT_ID] = {"$exists": False}
    elif isinstance(change, Lock):
        sets.update({F.LOCK_TOKEN: change.token, F.LOCKED_UNTIL: now + change.lease_ms})
    elif isinstance(change, Unlock):
        sets.update({F.LOCK_TOKEN: "", F.LOCKED_UNTIL: 0})
    elif isinstance(change, Compact):
        base = guess.base  # compacted from the state read: any append since makes this miss, and retry
        assert base is not None  # SessionStore._first_guess reads it
        if change.upto > base.last_seq and not replaying:
            if not base.last_seq:
                raise errors.OutOfRange("compact.upto", "no_messages")
            raise errors.OutOfRange("compact.upto", "upto_last", base.last_seq)
        if change.upto < base.summary_upto and not replaying:  # the new summary replaces one that covered more
            raise errors.OutOfRange("compact.upto", "upto_summary", base.summary_upto)
        where.update({F.LAST_SEQ: base.last_seq, F.APPENDED: base.appended})
        kept = seqs.live_between(change.upto + 1, base.last_seq, base.gaps)
        sets.update(
            {F.SUMMARY: change.summary, F.SUMMARY_UPTO: change.upto, F.APPENDED: max(0, min(base.appended, kept))}
        )
    elif isinstance(change, Rewind):  # noqa: SIM102 -- one branch a change type, as above
        if not replaying:
            assert guess.base is not None  # SessionStore._first_guess reads it
            sets.update(rewound(guess.base, change.to_seq))
            where.update(
                {F.LAST_SEQ: guess.base.last_seq, F.APPENDED: guess.base.appended, F.INLINE: guess.base.stored.inline}
            )
    update: dict[str, Any] = {"$set": sets}
    if inc:
        update["$inc"] = inc
    if push:
        update["$push"] = push
    return where, update


def rewound(base: Session, to_seq: int) -> dict:
    """The fields a rewind to `to_seq` sets, from `base` read with its messages: the seqs after it
    become a gap, their inline texts are blanked, and only the messages left count."""
    if to_seq < base.summary_upto:  # the summary already covers those turns
        raise errors.OutOfRange("rewind.to", "minimum", base.summary_upto)
    top = base.last_seq
    to = min(to_seq, top)
    dropped = seqs.live_between(max(to + 1, base.first_seq), top, base.gaps)
    start = inline_first(base)
    texts = [DROPPED if start + i > to else t for i, t in enumerate(base.stored.texts or ())]
    gaps = seqs.cut(base.gaps, to, top, base.first_seq)
    return {
        F.APPENDED: base.message_count - dropped,
        F.GAPS: seqs.to_stored(gaps),
        F.MESSAGES: texts,
        F.INLINE_BYTES: text_bytes(texts),
    }


def diagnose(stored: Session | None, tomb: bool, change: Change, expect: Expect, now: int) -> bool:
    """Why a write missed, from what is stored: True for a repeat of an applied request, an error
    raised for a failed condition, or False (a stale assumption or a race: correct and retry)."""
    if stored is None:
        raise errors.SessionExpired() if tomb else errors.SessionNotFound()
    if stored.status == layout.DELETED:  # a delete has marked it and is removing it
        raise errors.SessionNotFound()
    if expect.request_id and expect.request_id in stored.stored.requests:
        return True
    if expect.live and stored.expired(now):
        raise errors.SessionExpired(session=stored)
    if expect.writable and stored.status == layout.CLOSED:
        raise errors.SessionClosed(session=stored)
    if expect.guarded and expect.lock_token:
        if stored.stored.lock_token != expect.lock_token or not stored.locked(now):
            raise errors.LockNotHeld(session=stored)
    elif expect.guarded and stored.locked(now):
        raise errors.SessionLocked(session=stored)
    if expect.version is not None and stored.version != expect.version:
        raise errors.VersionConflict(session=stored, current=stored.version)
    full = isinstance(change, Append) and stored.appended > stored.max_history - len(change.messages)
    if full and isinstance(change, Append) and change.reject_overflow:
        raise errors.HistoryLimit(session=stored, limit=stored.max_history)
    return False


def judge(found: tuple[Session | None, bool], change: Change, expect: Expect, now: int) -> tuple[Session, bool]:
    """Diagnose a miss from what `_inspect`-style reads found: (the stored session, whether the write is a repeat)."""
    stored, tomb = found
    repeat = diagnose(stored, tomb, change, expect, now)
    assert stored is not None  # diagnose raised: nothing is stored
    return stored, repeat


def after_update(doc: dict, update: dict) -> dict:
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
