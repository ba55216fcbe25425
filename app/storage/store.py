"""Sessions in MongoDB behind a typed interface: the core says what should change, this says how. I/O.

Every command is targeted by `uid` (equality in every filter, `uid` in every document), so on a
collection sharded by uid each operation goes to one shard; every write of a request carries its
write concern. No `$expr` (nx-27017 evaluates it over the whole collection) and no aggregate (it
copies every document): only features MongoDB 5.0+ and nx-27017 both handle.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app import errors
from app.model import Append, Change, ClearHistory, Expect, MergeContext, Message, NewSession, Session, Slide
from app.storage import layout
from app.storage.archive import INLINE, Archive
from app.storage.client import Collections, storage_errors
from app.storage.expiry import Expiry
from app.storage.memory import Memory
from app.storage.retry import LOST_RACES
from app.storage.slots import Slots
from app.storage.updates import PATCH_LOG_BYTES, Guess, applied, diagnose, plan

log = logging.getLogger(__name__)
NO_MESSAGES = {"msgs": 0}
SUMMARY = {"msgs": 0, "ctx": 0, "cp": 0}
FOLD_AFTER = 8  # patches in the context's log before a worker folds them into the stored text
LIST_INDEX = [("uid", 1), ("k", 1), ("c", -1), ("sid", -1)]  # list: equality, then its sort (ESR)


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
        inline: int = INLINE,
    ) -> None:
        self.collections = collections
        self.clock = clock
        self.max_sessions = max_sessions
        self.memory = Memory(default_timeout_ms, default_max_history)
        self.expiry = Expiry(collections, purge_grace_ms, retention_ms)
        self.archive = Archive(collections, inline)
        self.slots = Slots(collections, max_sessions)

    def ensure_indexes(self) -> None:
        """Create the indexes (idempotent); called once at start-up, never per request."""
        coll = self.collections.read
        with storage_errors(writing=False):
            coll.create_index([("uid", 1), ("slot", 1)], unique=True)
            coll.create_index(LIST_INDEX)
            coll.create_index([("pa", 1)], expireAfterSeconds=0)
            for name, index in coll.index_information().items():
                if [k for k, _ in index["key"]] == ["uid", "k", "c"]:  # the list index before it served the sort
                    coll.drop_index(name)

    # reads

    def read(self, user_id: str, session_id: str) -> Session | None:
        """The stored session in any state, without its messages; None if there is none."""
        with storage_errors(writing=False):
            doc = self.collections.read.find_one({"_id": layout.key(user_id, session_id), "uid": user_id}, NO_MESSAGES)
        return self._learned(doc) if doc else None

    def _inspect(self, key: str, user_id: str) -> tuple[Session | None, bool]:
        """The stored session (any state) and whether its tombstone exists: why a write missed."""
        with storage_errors(writing=False):
            docs = list(
                self.collections.read.find({"_id": {"$in": [key, layout.tomb_key(key)]}, "uid": user_id}, NO_MESSAGES)
            )
        session = next((self._learned(d) for d in docs if d.get("k") == "s"), None)
        return session, any(d.get("k") == "t" for d in docs)

    def list(self, user_id: str, now: int, status: str, limit: int, after: tuple[int, str] | None) -> list[Session]:
        """The user's sessions, newest first; `after` is the (created, session id) a page ended at."""
        query: dict = {"uid": user_id, "k": "s"}
        if status == "expired":
            query["exp"] = {"$lte": now}
        elif status in ("active", "closed"):
            query["st"] = status
            query["exp"] = {"$gt": now}
        if after is not None:
            query["$or"] = [{"c": {"$lt": after[0]}}, {"c": after[0], "sid": {"$lt": after[1]}}]
        with storage_errors(writing=False):
            cursor = self.collections.read.find(query, SUMMARY).sort([(k, d) for k, d in LIST_INDEX[2:]]).limit(limit)
            return [layout.from_doc(d) for d in cursor]

    def messages(self, s: Session, first: int, last: int) -> list[Message]:
        """The visible messages with seqs in [first, last]; `s` from a write asked `with_messages`."""
        return self.archive.messages(s, first, last)

    def _learned(self, doc: dict) -> Session:
        session = layout.from_doc(doc)
        self.memory.learn(session)
        return session

    # writes

    def create(self, new: NewSession, *, persist: bool, caller_id: bool) -> tuple[Session, bool]:
        """Insert a new session in a free slot, or return the live one stored under a caller's id."""
        key = layout.key(new.user_id, new.session_id)
        for _ in LOST_RACES.rounds():
            now = self.clock()
            if caller_id:
                existing = self.read(new.user_id, new.session_id)
                if existing is not None:
                    if not existing.expired(now):
                        return existing, False
                    self.expiry.delete_expired(key, new.user_id, new.session_id, now, persist=persist)
                    continue

            def build(slot: int, now: int = now) -> list[dict]:
                purge = self.expiry.purge_for(now + new.timeout_ms, new.timeout_ms)
                doc = layout.new_doc(new, now=now, slot=slot, purge_ms=purge, chunk_size=self.archive.inline)
                return [doc, layout.new_tomb(doc, purge + self.expiry.retention_ms)] if new.auto_clean else [doc]

            outcome = self.slots.insert(new.user_id, build, now, persist=persist)
            if isinstance(outcome, Session):
                self.memory.learn(outcome)
                return outcome, True
        raise errors.StorageUnavailable()

    def apply(
        self,
        user_id: str,
        session_id: str,
        change: Change,
        expect: Expect,
        *,
        now: int,
        persist: bool,
        with_messages: bool = False,
    ) -> Session:
        """One atomic conditional write that also restarts the timeout; the precise error if it cannot apply."""
        key = layout.key(user_id, session_id)
        guess = self._first_guess(key, user_id, change, expect, now)
        for _ in LOST_RACES.rounds():
            where, update = plan(key, user_id, change, expect, guess, now, self.max_sessions)
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
                s = self._learned(applied(before, update))
                self._after(s, change, guess, before, persist)
                return s
            stored, tomb = self._inspect(key, user_id)
            diagnose(stored, tomb, change, expect, now)
            guess = self._corrected(guess, stored, change, now, persist)
        raise errors.StorageUnavailable()

    def _first_guess(self, key: str, user_id: str, change: Change, expect: Expect, now: int) -> Guess:
        """The timeout and max_history this process last saw; for a merge, whether to merge here."""
        guess = Guess(*self.memory.shape(key))
        if not isinstance(change, MergeContext):
            return guess
        known = self.memory.recall(key)
        text = known.context if known is not None else ""
        known_large = len(text) * 4 > PATCH_LOG_BYTES and len(text.encode()) > PATCH_LOG_BYTES
        if len(change.text.encode()) <= PATCH_LOG_BYTES and not known_large:
            return guess  # onto the patch log, unapplied: no read
        # Merged here and compared-and-set, from the state this process last saw if it can be current.
        if known is None or (expect.version is not None and known.version != expect.version):
            known, tomb = self._inspect(key, user_id)
            diagnose(known, tomb, change, expect, now)
        return dataclasses.replace(guess.learn(known), base=known)

    def _corrected(self, guess: Guess, stored: Session, change: Change, now: int, persist: bool) -> Guess:
        """What the next round assumes, after a miss that no error explains: a race, or a stale guess."""
        guess = guess.learn(stored)
        if isinstance(change, MergeContext):  # a conflict, or the log's bound: merge here onto what is stored
            return dataclasses.replace(guess, base=stored)
        if isinstance(change, Slide) and change.revive and not stored.stored.holds_slot:
            slot = self.slots.free_slot(stored.user_id, now, exclude=stored.stored.key, persist=persist)
            return dataclasses.replace(guess, slot=slot, base=stored)
        return dataclasses.replace(guess, slot=None, base=None)

    def _after(self, s: Session, change: Change, guess: Guess, before: dict, persist: bool) -> None:
        """What a write leaves to do: the purge date, folding the patch log, archiving, a cleared archive."""
        if not self.expiry.keep_purgeable_after(s, persist=persist):
            raise errors.SessionExpired()  # the reaper removed it before this write landed
        if isinstance(change, MergeContext) and guess.base is None and s.stored.patches >= FOLD_AFTER:
            with storage_errors():
                self.collections.write(persist).update_one(
                    {"_id": s.stored.key, "uid": s.user_id, "r": s.stored.nonce, "v": s.version},
                    {"$set": {"ctx": s.context, "cp": [], "csz": len(s.context.encode())}},
                )
        elif isinstance(change, Append):
            try:
                self.archive.shrink(s, persist=persist)
            except errors.ServiceError:  # the append is stored: answer it; the next append shrinks again
                log.warning("could not archive or trim a session; the next append will")
        elif isinstance(change, ClearHistory):
            self.archive.drop_cleared(layout.from_doc(before), persist=persist)

    def delete(self, user_id: str, session_id: str, *, persist: bool) -> bool:
        """Remove the session, its tombstone and every archive chunk of it, listed or not; False if none."""
        self.memory.forget(layout.key(user_id, session_id))
        with storage_errors():
            result = self.collections.write(persist).delete_many({"uid": user_id, "sid": session_id})
        return result.deleted_count > 0
