"""Session storage on MongoDB: atomic, expiry-checked primitives. I/O module (pymongo).

Every read and write filters on expiry itself (`seen + tmo > now`), because the TTL reaper lags.
Only features that MongoDB 5.0+ and nx-27017 both handle are used; see records.py for the layout.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

from pymongo import ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from app import errors, records
from app.records import Session

log = logging.getLogger(__name__)

DURABLE = WriteConcern(w="majority", j=True)
FAST = WriteConcern(w=1)
_TOO_LARGE = {10334, 17419, 17420}
_NO_MESSAGES = {"msgs": 0}
_SUMMARY = {"msgs": 0, "ctx": 0}
CREATE_ATTEMPTS = 50


def _live(now: int) -> dict:
    return {"$gt": [{"$add": ["$seen", "$tmo"]}, now]}


def _expired(now: int) -> dict:
    return {"$lte": [{"$add": ["$seen", "$tmo"]}, now]}


def _query(plain: dict, *exprs: dict) -> dict:
    """A filter with `$expr` conditions kept apart in `$and`.

    nx-27017 evaluates only the `$expr` of a filter that mixes it with plain fields (another
    user's `_id` would match); inside `$and` both engines evaluate every condition.
    """
    if not exprs:
        return plain
    expr = exprs[0] if len(exprs) == 1 else {"$and": list(exprs)}
    return {"$and": [plain, {"$expr": expr}]}


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Map pymongo's errors to the service's, in one place."""
    try:
        yield
    except (ConnectionFailure, WriteConcernError) as exc:
        log.warning("storage unavailable: %s", type(exc).__name__)
        raise errors.StorageUnavailable() from None
    except DocumentTooLarge:
        raise errors.HistoryLimit(limit="16 MiB") from None
    except OperationFailure as exc:
        if exc.code in _TOO_LARGE:
            raise errors.HistoryLimit(limit="16 MiB") from None
        raise
    except PyMongoError:
        log.exception("storage error")
        raise errors.Internal() from None


class SessionStore:
    """Sessions in one collection; `clock` returns epoch milliseconds."""

    def __init__(
        self,
        collection: Collection,
        clock: Callable[[], int],
        *,
        max_sessions: int,
        purge_grace_ms: int,
        retention_ms: int,
    ) -> None:
        self.collection = collection
        self.clock = clock
        self.max_sessions = max_sessions
        self.purge_grace_ms = purge_grace_ms
        self.retention_ms = retention_ms
        self._durable = collection.with_options(write_concern=DURABLE)
        self._fast = collection.with_options(write_concern=FAST)

    def ensure_indexes(self) -> None:
        """Create the indexes (idempotent); called once at start-up, never per request."""
        with storage_errors():
            self.collection.create_index([("uid", 1), ("slot", 1)], unique=True)
            self.collection.create_index([("uid", 1), ("k", 1), ("c", -1)])
            self.collection.create_index([("pa", 1)], expireAfterSeconds=0)

    def _coll(self, persist: bool) -> Collection:
        return self._durable if persist else self._fast

    def purge_for(self, expires: int, timeout_ms: int) -> int:
        """When the reaper may remove a session expiring at `expires`: a grace later."""
        return expires + min(timeout_ms, self.purge_grace_ms)

    # reads

    def load(self, key: str, *, messages: bool = False) -> Session | None:
        with storage_errors():
            doc = self.collection.find_one({"_id": key}, None if messages else _NO_MESSAGES)
        return records.from_doc(doc) if doc else None

    def inspect(self, key: str) -> tuple[Session | None, bool]:
        """The stored session (any state) and whether its tombstone exists."""
        with storage_errors():
            docs = list(self.collection.find({"_id": {"$in": [key, records.tomb_key(key)]}}, _NO_MESSAGES))
        session = next((records.from_doc(d) for d in docs if d.get("k") == "s"), None)
        return session, any(d.get("k") == "t" for d in docs)

    def list(self, user_id: str, now: int, status: str, limit: int, after: tuple[int, str] | None) -> list[Session]:
        plain: dict[str, Any] = {"uid": user_id, "k": "s"}
        exprs = []
        if status == "expired":
            exprs.append(_expired(now))
        elif status in ("active", "closed"):
            plain["st"] = status
            exprs.append(_live(now))
        if after is not None:
            plain["$or"] = [{"c": {"$lt": after[0]}}, {"c": after[0], "sid": {"$lt": after[1]}}]
        query = _query(plain, *exprs)
        with storage_errors():
            cursor = self.collection.find(query, _SUMMARY).sort([("c", -1), ("sid", -1)]).limit(limit)
            return [records.from_doc(d) for d in cursor]

    # writes

    def write(
        self,
        key: str,
        update: dict,
        *,
        now: int,
        writable: bool = True,
        live: bool = True,
        version: int | None = None,
        expr: dict | None = None,
        where: dict | None = None,
        messages: bool = False,
        persist: bool = True,
    ) -> Session | None:
        """One atomic conditional update; None when the session is not in the required state."""
        plain: dict[str, Any] = {"_id": key, "st": "active" if writable else {"$in": ["active", "closed"]}}
        if version is not None:
            plain["v"] = version
        plain.update(where or {})
        query = _query(plain, *([_live(now)] if live else []), *([expr] if expr else []))
        with storage_errors():
            doc = self._coll(persist).find_one_and_update(
                query,
                update,
                projection=None if messages else _NO_MESSAGES,
                return_document=ReturnDocument.AFTER,
            )
        return records.from_doc(doc) if doc else None

    def keep_purgeable_after(self, s: Session) -> bool:
        """Move the purge date ahead of expiry when a sliding write brought them close.

        Rare by design (once per half grace of activity), so sliding writes stay one round trip.
        False when the session is gone: the reaper removed it before this write landed.
        """
        if not s.auto_clean or s.expires + min(s.timeout_ms, self.purge_grace_ms) // 2 <= s.purge_ms:
            return True
        pms = self.purge_for(s.expires, s.timeout_ms)
        tomb_ms = pms + self.retention_ms
        tomb = records.tomb_key(s.key)
        with storage_errors():
            moved = self.collection.update_one(
                {"_id": s.key, "pms": {"$lt": pms}}, {"$set": {"pa": records.from_ms(pms), "pms": pms}}
            )
            if not moved.matched_count and not self.collection.count_documents({"_id": s.key}, limit=1):
                return False
            tomb_fields = {"k": "t", "uid": s.user_id, "sid": s.session_id, "slot": tomb}
            self.collection.update_one(
                {"_id": tomb},
                {"$set": {**tomb_fields, "pa": records.from_ms(tomb_ms), "pms": tomb_ms}},
                upsert=True,
            )
        return True

    def trim(self, s: Session) -> None:
        """Cut the physical history down to max_history; skipped if another append raced it."""
        with storage_errors():
            self.collection.update_one(
                {"_id": s.key, "pl": s.physical},
                {"$push": {"msgs": {"$each": [], "$slice": -s.max_history}}, "$set": {"pl": s.max_history}},
            )

    def delete(self, key: str, *, persist: bool = True) -> int:
        with storage_errors():
            result = self._coll(persist).delete_many({"_id": {"$in": [key, records.tomb_key(key)]}})
        return result.deleted_count

    def delete_expired(self, key: str, now: int) -> None:
        with storage_errors():
            self.collection.delete_one(_query({"_id": key}, _expired(now)))

    # slots: the race-free limit of active sessions per user

    def in_slot(self) -> dict:
        """Filter: the document holds one of its user's slots (only numbers match the range)."""
        return {"slot": {"$gte": 0, "$lt": self.max_sessions}}

    def _holders(self, user_id: str, also: str = "") -> list[dict]:
        """The user's slot holders (and, in the same round trip, the document `also`)."""
        in_slot = self.in_slot()
        query = {"uid": user_id, **({"$or": [{"_id": also}, in_slot]} if also else in_slot)}
        with storage_errors():
            return list(self.collection.find(query, {"slot": 1, "seen": 1, "tmo": 1, "k": 1}))

    def _free_slot(self, holders: list[dict], now: int, exclude: str = "") -> int | None:
        """A slot number nobody live holds, released from an expired holder if need be."""
        holders = [h for h in holders if type(h.get("slot")) is int]
        taken = {h["slot"] for h in holders}
        free = [n for n in range(self.max_sessions) if n not in taken]
        if free:
            return random.choice(free)  # random, so concurrent creates rarely collide
        stale = [h for h in holders if h["seen"] + h["tmo"] <= now and h["_id"] != exclude]
        random.shuffle(stale)
        for h in stale:
            with storage_errors():
                released = self.collection.update_one(
                    _query({"_id": h["_id"], "slot": h["slot"]}, _expired(now)),
                    {"$set": {"slot": h["_id"]}},
                )
            if released.modified_count:
                return h["slot"]
        return None

    def create(
        self, user_id: str, session_id: str, build: Callable[[int], tuple[dict, dict | None]], *, persist: bool
    ) -> tuple[Session, bool]:
        """Insert a new session in a free slot, or return the live one already stored under this id."""
        key = records.key(user_id, session_id)
        for _ in range(CREATE_ATTEMPTS):
            now = self.clock()
            holders = self._holders(user_id, also=key)
            mine = next((h for h in holders if h["_id"] == key), None)
            if mine is not None:
                if mine["seen"] + mine["tmo"] > now:
                    existing = self.load(key)
                    if existing is not None:
                        return existing, False
                    continue
                # A caller reusing the id of an expired session gets a fresh one.
                self.delete_expired(key, now)
                continue
            slot = self._free_slot(holders, now)
            if slot is None:
                raise errors.SessionLimitExceeded(limit=self.max_sessions)
            doc, tomb = build(slot)
            try:
                with storage_errors():
                    self._coll(persist).insert_many([doc, tomb] if tomb else [doc], ordered=True)
            except BulkWriteError as exc:
                if exc.details.get("nInserted", 0) == 0:
                    continue  # lost a race for the slot or the id: look again
                with storage_errors():  # a tombstone left by an earlier session of this id
                    self._coll(persist).replace_one({"_id": tomb["_id"]}, tomb, upsert=True)
            return records.from_doc(doc), True
        raise errors.StorageUnavailable()

    def reclaim_slot(self, s: Session, update: dict, *, now: int, persist: bool) -> Session | None:
        """Give an expired session whose slot was taken a free one again (touch's revival)."""
        for _ in range(CREATE_ATTEMPTS):
            slot = self._free_slot(self._holders(s.user_id), now, exclude=s.key)
            if slot is None:
                raise errors.SessionLimitExceeded(limit=self.max_sessions)
            update = {**update, "$set": {**update.get("$set", {}), "slot": slot}}
            try:
                return self.write(s.key, update, now=now, live=False, version=s.version, persist=persist)
            except DuplicateKeyError:
                continue
        raise errors.StorageUnavailable()
