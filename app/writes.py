"""How one call's change reaches the store: its conditions, the write, a revival on resume, a new context's
checks. Pure logic: no Flask, no pymongo, no stored field name (the store it is given does the I/O).

app.core's `Sessions` runs every operation through one `Writes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app import errors
from app.context_schema import ContextSchema
from app.model import Applied, Change, Expect, Outcome, Slide, context_text
from app.validation import Call

if TYPE_CHECKING:
    from app.storage.store import SessionStore


@dataclass(frozen=True)
class Limits:
    """What the core enforces of the settings itself: what a whole context may be (bounds of options
    are validation's, through validation.parse's `maxima`)."""

    max_context_bytes: int
    context_schema: ContextSchema | None = None  # CONTEXT_SCHEMA: every write's context must satisfy it


class Writes:
    """One tenant's calls applied to the store; `on_race` hears of each race a write lost and re-applied."""

    def __init__(self, store: SessionStore, limits: Limits, on_race: Callable[[], None]) -> None:
        self.store = store
        self.limits = limits
        self.on_race = on_race
        self.clock: Callable[[], int] = store.clock

    def expect(self, call: Call, version: int | None = None, **conditions: bool) -> Expect:
        """The call's conditions: the expected version, its lock token, its request id."""
        return Expect(version=version, lock_token=call.lock_token, request_id=call.request_id, **conditions)

    def apply(self, call: Call, change: Change, expect: Expect, now: int, persist: bool, **kw: bool) -> Applied:
        done = self.store.apply(call.user_id, call.session_id, change, expect, now=now, persist=persist, **kw)
        for _ in range(done.races):
            self.on_race()
        return done

    def write(self, call: Call, change: Change, expect: Expect, persist: bool) -> Outcome:
        """`apply` now, answered as the session it left, with the repeat flag and any lock token."""
        now = self.clock()
        done = self.apply(call, change, expect, now, persist)
        return Outcome(at=now, session=done.session, replayed=done.replayed, lock_token=done.lock_token)

    def resuming(self, call: Call, run: Callable[[int], Outcome], *, resume: bool, persist: bool = True) -> Outcome:
        """`run` at the current time; with `resume`, an expired session still stored is first revived
        exactly as touch would (a free slot, else SESSION_LIMIT_EXCEEDED; while it is locked, only with
        the lock's token, reads too), then `run` again."""
        try:
            return run(self.clock())
        except errors.SessionExpired as exc:
            if not resume or exc.session is None:
                raise
        now = self.clock()
        self.apply(call, Slide(revive=True), Expect(live=False, lock_token=call.lock_token), now, persist)
        return dataclasses.replace(run(self.clock()), resumed=True)

    def context(self, value: dict) -> str:
        """A whole new context's text: within the size limit, and the context schema if there is one."""
        schema = self.limits.context_schema
        return context_text(value, self.limits.max_context_bytes, schema.check if schema else None)

    def typed_fields(self, call: Call) -> None:
        """The call's `fields` checked against the context schema, if there is one."""
        if self.limits.context_schema is not None:
            self.limits.context_schema.check_fields(call.fields)
