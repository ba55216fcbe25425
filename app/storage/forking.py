"""Fork: a new session of the same user from an existing one, its history cut at a seq. I/O.

The source is only read, as `get` reads it: a live one has its timeout restarted (its version does
not change), a closed one or an expired one still stored forks too. The new session's documents
are built as an import builds them (records.session_docs: the same seqs, gaps and archive chunks);
its chunks are written first, so no history page of it can miss a message, then it takes a free
slot of its user like any create, so a fork counts toward the limit and a repeat finds it.
"""

from __future__ import annotations

from collections.abc import Callable

from app import errors, seqs
from app.model import Applied, Expect, NewSession, Session, Slide
from app.storage import records
from app.storage.archive import Archive
from app.storage.expiry import Expiry
from app.storage.layout import DELETED, F, by_ids
from app.storage.mongo import Collections, storage_errors

SOURCE_READ = Expect(writable=False, guarded=False)  # as get reads: never blocked by the lock, closed is fine


class Forks:
    """Forks of the store's sessions; `read`, `apply` and `create` are the store's own."""

    def __init__(
        self,
        collections: Collections,
        archive: Archive,
        expiry: Expiry,
        *,
        read: Callable[..., Session | None],
        apply: Callable[..., Applied],
        create: Callable[..., Applied],
    ) -> None:
        self.collections, self.archive, self.expiry = collections, archive, expiry
        self.read, self.apply, self.create = read, apply, create

    def fork(
        self,
        source_id: str,
        target: NewSession,
        *,
        at_seq: int | None,
        now: int,
        persist: bool,
        request_id: str = "",
    ) -> Applied:
        """The new session `target` (its settings already resolved) from `source_id` cut at `at_seq`
        (None: everything); a repeat, or an existing session under the target's id, is answered as is."""
        source = self._source(target.user_id, source_id, now)
        at = source.last_seq if at_seq is None else at_seq
        if at > source.last_seq:
            raise errors.OutOfRange("fork.at", "maximum", source.last_seq)
        if at < source.summary_upto:  # the summary would cover turns the fork does not have
            raise errors.OutOfRange("fork.at", "minimum", source.summary_upto)
        kept = self.archive.messages(source, source.first_seq, at)[-target.max_history :]
        first = kept[0].seq if kept else at + 1
        gaps = tuple(g for g in seqs.clip(source.gaps, at) if g[1] >= first)
        auto_clean = target.auto_clean
        record = {
            "user_id": target.user_id,
            "session_id": target.session_id,
            "context": source.context,
            "status": "active",
            "version": 1,
            "created": now,
            "updated": now,
            "expires": now + target.timeout_ms,
            "timeout_ms": target.timeout_ms,
            "max_history": target.max_history,
            "auto_clean": auto_clean,
            "appended": len(kept),
            "last_seq": at,
            "chunk_size": self.archive.size(source),
            "request_ids": [request_id] if request_id else [],
            "create_request": request_id,  # a repeat of the fork answers created, as a create's does
            "summary": source.summary,
            "summary_upto": source.summary_upto,
            "gaps": seqs.to_stored(gaps),
            "forked_from": source_id,
            "forked_at_seq": at,
            "slot": None,
            "purge": self.expiry.purge_for(now + target.timeout_ms, target.timeout_ms) if auto_clean else None,
            "messages": [
                {"seq": m.seq, "role": m.role, "content": m.content, "ts": m.ts, "request_id": ""} for m in kept
            ],
        }
        doc, chunks = records.session_docs(record, self.archive.chunk_size)
        if chunks:
            self.archive._insert_chunks(chunks, persist)  # duplicates (a retried fork) are fine
        try:
            done = self.create(target, now=now, persist=persist, caller_id=True, request_id=request_id, template=doc)
        except BaseException:
            self._drop(target.user_id, chunks, persist)
            raise
        if done.session is None or done.session.stored.nonce != doc[F.NONCE]:  # a repeat answered: ours is no one's
            self._drop(target.user_id, chunks, persist)
        return done

    def _source(self, user_id: str, session_id: str, now: int) -> Session:
        """The source with its messages: read as get reads it, or as stored when it has expired."""
        try:
            read = self.apply(user_id, session_id, Slide(), SOURCE_READ, now=now, persist=False, with_messages=True)
            assert read.session is not None  # a write that applied answers its session
            return read.session
        except errors.SessionExpired as exc:
            if exc.session is None:
                raise
        found = self.read(user_id, session_id, messages=True)
        if found is None or found.status == DELETED:
            raise errors.SessionExpired()
        return found

    def _drop(self, user_id: str, chunks: list[dict], persist: bool) -> None:
        if chunks:
            with storage_errors():
                self.collections.write(persist).delete_many(by_ids([c[F.ID] for c in chunks], user_id))
