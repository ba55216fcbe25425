"""The core: every operation of every tool, as typed changes asked of the storage. Pure logic.

No Flask, no pymongo, no stored field name: it says what should change under which condition, and
answers an Outcome that the HTTP edge shapes into the tool's output. The only waiting it does is
for a session lock (`lock` with `options.wait`), bounded in time and in threads (app.waiting). How a
call's change reaches the store is app.writes; the ids it makes, app.session_ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from app import errors, options, prompt
from app.edits import apply_edits
from app.jsontext import merge_patch
from app.model import (
    Append,
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
    Rewind,
    Slide,
    Unlock,
)
from app.session_ids import derived_session_id, new_session_id
from app.tenants import DEFAULT, user_key
from app.validation import Call, field_error
from app.waiting import LockWaiting
from app.writes import Limits, Writes

if TYPE_CHECKING:
    from app.storage.store import SessionStore

OptionsT = TypeVar("OptionsT", bound=options.Options)
# A read (get, history) only restarts the timeout: never blocked by the lock, and with w: 1, so a
# replica set without a majority still answers reads (a lost timeout restart costs nothing).
READ = Expect(writable=False, guarded=False)
LOCK_WAIT = "lock_wait"  # event: a `lock` found the session locked and waits for it (once per call)
WRITE_RACE = "write_race"  # event: a conditional write lost a race and was re-applied on the fresher state


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
        self.writes = Writes(store, limits, lambda: self.events(WRITE_RACE))

    def execute(self, call: Call) -> Outcome:
        if self.tenant != DEFAULT:
            call = dataclasses.replace(call, user_id=user_key(self.tenant, call.user_id))
        try:
            operation: Callable[[Call], Outcome] = getattr(self, "op_" + call.operation)
            return operation(call)
        except errors.OutOfRange as exc:  # refused by the stored state: named as the caller's field
            raise field_error(exc) from None

    # operations

    def op_create(self, call: Call) -> Outcome:
        opts = _options(call, options.CreateOptions)
        self.writes.typed_fields(call)
        session_id = call.session_id
        if not session_id:  # a request's own id: its repeats find the session it created
            session_id = derived_session_id(call.user_id, call.request_id) if call.request_id else new_session_id()
        new = NewSession(
            user_id=call.user_id,
            session_id=session_id,
            context=self.writes.context(merge_patch(call.context or {}, call.fields or {})),
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
            return Outcome(at=now, session=self.writes.apply(call, Slide(), READ, now, persist=False).session)

        return self.writes.resuming(call, get, resume=opts.resume)

    def op_update(self, call: Call) -> Outcome:
        opts = _options(call, options.UpdateOptions)
        self.writes.typed_fields(call)
        if opts.merge:
            check = self.limits.context_schema.check if self.limits.context_schema else None
            limit = self.limits.max_context_bytes
            change: Change = MergeContext(call.context or {}, limit, call.fields, check, call.edits)
        else:  # the edits' result does not depend on what is stored: computed here, once
            replaced = merge_patch(call.context or {}, call.fields or {})
            change = ReplaceContext(self.writes.context(apply_edits(replaced, call.edits)))

        def update(now: int) -> Outcome:
            done = self.writes.apply(call, change, self.writes.expect(call, opts.expected_version), now, opts.persist)
            return Outcome(at=now, session=done.session, replayed=done.replayed)

        return self.writes.resuming(call, update, resume=opts.resume, persist=opts.persist)

    def op_append_messages(self, call: Call) -> Outcome:
        opts = _options(call, options.AppendOptions)
        return self.writes.resuming(
            call, lambda now: self._append(call, opts, now), resume=opts.resume, persist=opts.persist
        )

    def _append(self, call: Call, opts: options.AppendOptions, now: int) -> Outcome:
        k = len(call.messages)
        append = Append(call.messages, at=now, reject_overflow=opts.on_overflow == "reject")
        done = self.writes.apply(call, append, self.writes.expect(call, opts.expected_version), now, opts.persist)
        s = done.session
        assert s is not None  # only a create's repeat answers without a session
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
            s = self.writes.apply(call, Slide(), READ, now, persist=False, with_messages=True).session
            assert s is not None  # only a create's repeat answers without a session
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

        return self.writes.resuming(call, history, resume=opts.resume)

    def op_compact(self, call: Call) -> Outcome:
        opts = _options(call, options.CompactOptions)
        return self.writes.write(
            call, Compact(call.summary, opts.upto_seq), self.writes.expect(call, opts.expected_version), opts.persist
        )

    def op_clear_history(self, call: Call) -> Outcome:
        opts = _options(call, options.ClearHistoryOptions)
        return self.writes.write(call, ClearHistory(), self.writes.expect(call, opts.expected_version), opts.persist)

    def op_touch(self, call: Call) -> Outcome:
        opts = _options(call, options.TouchOptions)
        # No expiry condition: touch revives an expired session that is still stored.
        revive = Slide(timeout_ms=opts.timeout * 1000 if opts.timeout is not None else None, revive=True)
        return self.writes.write(call, revive, self.writes.expect(call, live=False), opts.persist)

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
            return self.writes.write(call, Close(), self.writes.expect(call, opts.expected_version), opts.persist)
        except errors.SessionClosed as exc:
            return Outcome(at=self.clock(), session=exc.session)  # closing twice is harmless

    def op_delete(self, call: Call) -> Outcome:
        now = self.clock()
        expect = self.writes.expect(call, writable=False, live=False)
        opts = _options(call, options.DeleteOptions)
        found, replayed = self.store.delete(call.user_id, call.session_id, expect, now=now, persist=opts.persist)
        if not found:
            raise errors.SessionNotFound()
        return Outcome(at=now, session_id=call.session_id, status="deleted", replayed=replayed)

    def op_lock(self, call: Call) -> Outcome:
        """Take (or with the current token, renew) the lock; wait up to options.wait for a holder."""
        opts = _options(call, options.LockOptions)
        change = Lock(lease_ms=opts.lease * 1000)
        return self.waiting.retrying(
            lambda: self.writes.write(call, change, self.writes.expect(call), opts.persist),
            opts.wait,
            self.clock,
            lambda: self.events(LOCK_WAIT),
        )

    def op_rewind(self, call: Call) -> Outcome:
        opts = _options(call, options.RewindOptions)
        now = self.clock()
        done = self.writes.apply(
            call, Rewind(opts.to_seq), self.writes.expect(call, opts.expected_version), now, opts.persist
        )
        return Outcome(at=now, session=done.session, replayed=done.replayed, dropped=done.dropped)

    def op_fork(self, call: Call) -> Outcome:
        opts = _options(call, options.ForkOptions)
        new_id = opts.new_session_id or (
            derived_session_id(call.user_id, f"fork\0{call.session_id}\0{call.request_id}")
            if call.request_id
            else new_session_id()
        )
        source = self.store.read(call.user_id, call.session_id)
        if source is None:  # its settings to copy; the fork judges the source again (expired, deleted)
            raise errors.SessionNotFound()
        target = NewSession(
            user_id=call.user_id,
            session_id=new_id,
            context="",
            timeout_ms=opts.timeout * 1000 if opts.timeout is not None else source.timeout_ms,
            max_history=opts.max_history if opts.max_history is not None else source.max_history,
            auto_clean=opts.auto_clean if opts.auto_clean is not None else source.auto_clean,
        )
        now = self.clock()
        at = opts.at_seq or None  # 0: everything
        done = self.store.fork(
            call.session_id, target, at_seq=at, now=now, persist=opts.persist, request_id=call.request_id
        )
        if done.session is None:  # a repeat of a fork whose session was deleted since: never a second one
            return Outcome(at=now, session_id=new_id, status="deleted", created=done.created, replayed=True)
        return Outcome(at=now, session=done.session, created=done.created, replayed=done.replayed)

    def op_unlock(self, call: Call) -> Outcome:
        """Release the lock; a live session's timeout restarts, an expired one is released, not revived."""
        opts = _options(call, options.UnlockOptions)
        try:
            return self.writes.write(call, Unlock(slide=True), self.writes.expect(call, writable=False), opts.persist)
        except errors.SessionExpired as exc:
            if exc.session is None:
                raise
        return self.writes.write(call, Unlock(), self.writes.expect(call, writable=False, live=False), opts.persist)


def _ignore(event: str) -> None:
    pass


def _options(call: Call, kind: type[OptionsT]) -> OptionsT:
    """The call's options as its operation's class (validation.parse built them so)."""
    assert isinstance(call.options, kind)
    return call.options
