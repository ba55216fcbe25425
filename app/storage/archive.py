"""Long histories: the session document keeps its newest messages, older ones move to archive chunks. I/O.

Chunk boundaries are aligned (inline_first + j * cs) and chunk ids deterministic, so processes
archiving at once write identical chunks; the session update is conditional on the state read,
and the loser deletes only chunks nobody can refer to any more. Chunks are written before the
session moves on, so a history page never misses a message.

Every document stays far below MongoDB's 16 MiB by construction: a message is stored at the bytes
the spec counts (at most 64 KiB plus its header), archiving starts at 2 * cs messages or
INLINE_BYTES stored bytes, and a chunk holds at most cs <= 64 messages (settings.MAX_CHUNK).
"""

from __future__ import annotations

import logging

from pymongo import ReturnDocument

from app.model import Message, Session
from app.storage.documents import new_chunk
from app.storage.layout import (
    CHUNK,
    F,
    by_id,
    by_ids,
    chunk_key,
    chunk_seq,
    from_doc,
    of_session,
    only,
    purge_fields,
)
from app.storage.messages import chunk_ranges, chunk_texts, decode_message, inline_first, inline_texts, text_bytes
from app.storage.mongo import Collections, insert_new, storage_errors

log = logging.getLogger(__name__)
CHUNK_SIZE = 50  # messages per chunk by default (HISTORY_INLINE): one default `history` page stays inline
INLINE_BYTES = 2 * 1024 * 1024  # past this, every whole chunk moves out, whatever the count


def _window(s: Session) -> int:
    """How many seqs the visible history spans: max_history, plus the gaps a rewind left among them."""
    return s.last_seq - s.first_seq + 1


