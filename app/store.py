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
_SUMMARY = {"msgs": 0, "ctx": 0, "cp": 0}
CREATE_ATTEMPTS = 50
INLINE = 50  # messages kept in the session document: one default `history` page
_CHUNK_REFS = {"bk": 1, "r": 1}
_RETIRED = "-"  # the incarnation of a session being deleted: no archive matches it


def _slack(max_history: int) -> int:
    """How far the inline history may run past a small max_history before it is trimmed."""
    return max(1, max_history // 10)


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
        inline: int = INLINE,
    ) -> None:
        self.collection = collection
        self.clock = clock
        self.max_sessions = max_sessions
        self.purge_grace_ms = purge_grace_ms
        self.retention_ms = retention_ms
        self.inline = inline
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
        seen: dict | None = None,
    ) -> Session | Miss:
        """One atomic conditional update that also restarts the timeout; a Miss when it did not apply.

        `timeout_ms` is the session's timeout if known (else learned or the default is assumed and
        checked); `new_timeout_ms` replaces it; `room_for` k requires space for k more messages;
        `seen`, if given, receives the document as it was just before the update.
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
            full = {**update, "$set": fields}
            with storage_errors():
                before = self._coll(persist).find_one_and_update(
                    plain, full, projection=None if messages else _NO_MESSAGES, return_document=ReturnDocument.BEFORE
                )
            if before:
                if seen is not None:
                    seen.update(before)
                session = records.from_doc(records.applied(before, full))
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
        purge = {"$set": {"pa": records.from_ms(pms), "pms": pms}}
        with storage_errors():
            moved = self.collection.find_one_and_update({"_id": s.key, "pms": {"$lt": pms}}, purge, _CHUNK_REFS)
            # find_one, not count_documents: that is an aggregate, which nx-27017 runs in Python over
            # the whole collection (a copy of every document), seconds per call at 50,000 sessions.
            if moved is None and self.collection.find_one({"_id": s.key}, {"_id": 1}) is None:
                return False
            if moved and moved.get("bk"):  # the chunks as stored now: one archived since `s` is included
                self.collection.update_many({"_id": {"$in": self._chunk_ids(s.key, moved)}}, purge)
            tomb_fields = {"k": "t", "uid": s.user_id, "sid": s.session_id, "slot": tomb}
            self.collection.update_one(
                {"_id": tomb},
                {"$set": {**tomb_fields, "pa": records.from_ms(tomb_ms), "pms": tomb_ms}},
                upsert=True,
            )
        return True

    def compact(self, s: Session) -> None:
        """Fold the context's patch log into the stored text; skipped if the session moved on."""
        text = s.context
        with storage_errors():
            self.collection.update_one(
                {"_id": s.key, "r": s.nonce, "v": s.version},
                {"$set": {"ctx": text, "cp": [], "csz": len(text.encode())}},
            )

    def shrink(self, s: Session) -> None:
        """Keep the session document small after an append: trim a short history, archive a long one."""
        size = s.chunk_size or self.inline
        if s.max_history <= size:
            if s.physical >= s.max_history + _slack(s.max_history):
                self._trim(s)
        elif s.physical >= 2 * size:
            self._archive(s)

    def _trim(self, s: Session) -> None:
        """Cut the inline history down to max_history; skipped if another append raced it."""
        with storage_errors():
            self.collection.update_one(
                {"_id": s.key, "pl": s.physical},
                {"$push": {"msgs": {"$each": [], "$slice": -s.max_history}}, "$set": {"pl": s.max_history}},
            )

    def _archive(self, s: Session) -> None:
        """Move the oldest whole chunks of `inline` messages out of the session document.

        Chunk boundaries are aligned (inline_first + j * inline) and chunk ids are deterministic,
        so processes archiving at once write identical chunks. The session update is conditional
        on the state read; the loser removes only chunks that nobody can reference any more.
        Chunks wholly older than the visible history are dropped, or deleted if archived before.
        """
        if s.nonce == _RETIRED:  # being deleted
            return
        with storage_errors():
            doc = self.collection.find_one({"_id": s.key, "r": s.nonce})
        if not doc:
            return
        cur = records.from_doc(doc)
        size = cur.chunk_size or self.inline  # per session: workers with other settings agree
        whole = (cur.physical - size) // size
        if whole < 1:
            return
        texts, visible = cur.messages or (), cur.visible_first
        firsts = [cur.inline_first + j * size for j in range(whole)]
        new = [
            records.new_chunk(cur, first, list(texts[j * size : (j + 1) * size]))
            for j, first in enumerate(firsts)
            if first + size - 1 >= visible
        ]
        ranges = cur.chunk_ranges()
        garbage = [records.chunk_key(cur.key, cur.nonce, first) for first, last in ranges if last < visible]
        # a losing archiver may have left an aligned chunk that is now wholly out of view: never referenced
        garbage += [records.chunk_key(cur.key, cur.nonce, f) for f in firsts if f + size - 1 < visible]
        chunks = [first for first, last in ranges if last >= visible] + [d["seq"] for d in new]
        left = cur.physical - whole * size
        with storage_errors():
            reused = self._insert_chunks(new) if new else False
            after = self.collection.find_one_and_update(
                {"_id": cur.key, "r": cur.nonce, "tot": cur.total, "pl": cur.physical},
                {"$push": {"msgs": {"$each": [], "$slice": -left}}, "$set": {"pl": left, "bk": chunks}},
                {"pms": 1},
                return_document=ReturnDocument.AFTER,
            )
            if after is None:
                self._drop_unreferenced(cur, [d["_id"] for d in new])
                return
            if garbage:
                self.collection.delete_many({"_id": {"$in": garbage}})
            if new and cur.auto_clean and (reused or after.get("pms", 0) > cur.purge_ms):
                # the purge date moved while we archived, or a chunk written earlier carries an older one
                fresh = {"$set": {"pa": records.from_ms(after["pms"]), "pms": after["pms"]}}
                ids = [d["_id"] for d in new]
                self.collection.update_many({"_id": {"$in": ids}, "pms": {"$lt": after["pms"]}}, fresh)

    def _insert_chunks(self, chunks: list[dict]) -> bool:
        """Insert archive chunks; True if some were there already (written by a losing archiver)."""
        try:
            self.collection.insert_many(chunks, ordered=False)
        except BulkWriteError as exc:  # the same chunk written by another process is fine
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            return True
        return False

    def _drop_unreferenced(self, cur: Session, chunk_ids: list[str]) -> None:
        """After a lost archive race: delete our chunks unless stored or future state refers to them."""
        if not chunk_ids:
            return
        now = self.collection.find_one({"_id": cur.key}, {"bk": 1, "r": 1, "tot": 1, "pl": 1})
        if now is not None and now.get("r") == cur.nonce:
            # Still to archive (at or after the inline start) or referenced: keep; the rest is dead.
            inline_first, refs = now["tot"] - now["pl"] + 1, set(now.get("bk", ()))
            seqs = {c: records.chunk_seq(c) for c in chunk_ids}
            chunk_ids = [c for c, seq in seqs.items() if seq < inline_first and seq not in refs]
        if chunk_ids:
            self.collection.delete_many({"_id": {"$in": chunk_ids}})

    def drop_archive(self, before: dict) -> None:
        """After clear_history: delete the chunks the cleared state had, referenced or not.

        Besides those in bk, a chunk may exist unreferenced at any aligned start of the cleared
        inline messages (written by an archiver that lost a race, kept for the next one to adopt).
        """
        size = before.get("cs") or self.inline
        inline_first = before["tot"] - before["pl"] + 1
        firsts = [*before.get("bk", ()), *range(inline_first, before["tot"] + 1, size)]
        if before.get("bk") or before["pl"] >= size:
            with storage_errors():
                ids = [records.chunk_key(before["_id"], before["r"], first) for first in firsts]
                self.collection.delete_many({"_id": {"$in": ids}})

    def archived(self, s: Session, first: int, last: int) -> dict[int, str]:
        """The archived message texts with seqs in [first, last], by seq (one query)."""
        wanted = [f for f, end in s.chunk_ranges() if end >= first and f <= last]
        if not wanted:
            return {}
        ids = [records.chunk_key(s.key, s.nonce, f) for f in wanted]
        with storage_errors():
            docs = list(self.collection.find({"_id": {"$in": ids}}))
        out: dict[int, str] = {}
        for doc in docs:
            start = doc["seq"]
            out.update((start + i, text) for i, text in enumerate(doc["msgs"]) if first <= start + i <= last)
        return out

    def delete(self, key: str, *, persist: bool = True) -> int:
        """Remove a session with its tombstone and archive chunks; how many documents went."""
        self.memory.forget(key)
        with storage_errors():
            # Retiring the incarnation first makes every archive still in flight miss (they filter on
            # it) and delete its own chunks; the ones already referenced are in the bk read here.
            # Session and tombstone then go in one command: a racing write sees both or neither.
            doc = self.collection.find_one_and_update({"_id": key}, {"$set": {"r": _RETIRED}}, _CHUNK_REFS)
            chunks = self._chunk_ids(key, doc)
            result = self._coll(persist).delete_many({"_id": {"$in": [key, records.tomb_key(key), *chunks]}})
        return result.deleted_count

    def delete_expired(self, key: str, now: int) -> None:
        with storage_errors():
            doc = self.collection.find_one_and_delete({"_id": key, "exp": {"$lte": now}}, _CHUNK_REFS)
            if doc and doc.get("bk"):
                self.collection.delete_many({"_id": {"$in": self._chunk_ids(key, doc)}})

    @staticmethod
    def _chunk_ids(key: str, doc: dict | None) -> list[str]:
        return [records.chunk_key(key, doc["r"], first) for first in doc.get("bk", ())] if doc else []

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
