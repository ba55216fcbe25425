"""Session storage on MongoDB: atomic, expiry-checked primitives. I/O module (pymongo).

Every read and write filters on expiry itself (`exp > now`), because the TTL reaper lags.
Only features that MongoDB 5.0+ and nx-27017 both handle are used; see records.py for the layout.
No `$expr`: nx-27017 evaluates it over the whole collection, whatever else the filter says.
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
from app.memory import Memory
from app.records import Miss, Session

log = logging.getLogger(__name__)

DURABLE = WriteConcern(w="majority", j=True)
FAST = WriteConcern(w=1)
_TOO_LARGE = {10334, 17419, 17420}
_NO_MESSAGES = {"msgs": 0}
_SUMMARY = {"msgs": 0, "ctx": 0}
CREATE_ATTEMPTS = 50


def _is_id_conflict(write_error: dict) -> bool:
    """Whether a duplicate-key error is on _id (MongoDB names the key; nx-27017 the column)."""
    pattern = write_error.get("keyPattern")
    if pattern:
        return "_id" in pattern
    message = str(write_error.get("errmsg", ""))
    return message.rstrip().endswith("._id") or " index: _id_ " in message


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
        default_timeout_ms: int = 1_800_000,
        default_max_history: int = 1000,
    ) -> None:
        self.collection = collection
        self.clock = clock
        self.max_sessions = max_sessions
        self.purge_grace_ms = purge_grace_ms
        self.retention_ms = retention_ms
        self.memory = Memory(default_timeout_ms, default_max_history)
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
        if not doc:
            return None
        session = records.from_doc(doc)
        self.memory.learn(session)
        return session

    def inspect(self, key: str) -> tuple[Session | None, bool]:
        """The stored session (any state) and whether its tombstone exists."""
        with storage_errors():
            docs = list(self.collection.find({"_id": {"$in": [key, records.tomb_key(key)]}}, _NO_MESSAGES))
        session = next((records.from_doc(d) for d in docs if d.get("k") == "s"), None)
        if session is not None:
            self.memory.learn(session)
        return session, any(d.get("k") == "t" for d in docs)

    def list(self, user_id: str, now: int, status: str, limit: int, after: tuple[int, str] | None) -> list[Session]:
        query: dict[str, Any] = {"uid": user_id, "k": "s"}
        if status == "expired":
            query["exp"] = {"$lte": now}
        elif status in ("active", "closed"):
            query["st"] = status
            query["exp"] = {"$gt": now}
        if after is not None:
            query["$or"] = [{"c": {"$lt": after[0]}}, {"c": after[0], "sid": {"$lt": after[1]}}]
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
        timeout_ms: int | None = None,
        new_timeout_ms: int | None = None,
        version: int | None = None,
        nonce: str | None = None,
        room_for: int | None = None,
        where: dict | None = None,
        messages: bool = False,
        persist: bool = True,
    ) -> Session | Miss:
        """One atomic conditional update that also restarts the timeout; a Miss when it did not apply.

        `timeout_ms` is the session's timeout if known (else learned or the default is assumed and
        checked); `new_timeout_ms` replaces it; `room_for` k requires space for k more messages.
        """
        guess_t, guess_mh = self.memory.shape(key)
        guess_t = timeout_ms or guess_t
        for attempt in (1, 2):
            # Any status is "active" or "closed": a read-only write needs no status test (and nx-27017
            # cannot translate `$in` there to SQL: it would find, then update, by three queries).
            plain: dict[str, Any] = {"_id": key, "st": "active"} if writable else {"_id": key}
            fields = dict(update.get("$set", {}))
            if new_timeout_ms is not None:
                fields.update(tmo=new_timeout_ms, exp=now + new_timeout_ms)
            else:
                plain["tmo"] = guess_t
                fields["exp"] = now + plain["tmo"]
            if live:
                plain["exp"] = {"$gt": now}
            if version is not None:
                plain["v"] = version
            if nonce is not None:
                plain["r"] = nonce
            if room_for is not None:
                plain["mh"] = guess_mh
                plain["n"] = {"$lte": guess_mh - room_for}
            plain.update(where or {})
            with storage_errors():
                doc = self._coll(persist).find_one_and_update(
                    plain,
                    {**update, "$set": fields},
                    projection=None if messages else _NO_MESSAGES,
                    return_document=ReturnDocument.AFTER,
                )
            if doc:
                session = records.from_doc(doc)
                self.memory.learn(session)
                return session
            stored, tomb = self.inspect(key)
            if attempt == 2 or stored is None:
                break
            guessed = (plain.get("tmo", stored.timeout_ms), plain.get("mh", stored.max_history))
            if guessed == (stored.timeout_ms, stored.max_history):
                break
            guess_t, guess_mh = stored.timeout_ms, stored.max_history  # learned: try once more
        return Miss(stored, tomb)

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
        self.memory.forget(key)
        with storage_errors():
            result = self._coll(persist).delete_many({"_id": {"$in": [key, records.tomb_key(key)]}})
        return result.deleted_count

    def delete_expired(self, key: str, now: int) -> None:
        with storage_errors():
            self.collection.delete_one({"_id": key, "exp": {"$lte": now}})

    # slots: the race-free limit of active sessions per user

    def in_slot(self) -> dict:
        """Filter: the document holds one of its user's slots (only numbers match the range)."""
        return {"slot": {"$gte": 0, "$lt": self.max_sessions}}

    def _holders(self, user_id: str) -> list[dict]:
        """The user's slot holders: a query by uid, so only when every slot number is taken."""
        with storage_errors():
            return list(self.collection.find({"uid": user_id, **self.in_slot()}, {"slot": 1, "exp": 1}))

    def _free_slot(self, holders: list[dict], now: int, exclude: str = "") -> int | None:
        """A slot number nobody live holds, released from an expired holder if need be."""
        holders = [h for h in holders if type(h.get("slot")) is int]
        taken = {h["slot"] for h in holders}
        free = [n for n in range(self.max_sessions) if n not in taken]
        if free:
            return random.choice(free)  # random, so concurrent creates rarely collide
        stale = [h for h in holders if h["exp"] <= now and h["_id"] != exclude]
        random.shuffle(stale)
        for h in stale:
            with storage_errors():
                released = self.collection.update_one(
                    {"_id": h["_id"], "slot": h["slot"], "exp": {"$lte": now}},
                    {"$set": {"slot": h["_id"]}},
                )
            if released.modified_count:
                return h["slot"]
        return None

    def create(
        self,
        user_id: str,
        session_id: str,
        build: Callable[[int], tuple[dict, dict | None]],
        *,
        persist: bool,
        caller_id: bool = True,
    ) -> tuple[Session, bool]:
        """Insert a new session in a free slot, or return the live one already stored under this id.

        The unique (uid, slot) index arbitrates: the insert tries slot numbers in random order, and
        only when every number is taken are the holders read (to reclaim one from an expired
        session, or refuse). So a user below the limit costs no query by uid, which nx-27017
        answers by scanning the whole collection.
        """
        key = records.key(user_id, session_id)
        for _ in range(CREATE_ATTEMPTS):
            now = self.clock()
            if caller_id:
                existing = self.load(key)
                if existing is not None:
                    if not existing.expired(now):
                        return existing, False
                    self.delete_expired(key, now)  # a caller reusing an expired id gets a fresh session
                    continue
            slots = random.sample(range(self.max_sessions), self.max_sessions)
            outcome = None
            for slot in slots:
                outcome = self._insert(build(slot), persist)
                if outcome != "slot taken":
                    break
            if outcome == "slot taken":
                slot = self._free_slot(self._holders(user_id), now)
                if slot is None:
                    raise errors.SessionLimitExceeded(limit=self.max_sessions)
                outcome = self._insert(build(slot), persist)
            if isinstance(outcome, Session):
                return outcome, True
        raise errors.StorageUnavailable()

    def _insert(self, docs: tuple[dict, dict | None], persist: bool) -> Session | str:
        """Insert a session (and its tombstone): the Session, or "slot taken" / "id taken"."""
        doc, tomb = docs
        try:
            with storage_errors():
                self._coll(persist).insert_many([doc, tomb] if tomb else [doc], ordered=True)
        except BulkWriteError as exc:
            if exc.details.get("nInserted", 0) == 0:
                first = (exc.details.get("writeErrors") or [{}])[0]
                return "id taken" if _is_id_conflict(first) else "slot taken"
            with storage_errors():  # a tombstone left by an earlier session of this id
                self._coll(persist).replace_one({"_id": tomb["_id"]}, tomb, upsert=True)
        session = records.from_doc(doc)
        self.memory.learn(session)
        return session

    def reclaim_slot(self, s: Session, *, now: int, new_timeout_ms: int | None, persist: bool) -> Session | None:
        """Give an expired session whose slot was taken a free one again (touch's revival)."""
        for _ in range(CREATE_ATTEMPTS):
            slot = self._free_slot(self._holders(s.user_id), now, exclude=s.key)
            if slot is None:
                raise errors.SessionLimitExceeded(limit=self.max_sessions)
            try:
                found = self.write(
                    s.key,
                    {"$set": {"slot": slot}},
                    now=now,
                    live=False,
                    timeout_ms=s.timeout_ms,
                    new_timeout_ms=new_timeout_ms,
                    version=s.version,
                    persist=persist,
                )
            except DuplicateKeyError:
                continue
            return found if isinstance(found, Session) else None
        raise errors.StorageUnavailable()
