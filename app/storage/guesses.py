"""What a conditional write of the store assumes of its session, first and after a miss. Reads only.

The timeout and max_history this process last saw (storage.cache), the stored state a computed
write starts from, a free slot for a revival; reads go through the `inspect` it is given (the
store's), slots through storage.slots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from app.model import Change, Compact, Expect, MergeContext, Rewind, Session, Slide
from app.storage.cache import SessionCache
from app.storage.slots import Slots
from app.storage.updates import PATCH_LOG_BYTES, Guess, judge

Inspect = Callable[..., tuple[Session | None, bool]]  # (key, user_id, *, messages) -> (session, tombstone)


class Guesses:
    """The store's assumptions for `updates.plan`: `first` before a write, `corrected` after a miss."""

    def __init__(self, cache: SessionCache, slots: Slots, inspect: Inspect) -> None:
        self.cache = cache
        self.slots = slots
        self.inspect = inspect

    def first(self, key: str, user_id: str, change: Change, expect: Expect, now: int) -> Guess:
        """The timeout and max_history this process last saw; for a merge, whether to merge here."""
        guess = Guess(*self.cache.shape(key))
        if isinstance(change, Compact | Rewind):  # from what is stored now: it counts the messages it keeps
            inspected = self.inspect(key, user_id, messages=isinstance(change, Rewind))
            stored, _ = judge(inspected, change, expect, now)
            return dataclasses.replace(guess.learn(stored), base=stored)
        if not isinstance(change, MergeContext):
            return guess
        known = self.cache.recall(key)
        text = known.context if known is not None else ""
        known_large = len(text) * 4 > PATCH_LOG_BYTES and len(text.encode()) > PATCH_LOG_BYTES
        if not change.computed and len(change.text.encode()) <= PATCH_LOG_BYTES and not known_large:
            return guess  # onto the patch log, unapplied: no read
        # Merged here and compared-and-set, from the state this process last saw if it can be current.
        cached = known is not None and (expect.version is None or known.version == expect.version)
        if known is None or not cached:  # a repeat is recognised when the write misses
            known, _ = judge(self.inspect(key, user_id), change, expect, now)
        return dataclasses.replace(guess.learn(known), base=known, cached=cached)

    def corrected(self, guess: Guess, stored: Session, change: Change, now: int, persist: bool) -> Guess:
        """What the next round assumes, after a miss that no error explains: a race, or a stale guess."""
        guess = guess.learn(stored)
        if isinstance(change, MergeContext | Compact | Rewind):  # a conflict, or onto what is stored
            return dataclasses.replace(guess, base=stored)
        if isinstance(change, Slide) and change.revive and not stored.stored.holds_slot:
            slot = self.slots.free_slot(stored.user_id, now, exclude=stored.stored.key, persist=persist)
            return dataclasses.replace(guess, slot=slot, base=stored)
        return dataclasses.replace(guess, slot=None, base=None)
