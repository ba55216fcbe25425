"""The core: every operation of every tool, as typed changes asked of the storage. Pure logic.

No Flask, no pymongo, no stored field name: it says what should change under which condition, and
answers an Outcome that the HTTP edge shapes into the tool's output.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app import errors
from app.model import (
    Append,
    ClearHistory,
    Close,
    Expect,
    MergeContext,
    Message,
    NewSession,
    Outcome,
    ReplaceContext,
    Session,
    Slide,
    context_text,
)
from app.validation import Call

if TYPE_CHECKING:
    from app.storage.store import SessionStore


@dataclass(frozen=True)
class Limits:
    """The server-side limits (settings), each defaulting to the spec's value."""

    max_sessions: int
    timeout: int
    max_timeout: int
    max_history: int
    max_context_bytes: int


class Sessions:
    """Runs a validated Call against the store."""

    def __init__(self, store: SessionStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.clock: Callable[[], int] = store.clock

    def execute(self, call: Call) -> Outcome:
        return getattr(self, "op_" + call.operation)(call)

    def _apply(self, call: Call, change, expect: Expect | None = None, **kw) -> Session:
        """One change of the call's session, expected at `expected_version` if the call gives one."""
        expect = expect or Expect(version=call.options.get("expected_version"))
        persist = call.options.get("persist", True)
        return self.store.apply(call.user_id, call.session_id, change, expect, persist=persist, **kw)

    def _check_caps(self, call: Call) -> None:
        timeout = call.options.get("timeout")
        if timeout is not None and timeout > self.limits.max_timeout:
            raise errors.InvalidArgument("options.timeout", "maximum", self.limits.max_timeout)
        if call.options.get("max_history", 0) > self.limits.max_history:
            raise errors.InvalidArgument("options.max_history", "maximum", self.limits.max_history)

    # operations

    def op_create(self, call: Call) -> Outcome:
        self._check_caps(call)
        new = NewSession(
            user_id=call.user_id,
            session_id=call.session_id or "sess_" + secrets.token_hex(16),
            context=context_text(call.context or {}, self.limits.max_context_bytes),
            timeout_ms=call.options.get("timeout", self.limits.timeout) * 1000,
            max_history=call.options.get("max_history", self.limits.max_history),
            auto_clean=call.options.get("auto_clean", True),
        )
        persist = call.options.get("persist", True)
        s, created = self.store.create(new, persist=persist, caller_id=bool(call.session_id))
        now = self.clock()
        if not created:  # the caller's id names a live session: answer it, as a get would
            s = self.store.apply(s.user_id, s.session_id, Slide(), Expect(writable=False), now=now, persist=persist)
        return Outcome(at=now, session=s, created=created)

    def op_get(self, call: Call) -> Outcome:
        now = self.clock()
        return Outcome(at=now, session=self._apply(call, Slide(), Expect(writable=False), now=now))

    def op_update(self, call: Call) -> Outcome:
        now = self.clock()
        if call.options.get("merge", True):
            change = MergeContext(call.context, self.limits.max_context_bytes)
        else:
            change = ReplaceContext(context_text(call.context, self.limits.max_context_bytes))
        return Outcome(at=now, session=self._apply(call, change, now=now))

    def op_append_messages(self, call: Call) -> Outcome:
        now = self.clock()
        k = len(call.messages)
        reject = call.options.get("on_overflow") == "reject"
        s = self._apply(call, Append(call.messages, at=now, reject_overflow=reject), now=now)
        before = min(s.appended - k, s.max_history)
        first = s.last_seq - k + 1
        messages = tuple(Message(first + i, role, content, now) for i, (role, content) in enumerate(call.messages))
        return Outcome(at=now, session=s, dropped=before + k - s.message_count, messages=messages)

    def op_history(self, call: Call) -> Outcome:
        cursor = call.options.get("cursor")
        if cursor is not None and not cursor.isdigit():
            raise errors.InvalidArgument("options.cursor", "pattern")
        now = self.clock()
        s = self._apply(call, Slide(), Expect(writable=False), now=now, with_messages=True)
        last = s.last_seq if cursor is None else min(s.last_seq, int(cursor) - 1)
        first = max(s.first_seq, last - call.options["limit"] + 1)
        messages = tuple(self.store.messages(s, first, last))
        more = first <= last and first > s.first_seq
        return Outcome(at=now, session=s, messages=messages, next_cursor=str(first) if more else "")

    def op_clear_history(self, call: Call) -> Outcome:
        now = self.clock()
        return Outcome(at=now, session=self._apply(call, ClearHistory(), now=now))

    def op_touch(self, call: Call) -> Outcome:
        self._check_caps(call)
        timeout = call.options.get("timeout")
        now = self.clock()
        # No expiry condition: touch revives an expired session that is still stored.
        revive = Slide(timeout_ms=timeout * 1000 if timeout is not None else None, revive=True)
        return Outcome(at=now, session=self._apply(call, revive, Expect(live=False), now=now))

    def op_list(self, call: Call) -> Outcome:
        after = None
        cursor = call.options.get("cursor")
        if cursor is not None:
            created, _, sid = cursor.partition(":")
            if not created.isdigit() or not sid:
                raise errors.InvalidArgument("options.cursor", "pattern")
            after = (int(created), sid)
        now = self.clock()
        limit = call.options["limit"]
        found = self.store.list(call.user_id, now, call.options.get("status", "all"), limit + 1, after)
        page = tuple(found[:limit])
        more = len(found) > limit
        return Outcome(at=now, sessions=page, next_cursor=f"{page[-1].created}:{page[-1].session_id}" if more else "")

    def op_close(self, call: Call) -> Outcome:
        now = self.clock()
        try:
            s = self._apply(call, Close(), now=now)
        except errors.SessionClosed as exc:
            s = exc.session  # closing twice is harmless: answer the closed session
        return Outcome(at=now, session=s)

    def op_delete(self, call: Call) -> Outcome:
        if not self.store.delete(call.user_id, call.session_id, persist=call.options.get("persist", True)):
            raise errors.SessionNotFound()
        return Outcome(at=self.clock(), session_id=call.session_id, status="deleted")
