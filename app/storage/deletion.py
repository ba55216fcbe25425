"""Deleting a session: marked first, then its documents removed by the session's key. I/O (pymongo).

A collaborator the store holds, like Archive and Expiry. The session is marked deleted first (its
slot freed, the request id recorded): a write racing the delete then finds it gone, not expired, and
no new session can take the id until the tombstone and chunks are removed; the session itself goes
last. A delete leaves a receipt of the request ids applied to the session and to the delete: a
repeat is answered even after a new session took the id, and a new session under the id starts
with them (see SessionStore.create), so none applies twice.
"""

from __future__ import annotations

from collections.abc import Callable

from app import errors
from app.events import DELETED as DELETED_EVENT
from app.events import new_event_id
from app.model import Expect, Session, Slide
from app.storage import documents, layout
from app.storage.cache import SessionCache
from app.storage.expiry import Expiry
from app.storage.layout import F
from app.storage.mongo import Collections, DuplicateKeyError, storage_errors
from app.storage.outbox import Outbox
from app.storage.retry import LOST_RACES
from app.storage.updates import diagnose

Inspect = Callable[[str, str], tuple[Session | None, bool]]  # (key, user id) -> (stored session, tombstone?)


class Deletion:
    def __init__(
        self, collections: Collections, cache: SessionCache, expiry: Expiry, inspect: Inspect, outbox: Outbox | None
    ) -> None:
        self.collections = collections
        self.cache = cache
        self.expiry = expiry
        self.inspect = inspect
        self.outbox = outbox

    def delete(self, user_id: str, session_id: str, expect: Expect, *, now: int, persist: bool) -> tuple[bool, bool]:
        """Remove the session (if the lock allows), its tombstone and every archive chunk of it, listed
        or not: (anything was deleted, a repeat of an earlier delete)."""
        key = layout.key(user_id, session_id)
        self.cache.forget(key)
        rid = expect.request_id
        if rid and self._receipted(key, user_id, rid):  # a repeat, even after a new session took the id
            return True, True
        where: dict = {**layout.by_id(key, user_id), **layout.not_deleted()}
        mark: dict = {"$set": {F.STATUS: layout.DELETED, F.SLOT: key}}
        if rid:
            where.update(layout.request_not_applied(rid))
            mark["$push"] = layout.record_request(rid)
        where.update(layout.held(expect.lock_token, now) if expect.lock_token else layout.unlocked(now))
        if self.outbox is not None:  # session.deleted is recorded by the mark itself
            where[F.EVENT_ID] = {"$exists": False}
            mark["$set"].update(self.outbox.pending(new_event_id(), DELETED_EVENT, now, 0))
        for _ in LOST_RACES.rounds():
            with storage_errors():
                requests = layout.only(F.REQUESTS, F.CREATE_REQUEST)
                gone = self.collections.write(persist).find_one_and_update(where, mark, requests)
            stored = None
            if gone is None:
                stored, tomb = self.inspect(key, user_id)
                if stored is not None and rid and rid in stored.stored.requests:
                    return True, True  # a concurrent repeat marked it
                if stored is not None and stored.status != layout.DELETED:
                    if diagnose(stored, tomb, Slide(), expect, now):
                        return True, True
                    if self.outbox is not None:  # an event waits in the session (closed, expiring): moved first
                        self.outbox.flush(key, user_id, now)
                    continue  # a race with another write: the session is there and deletable
                if stored is None and rid and self._receipted(key, user_id, rid):
                    return True, True  # a concurrent repeat finished: its receipt precedes the removal
            # Before the session goes, a receipt of every request applied to it: a repeat of any of
            # them then finds one or the other, and never applies to a session created later.
            source = gone if gone is not None else documents.request_fields(stored) if stored is not None else {}
            applied = [*source.get(F.REQUESTS, ()), *([rid] if rid else [])]
            if applied:
                self._receipt(key, user_id, session_id, applied, source.get(F.CREATE_REQUEST, ""), now, persist)
            removed = self.remove(key, user_id, session_id, persist, now=now, own=self.outbox is None)
            return gone is not None or removed, False
        raise errors.StorageUnavailable()

    def remove(self, key: str, user_id: str, session_id: str, persist: bool, *, now: int, own: bool = True) -> bool:
        """The documents of a session marked deleted: tombstone and chunks, then the session; any removed?

        With events on, the marked session carries its session.deleted: the event sweeper removes it
        once the event is in the deliveries (`own` False: no round trip here); anyone else finishing
        the removal moves the event first.
        """
        coll = self.collections.write(persist)
        with storage_errors():
            rest = coll.delete_many(layout.of_session(user_id, session_id, {"$nin": [layout.SESSION, layout.RECEIPT]}))
        if not own:
            return rest.deleted_count > 0
        if self.outbox is not None:
            self.outbox.flush(key, user_id, now)
        with storage_errors():
            gone = coll.delete_one({**layout.by_id(key, user_id), F.STATUS: layout.DELETED})
        return rest.deleted_count + gone.deleted_count > 0

    def _receipt(
        self,
        key: str,
        user_id: str,
        session_id: str,
        request_ids: list[str],
        create_request: str,
        now: int,
        persist: bool,
    ) -> None:
        """What a delete leaves: the request ids applied to the session and to the delete, so a repeat of
        any of them is answered, never applied to a later session, until it is purged a retention later."""
        fields = documents.receipt_fields(user_id, session_id, now + self.expiry.retention_ms)
        if create_request:
            fields[F.CREATE_REQUEST] = create_request
        push = layout.record_request(*request_ids)
        receipt = layout.by_id(layout.receipt_key(key), user_id)
        with storage_errors():
            try:
                self.collections.write(persist).update_one(receipt, {"$set": fields, "$push": push}, upsert=True)
            except DuplicateKeyError:  # two upserts at once: the other inserted it, this one updates
                self.collections.write(persist).update_one(receipt, {"$set": fields, "$push": push})

    def with_receipt(self, key: str, user_id: str) -> tuple[Session | None, dict | None]:
        """The stored session (any state) and the receipt a delete of an earlier one left, in one read."""
        with storage_errors(writing=False):
            ids = layout.by_ids([key, layout.receipt_key(key)], user_id)
            docs = list(self.collections.read.find(ids, layout.without(F.MESSAGES)))
        session = next((layout.from_doc(d) for d in docs if d.get(F.KIND) == layout.SESSION), None)
        if session is not None:
            self.cache.learn(session)
        return session, next((d for d in docs if d.get(F.KIND) == layout.RECEIPT), None)

    def _receipted(self, key: str, user_id: str, request_id: str) -> bool:
        with storage_errors(writing=False):
            receipt = layout.by_id(layout.receipt_key(key), user_id)
            found = self.collections.read.find_one({**receipt, F.REQUESTS: request_id})
        return found is not None