def _slack(max_history: int) -> int:
    """How far the inline history may run past a small max_history before it is trimmed."""
    return max(1, max_history // 10)


class Archive:
    def __init__(self, collections: Collections, chunk_size: int = CHUNK_SIZE) -> None:
        self.collections = collections
        self.chunk_size = chunk_size

    def size(self, s: Session) -> int:
        """The session's chunk size (fixed when it was created: workers with other settings agree)."""
        return s.stored.chunk_size or self.chunk_size

    def shrink(self, s: Session, *, persist: bool) -> None:
        """Keep the session document small after an append: trim a short history, archive a long one."""
        size, st = self.size(s), s.stored
        if s.max_history <= size:
            if st.inline >= _window(s) + _slack(s.max_history):
                self._trim(s, persist)
        elif st.inline >= 2 * size or (st.inline >= size and st.inline_bytes >= INLINE_BYTES):
            self._archive(s, persist)

    def _trim(self, s: Session, persist: bool) -> None:
        """Cut the inline history down to the visible window; skipped if another write raced it."""
        keep = _window(s)
        with storage_errors():
            self.collections.write(persist).update_one(
                {**by_id(s.stored.key, s.user_id), F.INLINE: s.stored.inline, F.LAST_SEQ: s.last_seq},
                {"$push": {F.MESSAGES: {"$each": [], "$slice": -keep}}, "$set": {F.INLINE: keep}},
            )

    def _archive(self, s: Session, persist: bool) -> None:
        """Move the oldest whole chunks out of the session document.

        Chunks wholly older than the visible history are dropped, or deleted if archived before.
        """
        coll = self.collections.write(persist)
        mine = by_id(s.stored.key, s.user_id)
        with storage_errors():
            doc = self.collections.read.find_one({**mine, F.NONCE: s.stored.nonce})
        if not doc:
            return
        cur = from_doc(doc)
        size, st = self.size(cur), cur.stored
        keep = size if st.inline_bytes < INLINE_BYTES else 0
        whole = (st.inline - keep) // size
        if whole < 1:
            return
        texts, visible, start = st.texts or (), cur.first_seq, inline_first(cur)
        firsts = [start + j * size for j in range(whole)]
        new = [
            new_chunk(cur, first, list(texts[j * size : (j + 1) * size]))
            for j, first in enumerate(firsts)
            if first + size - 1 >= visible
        ]
        ranges = chunk_ranges(cur)
        garbage = [chunk_key(st.key, st.nonce, first) for first, last in ranges if last < visible]
        # a losing archiver may have left an aligned chunk that is now wholly out of view: never referenced
        garbage += [chunk_key(st.key, st.nonce, f) for f in firsts if f + size - 1 < visible]
        chunks = [first for first, last in ranges if last >= visible] + [d[F.FIRST_SEQ] for d in new]
        left = texts[whole * size :]
        with storage_errors():
            reused = self._insert_chunks(new, persist) if new else False
            after = coll.find_one_and_update(
                {**mine, F.NONCE: st.nonce, F.LAST_SEQ: cur.last_seq, F.INLINE: st.inline},
                {
                    "$push": {F.MESSAGES: {"$each": [], "$slice": -len(left)}},
                    "$set": {F.INLINE: len(left), F.INLINE_BYTES: text_bytes(left), F.CHUNKS: chunks},
                },
                only(F.PURGE_MS),
                return_document=ReturnDocument.AFTER,
            )
            if after is None:
                self._drop_unreferenced(cur, [d[F.ID] for d in new], persist)
                return
            if garbage:
                coll.delete_many(by_ids(garbage, cur.user_id))
            if new and cur.auto_clean and (reused or after.get(F.PURGE_MS, 0) > st.purge_ms):
                # the purge date moved while we archived, or a chunk written earlier carries an older one
                fresh = {"$set": purge_fields(after[F.PURGE_MS])}
                ids = [d[F.ID] for d in new]
                coll.update_many({**by_ids(ids, cur.user_id), F.PURGE_MS: {"$lt": after[F.PURGE_MS]}}, fresh)

    def _insert_chunks(self, chunks: list[dict], persist: bool) -> bool:
        """Insert archive chunks; True if some were there already (written by a losing archiver)."""
        return bool(insert_new(self.collections.write(persist), chunks))  # the same chunk from another process is fine

    def _drop_unreferenced(self, cur: Session, chunk_ids: list[str], persist: bool) -> None:
        """After a lost archive race: delete our chunks unless stored or future state refers to them."""
        if not chunk_ids:
            return
        mine = by_id(cur.stored.key, cur.user_id)
        now = self.collections.read.find_one(mine, only(F.CHUNKS, F.NONCE, F.LAST_SEQ, F.INLINE))
        if now is not None and now.get(F.NONCE) == cur.stored.nonce:
            # Still to archive (at or after the inline start) or referenced: keep; the rest is dead.
            start, refs = now[F.LAST_SEQ] - now[F.INLINE] + 1, set(now.get(F.CHUNKS, ()))
            chunk_ids = [c for c in chunk_ids if chunk_seq(c) < start and chunk_seq(c) not in refs]
        if chunk_ids:
            self.collections.write(persist).delete_many(by_ids(chunk_ids, cur.user_id))

    def drop_cleared(self, before: Session, *, persist: bool) -> None:
        """After clear_history: delete every chunk of the cleared messages, by the session's key.

        Besides those in bk, a chunk may exist that no state lists (left by an archiver that lost a
        race, or was killed between writing it and recording it): only then can one exist at all.
        """
        if before.stored.chunks or before.stored.inline >= self.size(before):
            with storage_errors():
                self.collections.write(persist).delete_many(
                    {**of_session(before.user_id, before.session_id, CHUNK), F.FIRST_SEQ: {"$lte": before.last_seq}}
                )

    def messages(self, s: Session, first: int, last: int) -> list[Message]:
        """The visible messages with seqs in [first, last], oldest first: inline ones, then archived (one query)."""
        first = max(first, s.first_seq)
        if first > last:
            return []
        start = inline_first(s)
        texts = {seq: text for seq, text in inline_texts(s) if first <= seq <= last}
        if first < start:
            texts.update(self._archived(s, first, min(last, start - 1)))
        out = []
        for seq in range(first, last + 1):
            if seq in texts:  # absent only if a concurrent clear or delete removed it
                role, content, ts, _ = decode_message(texts[seq])
                out.append(Message(seq, role, content, ts))
        return out

    def seqs_of(self, s: Session, request_id: str) -> list[int]:
        """The visible seqs of the messages an append under `request_id` stored (inline or archived:
        archiving may have split one append between a chunk and the session document)."""
        start = inline_first(s)
        texts = {seq: text for seq, text in inline_texts(s) if seq >= s.first_seq}
        if s.first_seq < start:
            texts.update(self._archived(s, s.first_seq, start - 1))  # rare: only a repeat asks
        return sorted(seq for seq, text in texts.items() if decode_message(text)[3] == request_id)

    def _archived(self, s: Session, first: int, last: int) -> dict[int, str]:
        wanted = [f for f, end in chunk_ranges(s) if end >= first and f <= last]
        if not wanted:
            return {}
        ids = [chunk_key(s.stored.key, s.stored.nonce, f) for f in wanted]
        with storage_errors(writing=False):
            docs = list(self.collections.read.find(by_ids(ids, s.user_id)))
        out: dict[int, str] = {}
        for doc in docs:
            out.update((seq, text) for seq, text in chunk_texts(doc, s.gaps) if first <= seq <= last)
        return out
