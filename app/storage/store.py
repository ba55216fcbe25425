"""Sessions in MongoDB behind a typed interface: the core says what should change, this says how. I/O.

Every command is targeted by `uid` (equality in every filter, `uid` in every document), so on a
collection sharded by uid each operation goes to one shard; every write of a request carries its
write concern. No `$expr` (nx-27017 evaluates it over the whole collection) and no aggregate (it
copies every document): only features MongoDB 5.0+ and nx-27017 both handle.
What a write assumes of its session is storage.guesses'; what follows it (bookkeeping, the answer to a
repeat), storage.aftermath's.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import Any

from pymongo import ReturnDocument

from app import errors
from app.events import new_event_id
from app.model import (
    Append,
    Applied,
    Change,
    Close,
    Compact,
    Expect,
    Lock,
    MergeContext,
    Message,
    NewSession,
    Rewind,
    Session,
)
from app.storage import census, documents, forking, layout
from app.storage.aftermath import Aftermath, lock_token_prefix
from app.storage.archive import CHUNK_SIZE, Archive
from app.storage.cache import SessionCache
from app.storage.deletion import Deletion
from app.storage.expiry import Expiry
from app.storage.guesses import Guesses
from app.storage.layout import DELETED, F
from app.storage.mongo import Collections, DuplicateKeyError, storage_errors
from app.storage.outbox import Outbox
from app.storage.retry import LOST_RACES
from app.storage.slots import Slots
from app.storage.transfer import Transfer
from app.storage.turns import Turns
from app.storage.updates import after_update, judge, plan

log = logging.getLogger(__name__)
NO_MESSAGES = layout.without(F.MESSAGES)
SUMMARY = layout.without(F.MESSAGES, F.CONTEXT, F.PATCHES)
TURN_PATIENCE = LOST_RACES.seconds  # a computed write waits this long for its session's turn, then races


class SessionStore:
    """Sessions of one collection; `clock` returns epoch milliseconds."""

    def __init__(
        self,
        collections: Collections,
        clock: Callable[[], int],
        *,
        max_sessions: int = 10,
        purge_grace_ms: int = 300_000,
        retention_ms: int = 7 * 86_400_000,
        default_timeout_ms: int = 1_800_000,
        default_max_history: int = 1000,
        chunk_size: int = CHUNK_SIZE,
        outbox: Outbox | None = None,
    ) -> None:
        self.collections = collections
        self.clock = clock
        self.max_sessions = max_sessions
        self.cache = SessionCache(default_timeout_ms, default_max_history)
        self.outbox = outbox  # lifecycle events: None when they are off (nothing written for them then)
        self.expiry = Expiry(collections, purge_grace_ms, retention_ms, hold_purge=outbox is not None)
        self.archive = Archive(collections, chunk_size)
        self.slots = Slots(collections, max_sessions)
        self.turns = Turns(patience=TURN_PATIENCE)
        self.forks = forking.Forks(
            collections, self.archive, self.expiry, read=self.read, apply=self.apply, create=self.create
        )
        self.deletion = Deletion(collections, self.cache, self.expiry, self._inspect, outbox)
        # looked up on each call, not bound here: a test may stand in for `_inspect` on a live store
        self.guesses = Guesses(self.cache, self.slots, lambda *key, **how: self._inspect(*key, **how))
        self.aftermath = Aftermath(collections, self.expiry, self.archive)

    # the admin CLI's

    def transfer(self) -> Transfer:
        """Export and import of whole sessions on this store's collection."""
        return Transfer(self.collections, self.archive.chunk_size, self.max_sessions)

    def census(self, now: int, tenant: str | None = None) -> dict:
        """What is stored (of one tenant, if given), at a glance (see census.census)."""
        return census.census(self.collections, self.max_sessions, now, tenant)

    def wipe_user(self, user_id: str) -> tuple[dict[str, int], bool]:
        """Delete every document of `user_id`: counts by kind, and whether none is left."""
        return census.wipe_user(self.collections, user_id)

    # reads

    def read(self, user_id: str, session_id: str, *, messages: bool = False) -> Session | None:
        """The stored session in any state, without its messages unless asked; None if there is none."""
        with storage_errors(writing=False):
            where = layout.by_id(layout.key(user_id, session_id), user_id)
            doc = self.collections.read.find_one(where, None if messages else NO_MESSAGES)
        return self._learned(doc) if doc else None

    def _inspect(self, key: str, user_id: str, *, messages: bool = False) -> tuple[Session | None, bool]:
        """The stored session (any state) and whether its tombstone exists: why a write missed."""
        ids = layout.by_ids([key, layout.tomb_key(key)], user_id)
        with storage_errors(writing=False):
            docs = list(self.collections.read.find(ids, None if messages else NO_MESSAGES))
        session = next((self._learned(d) for d in docs if d.get(F.KIND) == layout.SESSION), None)
        return session, any(d.get(F.KIND) == layout.TOMBSTONE for d in docs)

    def list(self, user_id: str, now: int, status: str, limit: int, after: tuple[int, str] | None) -> list[Session]:
        """The user's sessions, newest first; `after` is the (created, session id) a page ended at."""
        query: dict = {**layout.of_user(user_id, layout.SESSION), **layout.not_deleted()}
        if status == "expired":
            query[F.EXPIRES] = {"$lte": now}
        elif status in (layout.ACTIVE, layout.CLOSED):
            query[F.STATUS] = status
            query[F.EXPIRES] = {"$gt": now}
        if after is not None:
            query["$or"] = [{F.CREATED: {"$lt": after[0]}}, {F.CREATED: after[0], F.SESSION: {"$lt": after[1]}}]
        with storage_errors(writing=False):
            cursor = self.collections.read.find(query, SUMMARY).sort(layout.LIST_SORT).limit(limit)
            return [layout.from_doc(d) for d in cursor]

    def delete(self, user_id: str, session_id: str, expect: Expect, *, now: int, persist: bool) -> tuple[bool, bool]:
        """Remove the session and every document of it: (anything was deleted, a repeat of an earlier delete)."""
        return self.deletion.delete(user_id, session_id, expect, now=now, persist=persist)

    def messages(self, s: Session, first: int, last: int) -> builtins.list[Message]:  # `list` is a method here
        """The visible messages with seqs in [first, last]; `s` from a write asked `with_messages`."""
        return self.archive.messages(s, first, last)

    def _learned(self, doc: dict) -> Session:
        session = layout.from_doc(doc)
        self.cache.learn(session)
        return session

    # writes

    def create(
        self,
        new: NewSession,
        *,
        now: int,
        persist: bool,
        caller_id: bool,
        request_id: str = "",
        template: dict | None = None,
    ) -> Applied:
        """Insert a new session in a free slot, or answer the live one stored under a caller's id
        (a repeat when `request_id` is among its requests, `created` if it was the create's); a repeat
        of a request applied to a session since deleted is answered with no session (`Applied.session`);
        `template`: the new document already built but for its slot (a fork's)."""
        key = layout.key(new.user_id, new.session_id)
        earlier: tuple[str, ...] = ()
        for _ in LOST_RACES.rounds():
            if caller_id:
                existing, receipt = self.deletion.with_receipt(key, new.user_id)
                if receipt is not None and request_id in receipt.get(F.REQUESTS, ()):
                    return Applied(None, replayed=True, created=receipt.get(F.CREATE_REQUEST) == request_id)
                earlier = tuple(receipt.get(F.REQUESTS, ())) if receipt else ()
                if existing is not None and existing.status == DELETED:  # a delete did not finish: finish it
                    self.deletion.remove(key, new.user_id, new.session_id, persist, now=now)
                    continue
                if existing is not None:
                    keep = not existing.expired(now) or (existing.status == layout.ACTIVE and not existing.auto_clean)
                    if keep:  # live, or kept expired (auto_clean false) for the caller to revive
                        repeat = bool(request_id) and request_id in existing.stored.requests
                        made_it = repeat and existing.stored.create_request == request_id
                        return Applied(existing, replayed=repeat, created=made_it)
                    if self.outbox is not None:  # its session.expired first: nothing is removed unannounced
                        self.outbox.settle_now(key, new.user_id, now)
                    self.expiry.delete_expired(key, new.user_id, new.session_id, now, persist=persist)
                    continue

            def build(slot: int, earlier: tuple[str, ...] = earlier) -> list[dict]:
                purge = self.expiry.purge_for(now + new.timeout_ms, new.timeout_ms)
                size, kept = self.archive.chunk_size, earlier[-(layout.REQUESTS_KEPT - 1) :]
                doc = (
                    {**template, F.SLOT: slot}
                    if template is not None
                    else documents.new_doc(
                        new, now=now, slot=slot, purge_ms=purge, chunk_size=size, request_id=request_id, earlier=kept
                    )
                )
                if self.outbox is not None:
                    self.outbox.hold_purge(doc)
                return [doc, documents.new_tomb(doc, purge + self.expiry.retention_ms)] if new.auto_clean else [doc]

            outcome = self.slots.insert(new.user_id, build, now, persist=persist)
            if isinstance(outcome, Session):
                self.cache.learn(outcome)
                return Applied(outcome, created=True)
        raise errors.StorageUnavailable()

    def apply(self, user_id: str, session_id: str, change: Change, expect: Expect, **how: Any) -> Applied:
        """`_apply`; a write computed from the stored state first takes its turn within this process."""
        computed = isinstance(change, Compact | Rewind) or (isinstance(change, MergeContext) and change.computed)
        with self.turns.turn(layout.key(user_id, session_id)) if computed else contextlib.nullcontext():
            return self._apply(user_id, session_id, change, expect, **how)

    def _apply(
        self,
        user_id: str,
        session_id: str,
        change: Change,
        expect: Expect,
        *,
        now: int,
        persist: bool,
        with_messages: bool = False,
    ) -> Applied:
        """One atomic conditional write that also restarts the timeout; the precise error if it cannot apply.

        A repeat of a request already applied to the session applies nothing: it is answered from
        what is stored (`replayed`), with the seqs or the lock token the request got the first time.
        """
        key = layout.key(user_id, session_id)
        if isinstance(change, Lock):  # renewing keeps the holder's token; a request's token is recognisable
            token = expect.lock_token or lock_token_prefix(expect.request_id) + secrets.token_hex(12)
            change = dataclasses.replace(change, token=token)
        if isinstance(change, Close) and self.outbox is not None:  # the close records its event itself
            change = Close(event_id=new_event_id())
        next_due = self.outbox.next_due if self.outbox is not None else None
        guess = self.guesses.first(key, user_id, change, expect, now)
        for races in LOST_RACES.rounds():
            try:
                where, update = plan(key, user_id, change, expect, guess, now, self.max_sessions, next_due)
            except errors.ServiceError:  # the change refused by the state it was computed from
                if not guess.cached:
                    raise
                # the remembered state may be stale: judge what is stored
                stored, repeat = judge(self._inspect(key, user_id), change, expect, now)
                if repeat:
                    return self.aftermath.replayed(stored, change, expect, now, persist)
                guess = dataclasses.replace(guess.learn(stored), base=stored, cached=False)
                continue
            with storage_errors():
                try:
                    before = self.collections.write(persist).find_one_and_update(
                        where,
                        update,
                        projection=None if with_messages else NO_MESSAGES,
                        return_document=ReturnDocument.BEFORE,
                    )
                except DuplicateKeyError:  # the slot a revival chose was taken meanwhile
                    before = None
            if before:
                if before.get(F.STATUS) == DELETED:  # a read raced a delete that has marked it
                    raise errors.SessionNotFound()
                s = self._learned(after_update(before, update))
                self.aftermath.after(s, change, guess, before, persist)
                if isinstance(change, Append):
                    seqs = range(s.last_seq - len(change.messages) + 1, s.last_seq + 1)
                    return Applied(s, seqs=seqs, races=races)
                if isinstance(change, Rewind):
                    dropped = guess.base.message_count - s.message_count if guess.base else 0
                    return Applied(s, dropped=dropped, races=races)
                return Applied(s, lock_token=change.token if isinstance(change, Lock) else "", races=races)
            replay_append = isinstance(change, Append) and bool(expect.request_id)
            inspected = self._inspect(key, user_id, messages=replay_append or isinstance(change, Rewind))
            stored, repeat = judge(inspected, change, expect, now)
            if repeat:
                return self.aftermath.replayed(stored, change, expect, now, persist)
            if isinstance(change, Close) and self.outbox is not None:  # an expiry event waits: moved, then closed
                self.outbox.flush(key, user_id, now)
            guess = self.guesses.corrected(guess, stored, change, now, persist)
        log.warning("storage unavailable: a %s lost every race of the retry policy", type(change).__name__)
        raise errors.StorageUnavailable()

    def fork(self, source_id: str, target: NewSession, **how: Any) -> Applied:
        """A new session from `source_id` (see app.storage.forking)."""
        return self.forks.fork(source_id, target, **how)
