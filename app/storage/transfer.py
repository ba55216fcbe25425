"""Export and import of whole sessions, for the admin CLI. I/O (pymongo).

Export streams: a cursor yields session ids, and each batch of them is read with the archive chunks
it needs, so a database of any size passes through bounded memory. Import writes a batch's chunks
before its sessions (a session never refers to a chunk not yet written), leaves alone a session it
finds already there as the record has it (same incarnation and version: importing twice changes
nothing), and refuses a different one unless told to replace it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.storage.layout import from_doc, in_slot, not_deleted
from app.storage.mongo import Collections, DuplicateKeyError, insert_new, is_id_conflict, storage_errors
from app.storage.records import (
    chunk_ids,
    marker_doc,
    marker_record,
    record_key,
    session_docs,
    session_record,
    stored_user,
)
from app.tenants import key_range, split_user_key

BATCH = 100  # sessions read at once
CHUNKS = 256  # archive chunks read at once (each at most 64 messages)
REREADS = 3  # a session that changed between its read and its chunks' is read again this often
NAMES = {"session": "sessions", "tombstone": "tombstones", "receipt": "delete receipts"}


@dataclass
class Restored:
    """What an import did, by kind of record (session, tombstone, receipt); `refused` holds (line, reason)."""

    imported: Counter = field(default_factory=Counter)
    replaced: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    refused: list[tuple[int, str]] = field(default_factory=list)

    def add(self, other: Restored) -> None:
        self.imported.update(other.imported)
        self.replaced.update(other.replaced)
        self.unchanged.update(other.unchanged)
        self.refused.extend(other.refused)


class Transfer:
    """Reads and writes export records on one store's collection (SessionStore.transfer() makes one)."""

    def __init__(self, collections: Collections, chunk_size: int, max_sessions: int) -> None:
        self.collections = collections
        self.chunk_size = chunk_size
        self.max_sessions = max_sessions
        self.unreadable: list[tuple[str, str]] = []  # (user, session) never read whole: changing, or a chunk lost

    # export

    def sessions(self, user: str | None = None, tenant: str | None = None) -> Iterator[dict]:
        """Every session's record (of one stored user key, or of one tenant, if given), in batches; one a
        delete is removing is gone."""
        where: dict = {"k": "s", **not_deleted()}
        if user is not None:
            where["uid"] = user
        elif tenant is not None and key_range(tenant):
            where["uid"] = key_range(tenant)  # an index range, not the whole collection
        ids: list[str] = []
        with storage_errors(writing=False):
            for doc in self.collections.read.find(where, {"_id": 1, "uid": 1}).batch_size(1000):
                if tenant is not None and split_user_key(doc["uid"])[0] != tenant:
                    continue
                ids.append(doc["_id"])
                if len(ids) == BATCH:
                    yield from self._read(ids)
                    ids = []
        yield from self._read(ids)

    def markers(self, user: str | None = None, tenant: str | None = None) -> Iterator[dict]:
        """Every tombstone's and delete receipt's record (of one stored user key, or of one tenant, if given)."""
        for kind in ("t", "d"):
            where: dict = {"k": kind} if user is None else {"uid": user, "k": kind}
            if user is None and tenant is not None and key_range(tenant):
                where["uid"] = key_range(tenant)
            with storage_errors(writing=False):
                for doc in self.collections.read.find(where).batch_size(1000):
                    if tenant is None or split_user_key(doc["uid"])[0] == tenant:
                        yield marker_record(doc)

    def _read(self, ids: list[str]) -> Iterator[dict]:
        if not ids:
            return
        with storage_errors(writing=False):
            docs = list(self.collections.read.find({"_id": {"$in": ids}}))
        order = {key: n for n, key in enumerate(ids)}
        docs.sort(key=lambda d: order[d["_id"]])
        group: list[dict] = []
        wanted: list[str] = []
        for doc in docs:
            need = chunk_ids(from_doc(doc))
            if group and len(wanted) + len(need) > CHUNKS:
                yield from self._records(group, wanted)
                group, wanted = [], []
            group.append(doc)
            wanted += need
        yield from self._records(group, wanted)

    def _records(self, docs: list[dict], wanted: list[str]) -> Iterator[dict]:
        chunks = self._chunks(wanted)
        for doc in docs:
            record = session_record(doc, chunks)
            for _ in range(REREADS):
                if record is not None:
                    break
                with storage_errors(writing=False):  # changed meanwhile (appended, cleared): read it again
                    doc = self.collections.read.find_one({"_id": doc["_id"], "uid": doc["uid"]})
                if doc is None:
                    break  # deleted meanwhile
                record = session_record(doc, self._chunks(chunk_ids(from_doc(doc))))
            if record is not None:
                yield record
            elif doc is not None:
                self.unreadable.append((doc["uid"], doc["sid"]))

    def _chunks(self, ids: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for start in range(0, len(ids), CHUNKS):
            with storage_errors(writing=False):
                out.update(
                    (d["_id"], d) for d in self.collections.read.find({"_id": {"$in": ids[start : start + CHUNKS]}})
                )
        return out

    # import

    def restore(self, batch: list[tuple[int, dict]], *, replace: bool) -> Restored:
        """Write a batch of checked records given with their line numbers."""
        done = Restored()
        self._restore_sessions([(n, r) for n, r in batch if r["kind"] == "session"], replace, done)
        self._restore_markers([(n, r) for n, r in batch if r["kind"] != "session"], replace, done)
        return done

    def _restore_sessions(self, sessions: list[tuple[int, dict]], replace: bool, done: Restored) -> None:
        keys = [record_key(r) for _, r in sessions]
        with storage_errors(writing=False):
            stored = {d["_id"]: d for d in self.collections.read.find({"_id": {"$in": keys}}, {"r": 1, "v": 1})}
        todo: list[tuple[int, dict]] = []
        chunks: list[dict] = []
        for n, record in sessions:
            there = stored.get(record_key(record))
            if there is not None and (there.get("r"), there.get("v")) == (record["incarnation"], record["version"]):
                done.unchanged["session"] += 1
                continue
            if there is not None and not replace:
                done.refused.append((n, "another state of this session is stored (--replace overwrites it)"))
                continue
            if there is not None:
                self._remove(record)
                done.replaced["session"] += 1
            doc, doc_chunks = session_docs(record, self.chunk_size)
            todo.append((n, doc))
            chunks += doc_chunks
        if chunks:
            for i in self._insert(chunks):  # left by an interrupted import of the same incarnation
                with storage_errors():
                    self.collections.write(True).replace_one(
                        {"_id": chunks[i]["_id"], "uid": chunks[i]["uid"]}, chunks[i]
                    )
        slotted = [t for t in todo if self._fits(t[1])]
        failed = set(self._insert([doc for _, doc in slotted]))
        retry = [t for t in todo if not self._fits(t[1])] + [t for i, t in enumerate(slotted) if i in failed]
        done.imported["session"] += len(slotted) - len(failed)
        for n, doc in retry:
            reason = self._insert_in_free_slot(doc)
            if reason:
                done.refused.append((n, reason))
            else:
                done.imported["session"] += 1

    def _fits(self, doc: dict) -> bool:
        """Whether the document's slot means the same here (a number below this server's MAX_SESSIONS, or none)."""
        return type(doc["slot"]) is not int or doc["slot"] < self.max_sessions

    def _insert(self, docs: list[dict]) -> list[int]:
        """Insert what is not there yet; the indexes of the documents a duplicate key kept out."""
        if not docs:
            return []
        with storage_errors():
            return insert_new(self.collections.write(True), docs)

    def _insert_in_free_slot(self, doc: dict) -> str:
        """Insert a session whose slot is held here by another; "" when done, else why not."""
        for _ in range(self.max_sessions + 1):
            if type(doc["slot"]) is int:
                with storage_errors(writing=False):
                    holders = self.collections.read.find({"uid": doc["uid"], **in_slot(self.max_sessions)}, {"slot": 1})
                    taken = {h["slot"] for h in holders}
                free = [n for n in range(self.max_sessions) if n not in taken]
                if not free:
                    return f"its user already holds all {self.max_sessions} active slots (MAX_SESSIONS) here"
                doc["slot"] = free[0]
            with storage_errors():
                try:
                    self.collections.write(True).insert_one(doc)
                    return ""
                except DuplicateKeyError as exc:
                    if is_id_conflict(exc.details or {}):
                        return "a session was stored under this id while importing"
        return "no free slot could be taken (the user's sessions kept changing)"

    def _remove(self, record: dict) -> None:
        """The stored session a record replaces, and its archive chunks."""
        user, sid = stored_user(record), record["session_id"]
        with storage_errors():
            coll = self.collections.write(True)
            coll.delete_many({"uid": user, "sid": sid, "k": "m"})
            coll.delete_one({"_id": record_key(record), "uid": user})

    def _restore_markers(self, markers: list[tuple[int, dict]], replace: bool, done: Restored) -> None:
        docs = [marker_doc(r) for _, r in markers]
        there = set(self._insert(docs))
        for i, (_, record) in enumerate(markers):
            name = record["kind"]
            if i not in there:
                done.imported[name] += 1
            elif replace:
                with storage_errors():
                    self.collections.write(True).replace_one({"_id": docs[i]["_id"], "uid": docs[i]["uid"]}, docs[i])
                done.replaced[name] += 1
            else:
                done.unchanged[name] += 1
