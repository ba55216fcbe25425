"""Lifecycle events in the database: recorded with the session, moved to deliveries, claimed under a lease. I/O.

Only with events on (WEBHOOK_URL or WEBHOOK_TARGET): without them nothing here runs and no write
carries its fields. A session document carries `nd`, when the sweeper next has something to do with
it (indexed), and at most one pending event (`ei`, `et`, `eo`, `ex`) written by the very command that
caused it: close and the delete's mark set it, the sweeper sets an expiry's by a compare-and-set on
`nd` and `exp`. The sweeper then copies the event into the deliveries collection (keyed by event id:
a second copy is a no-op) and only then clears it from the session, removes a deleted session, or
gives an expired one its purge date: the TTL purge never removes a session whose `session.expired`
is not recorded. Deliveries are claimed one at a time by findAndModify that pushes `due` a lease
ahead, so several workers and instances send each event once while none crashes.

The deliveries collection stays small (events in flight, dead ones, delivered ones for a day) and
is not sharded: its claims filter by state and due time, not by user.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from pymongo import ReturnDocument

from app import jsontext
from app.events import CLOSED, DELETED, EXPIRED, EXPIRING, Event, expiry_event_id, pause_s
from app.storage import layout
from app.storage.backlog import Backlog
from app.storage.documents import tomb_doc
from app.storage.layout import ACTIVE, CHUNK, SESSION, F, by_id, from_ms, of_session, purge_fields
from app.storage.mongo import Collections, DuplicateKeyError, storage_errors
from app.tenants import split_user_key

log = logging.getLogger(__name__)
PENDING_FIELDS = (
    F.EVENT_ID,
    F.EVENT_TYPE,
    F.EVENT_AT,
    F.EVENT_EXPIRY,
)  # the pending event: id, type, occurred (ms), expiry it names
CLEARED = {name: "" for name in PENDING_FIELDS}  # as $unset
NO_MESSAGES = {F.MESSAGES: 0}
EVENT = "e"  # the kind (`k`) of a delivery document
DELIVERED_KEPT_MS = 86_400_000  # a delivered event stays a day: a late second copy finds it and is not sent
LEASE_MS = 60_000  # a claim outlives a send (10 s) by far; a claimant that died frees it after this


@dataclass(frozen=True)
class Claimed:
    """A delivery this process holds until `lease` (its `due` as claimed)."""

    id: str
    type: str
    body: str
    attempts: int
    window_start: int
    occurred: int
    lease: int


class Outbox:
    """The events of one sessions collection and its deliveries collection; times in epoch ms."""

    def __init__(
        self,
        sessions: Collections,
        deliveries: Collections,
        *,
        lead_ms: int,
        include_context: bool,
        retry_ms: int,
        purge_grace_ms: int,
        retention_ms: int,
    ) -> None:
        self.sessions, self.deliveries = sessions, deliveries
        self.lead_ms, self.include_context, self.retry_ms = lead_ms, include_context, retry_ms
        self.purge_grace_ms, self.retention_ms = purge_grace_ms, retention_ms
        self.backlog = Backlog(deliveries)

    def ensure_indexes(self) -> None:
        with storage_errors(writing=False):
            self.sessions.read.create_index([(F.NEXT_DUE, 1)])
            self.sessions.read.create_index([(F.EVENT_ID, 1)], sparse=True)
            self.deliveries.read.create_index([("s", 1), ("due", 1)])
            self.deliveries.read.create_index([(F.PURGE_AT, 1)], expireAfterSeconds=0)

    # what the request path writes (no round trip of its own)

    def next_due(self, expires: int, timeout_ms: int) -> int:
        """When the sweeper next looks at a session expiring at `expires`: its warning, else its expiry."""
        if self.lead_ms and timeout_ms > self.lead_ms:
            return expires - self.lead_ms
        return expires

    def pending(self, event_id: str, event_type: str, now: int, expires: int) -> dict:
        """The fields a causing write sets: the event, which the sweeper moves at its next pass."""
        return {F.EVENT_ID: event_id, F.EVENT_TYPE: event_type, F.EVENT_AT: now, F.EVENT_EXPIRY: expires}

    def hold_purge(self, doc: dict) -> dict:
        """A new session document without a purge date, due for its first expiry event."""
        doc.pop(F.PURGE_AT, None)
        doc.pop(F.PURGE_MS, None)
        doc[F.NEXT_DUE] = self.next_due(doc[F.EXPIRES], doc[F.TIMEOUT])
        return doc

    # the sweeper: sessions due -> deliveries

    def due_sessions(self, now: int, limit: int) -> list[dict]:
        """Sessions holding an event to move, then sessions whose next expiry event is due (both indexed).

        Found by the event itself, not only by `nd`: a read of a session a delete has marked still
        slides its `nd` (the read's filter does not look at the status), never its event.
        """
        with storage_errors(writing=False):
            held = list(self.sessions.read.find({F.EVENT_ID: {"$gt": ""}}, NO_MESSAGES).limit(limit))
            if len(held) == limit:
                return held
            # no `ei: {$exists: false}` here: nx-27017 answers $exists by reading every document
            due = self.sessions.read.find({F.NEXT_DUE: {"$lte": now}}, NO_MESSAGES).sort(F.NEXT_DUE, 1)
            due = due.limit(limit - len(held))
            seen = {doc[F.ID] for doc in held}
            return held + [doc for doc in due if doc[F.ID] not in seen]

    def settle(self, doc: dict, now: int) -> str:
        """Do what is due for one session document: the event recorded ("" if none was)."""
        if doc.get(F.EVENT_ID):
            return self._move(doc, now)
        mine = {**by_id(doc[F.ID], doc[F.USER]), F.NEXT_DUE: doc[F.NEXT_DUE]}
        coll = self.sessions.durable
        if doc.get(F.KIND) != SESSION or doc.get(F.STATUS) != ACTIVE:  # closed (or a delete's mark): no expiry events
            done = {"$unset": {F.NEXT_DUE: ""}}
            if doc.get(F.STATUS) == layout.CLOSED and doc.get(F.AUTO_CLEAN) and not doc.get(F.PURGE_MS):
                done["$set"] = purge_fields(self._purge_ms(doc))
            with storage_errors():
                coll.update_one(mine, done)
            return ""
        exp = doc[F.EXPIRES]
        if exp <= now:
            event_type, occurred = EXPIRED, exp
        elif self.next_due(exp, doc[F.TIMEOUT]) <= now:
            event_type, occurred = EXPIRING, exp - self.lead_ms
        else:  # a stale due date (the session slid meanwhile): the right one
            with storage_errors():
                coll.update_one({**mine, F.EXPIRES: exp}, {"$set": {F.NEXT_DUE: self.next_due(exp, doc[F.TIMEOUT])}})
            return ""
        event_id = expiry_event_id(doc[F.ID], doc.get(F.NONCE, ""), event_type, exp)
        with storage_errors():  # compare-and-set: of several sweepers, one records it
            after = coll.find_one_and_update(
                {**mine, F.EXPIRES: exp, F.EVENT_ID: {"$exists": False}},
                {"$set": self.pending(event_id, event_type, occurred, exp)},
                NO_MESSAGES,
                return_document=ReturnDocument.AFTER,
            )
        return self._move(after, now) if after else ""

    def flush(self, key: str, user_id: str, now: int) -> None:
        """Move a session's pending event now (before a write that would replace it, or a removal)."""
        with storage_errors(writing=False):
            doc = self.sessions.read.find_one({**by_id(key, user_id), F.EVENT_ID: {"$exists": True}}, NO_MESSAGES)
        if doc is not None:
            self._move(doc, now)

    def settle_now(self, key: str, user_id: str, now: int) -> None:
        """Record what is due for one session at once (before a create replaces its expired session)."""
        with storage_errors(writing=False):
            doc = self.sessions.read.find_one(by_id(key, user_id), NO_MESSAGES)
        if doc is not None and (doc.get(F.EVENT_ID) or doc.get(F.NEXT_DUE, now + 1) <= now):
            self.settle(doc, now)

    def _move(self, doc: dict, now: int) -> str:
        event_id, event_type = str(doc[F.EVENT_ID]), str(doc[F.EVENT_TYPE])
        exp = doc[F.EVENT_EXPIRY] or doc[F.EXPIRES]  # a delete's mark names no expiry
        tenant, user_id = split_user_key(doc[F.USER])  # the caller's user id, never the stored key
        event = Event(
            id=event_id,
            type=event_type,
            occurred=doc[F.EVENT_AT],
            tenant=tenant,
            user_id=user_id,
            session_id=doc[F.SESSION],
            version=doc[F.VERSION],
            expires=exp,
            message_count=min(doc[F.APPENDED], doc[F.MAX_HISTORY]),
            context=jsontext.fold(doc.get(F.CONTEXT, "{}"), doc.get(F.PATCHES, ())),
        )
        record = {
            F.KIND: EVENT,
            "t": event_type,
            F.USER: doc[F.USER],
            F.SESSION: doc[F.SESSION],
            "b": event.body(include_context=self.include_context),
            "s": "pending",
            "due": now,
            "tries": 0,
            "le": "",
            "rs": now,
            "at": doc[F.EVENT_AT],
            F.CREATED: now,
        }
        with storage_errors():
            with contextlib.suppress(DuplicateKeyError):  # another sweeper's copy landed first: the same event
                self.deliveries.durable.update_one({F.ID: event_id}, {"$setOnInsert": record}, upsert=True)
            self._clear(doc, event_type, exp)
        log.info(
            "event recorded",
            extra={"request": {"event": event_id, "state": "recorded", "type": event_type, "tenant": tenant}},
        )
        return event_type

    def _clear(self, doc: dict, event_type: str, exp: int) -> None:
        """The session after its event is in deliveries: cleared, removed (deleted) or purgeable (expired)."""
        coll = self.sessions.durable
        mine = {**by_id(doc[F.ID], doc[F.USER]), F.EVENT_ID: doc[F.EVENT_ID]}
        if event_type == DELETED:
            coll.delete_one({**mine, F.STATUS: layout.DELETED})
            return
        purge = doc.get(F.AUTO_CLEAN) and event_type in (EXPIRED, CLOSED)
        if event_type == EXPIRING:
            where, update = {**mine, F.EXPIRES: exp}, {"$unset": CLEARED, "$set": {F.NEXT_DUE: exp}}
        else:  # expired, closed: nothing more to announce until the session is used again
            where = {**mine, F.EXPIRES: exp} if event_type == EXPIRED else mine
            update = {"$unset": {**CLEARED, F.NEXT_DUE: ""}}
            if purge:
                update["$set"] = purge_fields(self._purge_ms(doc))
        if coll.update_one(where, update).matched_count:
            if purge:
                self._purgeable(doc)
            return
        coll.update_one(mine, {"$unset": CLEARED})  # the session slid (or revived) meanwhile: its due date stands

    def _purge_ms(self, doc: dict) -> int:
        return int(doc[F.EXPIRES] + min(doc[F.TIMEOUT], self.purge_grace_ms))

    def _purgeable(self, doc: dict) -> None:
        """Archive chunks and tombstone follow the session's purge date (they carried none until now)."""
        purge_ms = self._purge_ms(doc)
        coll = self.sessions.durable
        if doc.get(F.CHUNKS):  # most sessions have no archive chunk: no command for them
            chunks = of_session(doc[F.USER], doc[F.SESSION], CHUNK)
            coll.update_many(chunks, {"$set": purge_fields(purge_ms)})
        tomb = tomb_doc(doc[F.USER], doc[F.SESSION], purge_ms + self.retention_ms)
        coll.update_one(by_id(tomb.pop(F.ID), tomb.pop(F.USER)), {"$set": tomb}, upsert=True)

    # deliveries

    def claim(self, now: int) -> Claimed | None:
        """The oldest due delivery, now held by this process for LEASE_MS; None when none is due."""
        with storage_errors():
            doc = self.deliveries.durable.find_one_and_update(
                {"s": "pending", "due": {"$lte": now}},
                {"$set": {"due": now + LEASE_MS}, "$inc": {"tries": 1}},
                sort=[("due", 1)],
                return_document=ReturnDocument.AFTER,
            )
        if doc is None:
            return None
        return Claimed(doc[F.ID], doc["t"], doc["b"], doc["tries"], doc["rs"], doc["at"], doc["due"])

    def delivered(self, claim: Claimed, now: int) -> None:
        done = {"s": "delivered", "le": "", "dl": now, F.PURGE_AT: from_ms(now + DELIVERED_KEPT_MS)}
        with storage_errors():
            self.deliveries.durable.update_one({F.ID: claim.id, "due": claim.lease}, {"$set": done})

    def failed(self, claim: Claimed, now: int, reason: str) -> bool:
        """Schedule the next try, or keep it as dead past the retry window: True if dead."""
        retry_at = now + pause_s(claim.attempts) * 1000
        dead = retry_at - claim.window_start > self.retry_ms
        change = {"s": "dead", "le": reason, "dd": now} if dead else {"due": retry_at, "le": reason}
        with storage_errors():
            self.deliveries.durable.update_one({F.ID: claim.id, "due": claim.lease}, {"$set": change})
        return dead
