"""The core: every operation of every tool, as typed changes asked of the storage. Pure logic.

No Flask, no pymongo, no stored field name: it says what should change under which condition, and
answers an Outcome that the HTTP edge shapes into the tool's output. The only waiting it does is
for a session lock (`lock` with `options.wait`), bounded in time and in threads (LockWaiting).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from app import errors, options, prompt
from app.context_schema import ContextSchema
from app.jsontext import merge_patch
from app.model import (
    Append,
    Applied,
    Change,
    ClearHistory,
    Close,
    Compact,
    Expect,
    Lock,
    MergeContext,
    Message,
    NewSession,
    Outcome,
    ReplaceContext,
    Slide,
    Unlock,
    context_text,
)
from app.tenants import DEFAULT, user_key
from app.validation import Call, field_error
from app.waiting import LockWaiting

if TYPE_CHECKING:
    from app.storage.store import SessionStore

OptionsT = TypeVar("OptionsT", bound=options.Options)
FIRST_PAUSE, LONGEST_PAUSE = 0.05, 0.5  # seconds between tries while waiting for a lock
# A read (get, history) only restarts the timeout: never blocked by the lock, and with w: 1, so a
# replica set without a majority still answers reads (a lost timeout restart costs nothing).
READ = Expect(writable=False, guarded=False)
LOCK_WAIT = "lock_wait"  # event: a `lock` found the session locked and waits for it (once per call)


@dataclass(frozen=True)
class Limits:
    """What the core enforces of the settings itself: what a whole context may be (bounds of options
    are validation's, through validation.parse's `maxima`)."""

    max_context_bytes: int
    context_schema: ContextSchema | None = None  # CONTEXT_SCHEMA: every write's context must satisfy it


class Sessions:
    """Runs a validated Call of one tenant against the store; `events` hears what happened on the way (LOCK_WAIT).

    The call's user is stored under the tenant's user key (app.tenants): from here on every id,
    request id, lock, slot and derived session id belongs to that tenant's user alone.
    """

    def __init__(
        self,
        store: SessionStore,
        limits: Limits,
        waiting: LockWaiting | None = None,
        events: Callable[[str], None] | None = None,
        *,
        tenant: str = DEFAULT,
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.limits = limits
        self.waiting = waiting or LockWaiting(0)
        self.events = events or _ignore
        self.clock: Callable[[], int] = store.clock

    def execute(self, call: Call) -> Outcome:
        if self.tenant != DEFAULT:
            call = dataclasses.replace(call, user_id=user_key(self.tenant, call.user_id))
        try:
            return getattr(self, "op_" + call.operation)(call)
        except errors.OutOfRange as exc:  # refused by the stored state: named as the caller's field
            raise field_error(exc) from None

    # helpers

    def _expect(self, call: Call, version: int | None = None, **conditions) -> Expect:
        """The call's conditions: the expected version, its lock token, its request id."""
        return Expect(version=version, lock_token=call.lock_token, request_id=call.request_id, **conditions)

    def _apply(self, call: Call, change: Change, expect: Expect, now: int, persist: bool, **kw) -> Applied:
        return self.store.apply(call.user_id, call.session_id, change, expect, now=now, persist=persist, **kw)

    def _resuming(self, call: Call, run: Callable[[int], Outcome], *, resume: bool, persist: bool = True) -> Outcome:
        """`run` at the current time; with `resume`, an expired session still stored is first revived
        exactly as touch would (a free slot, else SESSION_LIMIT_EXCEEDED; while it is locked, only with
        the lock's token, reads too), then `run` again."""
        try:
            return run(self.clock())
        except errors.SessionExpired as exc:
            if not resume or exc.session is None:
                raise
        now = self.clock()
        self._apply(call, Slide(revive=True), Expect(live=False, lock_token=call.lock_token), now, persist)
        return dataclasses.replace(run(self.clock()), resumed=True)

    def _context(self, value: dict) -> str:
        """A whole new context's text: within the size limit, and the context schema if there is one."""
        schema = self.limits.context_schema
        return context_text(value, self.limits.max_context_bytes, schema.check if schema else None)

    def _typed_fields(self, call: Call) -> None:
        if self.limits.context_schema is not None:
            self.limits.context_schema.check_fields(call.fields)

    # operations

    def op_create(self, call: Call) -> Outcome:
        opts = _options(call, options.CreateOptions)
        self._typed_fields(call)
        session_id = call.session_id
        if not session_id:  # a request's own id: its repeats find the session it created
            session_id = derived_session_id(call.user_id, call.request_id) if call.request_id else new_session_id()
        new = NewSession(
            user_id=call.user_id,
            session_id=session_id,
            context=self._context(merge_patch(call.context or {}, call.fields or {})),
            timeout_ms=opts.timeout * 1000,
            max_history=opts.max_history,
            auto_clean=opts.auto_clean,
        )
        persist = opts.persist
        now = self.clock()
        caller_id = bool(call.session_id or call.request_id)
        done = self.store.create(new, now=now, persist=persist, caller_id=caller_id, request_id=call.request_id)
        if done.session is None:  # its session was deleted since: never a second one
            return Outcome(at=now, session_id=session_id, status="deleted", created=done.created, replayed=True)
        if not done.created and not done.replayed:  # the caller's id names a stored session: answer it, as a get would
            kept = done.session.expired(now)  # auto_clean false: revived as touch would, not wiped
            change, expect = (Slide(revive=True), Expect(live=False)) if kept else (Slide(), READ)
            done = self.store.apply(call.user_id, session_id, change, expect, now=now, persist=persist)
        return Outcome(at=now, session=done.session, created=done.created, replayed=done.replayed)

    def op_get(self, call: Call) -> Outcome:
        opts = _options(call, options.GetOptions)

        def get(now: int) -> Outcome:
            return Outcome(at=now, session=self._apply(call, Slide(), READ, now, persist=False).session)

        return self._resuming(call, get, resume=opts.resume)

    def op_update(self, call: Call) -> Outcome:
        opts = _options(call, options.UpdateOptions)
        self._typed_fields(call)
        if opts.merge:
            check = self.limits.context_schema.check if self.limits.context_schema else None
            change: Change = MergeContext(call.context or {}, self.limits.max_context_bytes, call.fields, check)
        else:
            change = ReplaceContext(self._context(merge_patch(call.context or {}, call.fields or {})))

        def update(now: int) -> Outcome:
            done = self._apply(call, change, self._expect(call, opts.expected_version), now, opts.persist)
            return Outcome(at=now, session=done.session, replayed=done.replayed)

        return self._resuming(call, update, resume=opts.resume, persist=opts.persist)

    def op_append_messages(self, call: Call) -> Outcome:
        opts = _options(call, options.AppendOptions)
        return self._resuming(call, lambda now: self._append(call, opts, now), resume=opts.resume, persist=opts.persist)

    def _append(self, call: Call, opts: options.AppendOptions, now: int) -> Outcome:
        k = len(call.messages)
        append = Append(call.messages, at=now, reject_overflow=opts.on_overflow == "reject")
        done = self._apply(call, append, self._expect(call, opts.expected_version), now, opts.persist)
        s = done.session
        if done.replayed:  # the messages as the first time stored them, those still in the history
            messages = self.store.messages(s, done.seqs.start, done.seqs.stop - 1) if done.seqs else []
            return Outcome(at=now, session=s, replayed=True, messages=tuple(messages))
        stored = [
            Message(seq, role, content, now) for seq, (role, content) in zip(done.seqs, call.messages, strict=True)
        ]
        before = min(s.appended - k, s.max_history)
        kept = tuple(m for m in stored if m.seq >= s.first_seq)  # max_history may drop some at once
        return Outcome(at=now, session=s, dropped=before + k - s.message_count, messages=kept)

    def op_history(self, call: Call) -> Outcome:
        opts = _options(call, options.HistoryOptions)

        def history(now: int) -> Outcome:
            s = self._apply(call, Slide(), READ, now, persist=False, with_messages=True).session
            last = s.last_seq if opts.cursor is None else min(s.last_seq, opts.cursor - 1)
            page = prompt.page(
                lambda low, high: self.store.messages(s, low, high),
                s,
                last,
                limit=opts.limit,
                roles=set(opts.roles),
                budget=opts.max_tokens,
                as_text=opts.format == "transcript",
            )
            return Outcome(at=now, session=s, **page)

        return self._resuming(call, history, resume=opts.resume)

    def op_compact(self, call: Call) -> Outcome:
        opts = _options(call, options.CompactOptions)
        return self._write(
            call, Compact(call.summary, opts.upto_seq), self._expect(call, opts.expected_version), opts.persist
        )

    def _write(self, call: Call, change: Change, expect: Expect, persist: bool) -> Outcome:
        now = self.clock()
        done = self._apply(call, change, expect, now, persist)
        return Outcome(at=now, session=done.session, replayed=done.replayed, lock_token=done.lock_token)

    def op_clear_history(self, call: Call) -> Outcome:
        opts = _options(call, options.ClearHistoryOptions)
        return self._write(call, ClearHistory(), self._expect(call, opts.expected_version), opts.persist)

    def op_touch(self, call: Call) -> Outcome:
        opts = _options(call, options.TouchOptions)
        # No expiry condition: touch revives an expired session that is still stored.
        revive = Slide(timeout_ms=opts.timeout * 1000 if opts.timeout is not None else None, revive=True)
        return self._write(call, revive, self._expect(call, live=False), opts.persist)

    def op_list(self, call: Call) -> Outcome:
        opts = _options(call, options.ListOptions)
        now = self.clock()
        limit = opts.limit
        found = self.store.list(call.user_id, now, opts.status, limit + 1, opts.cursor)
        page = tuple(found[:limit])
        more = len(found) > limit
        return Outcome(at=now, sessions=page, next_cursor=f"{page[-1].created}:{page[-1].session_id}" if more else "")

    def op_close(self, call: Call) -> Outcome:
        opts = _options(call, options.CloseOptions)
        try:
            return self._write(call, Close(), self._expect(call, opts.expected_version), opts.persist)
        except errors.SessionClosed as exc:
            return Outcome(at=self.clock(), session=exc.session)  # closing twice is harmless

    def op_delete(self, call: Call) -> Outcome:
        now = self.clock()
        expect = self._expect(call, writable=False, live=False)
        opts = _options(call, options.DeleteOptions)
        found, replayed = self.store.delete(call.user_id, call.session_id, expect, now=now, persist=opts.persist)
        if not found:
            raise errors.SessionNotFound()
        return Outcome(at=now, session_id=call.session_id, status="deleted", replayed=replayed)

    def op_lock(self, call: Call) -> Outcome:
        """Take (or with the current token, renew) the lock; wait up to options.wait for a holder."""
        opts = _options(call, options.LockOptions)
        change = Lock(lease_ms=opts.lease * 1000)
        deadline = time.monotonic() + opts.wait
        pause = FIRST_PAUSE
        with contextlib.ExitStack() as stack:
            may_wait = None
            while True:
                try:
                    return self._write(call, change, self._expect(call), opts.persist)
                except errors.SessionLocked as exc:
                    left = deadline - time.monotonic()
                    if may_wait is None and left > 0:
                        may_wait = stack.enter_context(self.waiting.slot())
                    if left <= 0 or not may_wait:
                        raise
                    if pause == FIRST_PAUSE:
                        self.events(LOCK_WAIT)
                    until_free = (exc.session.locked_until - self.clock()) / 1000
                    time.sleep(max(0.0, min(pause, left, until_free)))
                    pause = min(pause * 2, LONGEST_PAUSE)

    def op_unlock(self, call: Call) -> Outcome:
        """Release the lock; a live session's timeout restarts, an expired one is released, not revived."""
        opts = _options(call, options.UnlockOptions)
        try:
            return self._write(call, Unlock(slide=True), self._expect(call, writable=False), opts.persist)
        except errors.SessionExpired as exc:
            if exc.session is None:
                raise
        return self._write(call, Unlock(), self._expect(call, writable=False, live=False), opts.persist)


def _ignore(event: str) -> None:
    pass


def _options(call: Call, kind: type[OptionsT]) -> OptionsT:
    """The call's options as its operation's class (validation.parse built them so)."""
    assert isinstance(call.options, kind)
    return call.options


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(16)


def derived_session_id(user_id: str, request_id: str) -> str:
    """The id a create under `request_id` gives its session: every repeat of it names the same one."""
    return "sess_" + hashlib.sha256(f"{user_id}\0{request_id}".encode()).hexdigest()[:32]
