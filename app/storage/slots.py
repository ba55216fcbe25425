"""The race-free limit of active sessions per user: a unique (uid, slot) index arbitrates. I/O (pymongo).

An active session holds one of its user's slot numbers 0..N-1; a closed one holds its own _id.
Inserting tries slot numbers in random order, and only when every number is taken are the holders
read (to take one back from an expired session, or refuse): so a user below the limit costs no
query by uid.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from app import errors
from app.model import Session
from app.storage.layout import from_doc, in_slot
from app.storage.mongo import Collections, insert_ordered, is_id_conflict, storage_errors

SLOT_TAKEN, ID_TAKEN = "slot taken", "id taken"  # lost races: the caller tries again


class Slots:
    def __init__(self, collections: Collections, max_sessions: int) -> None:
        self.collections = collections
        self.max_sessions = max_sessions

    def _holders(self, user_id: str) -> list[dict]:
        with storage_errors(writing=False):
            return list(
                self.collections.read.find({"uid": user_id, **in_slot(self.max_sessions)}, {"slot": 1, "exp": 1})
            )

    def free_slot(self, user_id: str, now: int, *, exclude: str = "", persist: bool) -> int:
        """A slot number nobody live holds, taken back from an expired holder if need be."""
        holders = [h for h in self._holders(user_id) if type(h.get("slot")) is int]
        taken = {h["slot"] for h in holders}
        free = [n for n in range(self.max_sessions) if n not in taken]
        if free:
            return random.choice(free)  # random, so concurrent creates rarely collide
        stale = [h for h in holders if h["exp"] <= now and h["_id"] != exclude]
        random.shuffle(stale)
        for h in stale:
            with storage_errors():
                released = self.collections.write(persist).update_one(
                    {"_id": h["_id"], "uid": user_id, "slot": h["slot"], "exp": {"$lte": now}},
                    {"$set": {"slot": h["_id"]}},
                )
            if released.modified_count:
                return h["slot"]
        raise errors.SessionLimitExceeded(limit=self.max_sessions)

    def insert(self, user_id: str, build: Callable[[int], list[dict]], now: int, *, persist: bool) -> Session | str:
        """Insert a new session (and its tombstone) in a free slot: the Session, or SLOT_TAKEN / ID_TAKEN."""
        for slot in random.sample(range(self.max_sessions), self.max_sessions):
            outcome = self._insert(build(slot), persist)
            if outcome != SLOT_TAKEN:
                return outcome
        return self._insert(build(self.free_slot(user_id, now, persist=persist)), persist)

    def _insert(self, docs: list[dict], persist: bool) -> Session | str:
        coll = self.collections.write(persist)
        with storage_errors():
            inserted, duplicate = insert_ordered(coll, docs)
            if duplicate is not None and inserted == 0:
                return ID_TAKEN if is_id_conflict(duplicate) else SLOT_TAKEN
            if duplicate is not None:  # the session went in; an older tombstone kept the new one out
                coll.replace_one({"_id": docs[1]["_id"], "uid": docs[1]["uid"]}, docs[1], upsert=True)
        return from_doc(docs[0])
