"""Purge dates and tombstones: the TTL index frees space, never decides expiry. I/O (pymongo).

Every read and write checks `exp` itself, because the TTL reaper runs once a minute and lags. An
auto-clean session's purge date (`pa`) trails its expiry by a grace; a tombstone outlives the purge
so that a purged session still answers "expired" for EXPIRED_RETENTION.
"""

from __future__ import annotations

from app.model import Session
from app.storage.documents import tomb_doc
from app.storage.layout import ACTIVE, CHUNK, F, by_id, by_ids, chunk_key, of_session, only, purge_fields
from app.storage.mongo import Collections, storage_errors


class Expiry:
    def __init__(
        self, collections: Collections, purge_grace_ms: int, retention_ms: int, *, hold_purge: bool = False
    ) -> None:
        self.collections = collections
        self.purge_grace_ms = purge_grace_ms
        self.retention_ms = retention_ms
        # lifecycle events on: a session gets its purge date only once its session.expired is recorded
        self.hold_purge = hold_purge

    def purge_for(self, expires: int, timeout_ms: int) -> int:
        """When the reaper may remove a session expiring at `expires`: a grace later."""
        return expires + min(timeout_ms, self.purge_grace_ms)

    def keep_purgeable_after(self, s: Session, *, persist: bool) -> bool:
        """Move the purge date ahead of expiry when a sliding write brought them close.

        Rare by design (once per half grace of activity), so sliding writes stay one round trip.
        False when the session is gone: the reaper removed it before this write landed.
        """
        grace = min(s.timeout_ms, self.purge_grace_ms)
        if not s.auto_clean or s.expires + grace // 2 <= s.stored.purge_ms:
            return True
        if self.hold_purge and (not s.stored.purge_ms or s.status == ACTIVE):
            return self._hold(s, persist)
        pms = self.purge_for(s.expires, s.timeout_ms)
        tomb_ms = pms + self.retention_ms
        purge = {"$set": purge_fields(pms)}
        coll = self.collections.write(persist)
        mine = by_id(s.stored.key, s.user_id)
        with storage_errors():
            moved = coll.find_one_and_update({**mine, F.PURGE_MS: {"$lt": pms}}, purge, only(F.CHUNKS, F.NONCE))
            # find_one, not count_documents: that is an aggregate, which nx-27017 runs in Python over
            # the whole collection (a copy of every document), seconds per call at 50,000 sessions.
            if moved is None and self.collections.read.find_one(mine, only(F.ID)) is None:
                return False
            if moved and moved.get(F.CHUNKS):  # the chunks as stored now: one archived since `s` is included
                ids = [chunk_key(s.stored.key, moved[F.NONCE], first) for first in moved[F.CHUNKS]]
                coll.update_many(by_ids(ids, s.user_id), purge)
            tomb = tomb_doc(s.user_id, s.session_id, tomb_ms)
            tomb_id = by_id(tomb.pop(F.ID), tomb.pop(F.USER))
            coll.update_one(tomb_id, {"$set": tomb}, upsert=True)
        return True

    def _hold(self, s: Session, persist: bool) -> bool:
        """Events on: no purge date until the event sweeper records this expiry (a revived session loses
        the one its last expiry gave it); False when the session is gone."""
        if not s.stored.purge_ms:
            return True
        coll = self.collections.write(persist)
        mine = by_id(s.stored.key, s.user_id)
        held = {"$unset": {F.PURGE_AT: "", F.PURGE_MS: ""}}
        with storage_errors():
            if coll.update_one({**mine, F.PURGE_MS: s.stored.purge_ms}, held).matched_count:
                coll.update_many(of_session(s.user_id, s.session_id, CHUNK), held)
                return True
            return self.collections.read.find_one(mine, only(F.ID)) is not None

    def delete_expired(self, key: str, user_id: str, session_id: str, now: int, *, persist: bool) -> None:
        """Remove an expired session (a caller reusing its id starts afresh) with every archive chunk it had."""
        coll = self.collections.write(persist)
        with storage_errors():
            gone = coll.find_one_and_delete({**by_id(key, user_id), F.EXPIRES: {"$lte": now}}, only(F.CHUNKS))
            if gone is not None:
                coll.delete_many(of_session(user_id, session_id, CHUNK))
