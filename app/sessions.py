"""The core: every operation of every tool, on a SessionStore. Pure logic: no Flask, no pymongo."""

from __future__ import annotations

import dataclasses
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

from app import errors, jsontext, records, responses
from app.records import Miss, Session
from app.validation import Call

log = logging.getLogger(__name__)
UPDATE_RETRY_SECONDS = 10.0
PATCH_LOG_BYTES = 64 * 1024  # contexts up to this size take merges unapplied: one round trip, no read
COMPACT_AFTER = 8  # patches in the log before a worker folds them into the stored context


@dataclass(frozen=True)
class Limits:
    """The server-side limits (settings), each defaulting to the spec's value."""

    max_sessions: int
    timeout: int
    max_timeout: int
    max_history: int
    max_context_bytes: int


class Sessions:
    """Runs a validated Call against the store and returns the full output."""

    def __init__(self, store: Any, limits: Limits) -> None:
        self.store = store
        self.limits = limits

    def execute(self, call: Call) -> dict[str, Any]:
        return getattr(self, "op_" + call.operation)(call)

    # helpers

    def _key(self, call: Call) -> str:
        return records.key(call.user_id, call.session_id)

    def _context_text(self, value: dict) -> str:
        text = jsontext.dumps(value)
        size = len(text.encode("utf-8"))
        if size > self.limits.max_context_bytes:
            raise errors.ContextTooLarge(size=size, limit=self.limits.max_context_bytes)
        return text

    def _diagnose(self, miss: Miss, now: int, *, writable: bool) -> Session:
        """Why a conditional write missed: raises the answer, or returns the live session."""
        s = miss.stored
        if s is None:
            raise errors.SessionExpired() if miss.tomb else errors.SessionNotFound()
        if s.expired(now):
            raise errors.SessionExpired(session=s)
        if writable and s.status == "closed":
            raise errors.SessionClosed(session=s)
        return s

    def _done(self, s: Session) -> Session:
        if not self.store.keep_purgeable_after(s):
            raise errors.SessionExpired()
        return s

    def _write(self, call: Call, update: dict, now: int, **kw: Any) -> Session:
        """A sliding write of one session; raises the precise error when it does not apply."""
        key = self._key(call)
        version = call.options.get("expected_version")
        for _ in range(3):
            found = self.store.write(
                key, update, now=now, version=version, persist=call.options.get("persist", True), **kw
            )
            if isinstance(found, Session):
                return self._done(found)
            live = self._diagnose(found, now, writable=kw.get("writable", True))
            if version is not None and live.version != version:
                raise errors.VersionConflict(session=live, current=live.version)
            if kw.get("room_for") is not None:
                raise errors.HistoryLimit(session=live, limit=live.max_history)
        raise errors.StorageUnavailable()

    def _check_caps(self, call: Call) -> None:
        timeout = call.options.get("timeout")
        if timeout is not None and timeout > self.limits.max_timeout:
            raise errors.InvalidArgument("options.timeout", "maximum", self.limits.max_timeout)
        if call.options.get("max_history", 0) > self.limits.max_history:
            raise errors.InvalidArgument("options.max_history", "maximum", self.limits.max_history)

    # operations

    def op_create(self, call: Call) -> dict[str, Any]:
        self._check_caps(call)
        text = self._context_text(call.context or {})
        session_id = call.session_id or "sess_" + secrets.token_hex(16)
        timeout_ms = call.options.get("timeout", self.limits.timeout) * 1000
        auto_clean = call.options.get("auto_clean", True)

        def build(slot: int) -> tuple[dict, dict | None]:
            now = self.store.clock()
            purge = self.store.purge_for(now + timeout_ms, timeout_ms)
            doc = records.new_doc(
                call.user_id,
                session_id,
                context=text,
                now=now,
                timeout_ms=timeout_ms,
                max_history=call.options.get("max_history", self.limits.max_history),
                auto_clean=auto_clean,
                slot=slot,
                purge_ms=purge,
                chunk_size=self.store.inline,
            )
            return doc, records.new_tomb(doc, purge + self.store.retention_ms) if auto_clean else None

        s, created = self.store.create(
            call.user_id, session_id, build, persist=call.options.get("persist", True), caller_id=bool(call.session_id)
        )
        now = self.store.clock()
        if not created:
            s = self._write(dataclasses.replace(call, session_id=session_id), {}, now, writable=False)
        return responses.session(s, now, created=created)

    def op_get(self, call: Call) -> dict[str, Any]:
        now = self.store.clock()
        s = self._write(call, {}, now, writable=False)
        return responses.session(s, now)

    def op_update(self, call: Call) -> dict[str, Any]:
        """Replace, or merge: by the patch log when the context is small, else by compare-and-set."""
        now = self.store.clock()
        if not call.options.get("merge", True):
            text = self._context_text(call.context)
            update = {"$set": {"ctx": text, "cp": [], "csz": len(text.encode()), "u": now}, "$inc": {"v": 1}}
            return responses.session(self._write(call, update, now), now)
        patch = jsontext.dumps(call.context)
        size = len(patch.encode())
        known = self.store.memory.recall(self._key(call))
        text = known.context if known is not None else ""
        known_large = len(text) * 4 > PATCH_LOG_BYTES and len(text.encode()) > PATCH_LOG_BYTES
        if size > PATCH_LOG_BYTES or known_large:
            return self._merge_by_cas(call)
        # Stored unapplied, under a bound that keeps the merged context within the limit.
        bound = min(self.limits.max_context_bytes, PATCH_LOG_BYTES) - size
        expected = call.options.get("expected_version")
        found = self.store.write(
            self._key(call),
            {"$push": {"cp": patch}, "$inc": {"v": 1, "csz": size}, "$set": {"u": now}},
            now=now,
            version=expected,
            where={"csz": {"$lte": bound}},
            persist=call.options.get("persist", True),
        )
        if isinstance(found, Session):
            if found.patches >= COMPACT_AFTER:
                self.store.compact(found)
            return responses.session(self._done(found), now)
        live = self._diagnose(found, now, writable=True)
        if expected is not None and live.version != expected:
            raise errors.VersionConflict(session=live, current=live.version)
        return self._merge_by_cas(call)  # the bound says the context may be large: merge it here

    def _merge_by_cas(self, call: Call) -> dict[str, Any]:
        """Merge onto the current context here and compare-and-set it (which also empties the log)."""
        key = self._key(call)
        expected = call.options.get("expected_version")
        deadline = time.monotonic() + UPDATE_RETRY_SECONDS
        # Start from the state this process last saw: if it is still current, one round trip.
        current = self.store.memory.recall(key)
        contended = False
        while True:
            now = self.store.clock()
            if current is None or (expected is not None and current.version != expected):
                current = self.store.load(key)
            if current is None or current.expired(now) or current.status != "active":
                current = self._diagnose(Miss(*self.store.inspect(key)), now, writable=True)
            if expected is not None and current.version != expected:
                raise errors.VersionConflict(session=current, current=current.version)
            text = self._context_text(jsontext.merge_patch(jsontext.loads(current.context), call.context))
            found = self.store.write(
                key,
                {"$set": {"ctx": text, "cp": [], "csz": len(text.encode()), "u": now}, "$inc": {"v": 1}},
                now=now,
                timeout_ms=current.timeout_ms,
                version=current.version,
                nonce=current.nonce,
                persist=call.options.get("persist", True),
            )
            if isinstance(found, Session):
                return responses.session(self._done(found), now)
            live = self._diagnose(found, now, writable=True)  # the state that beat ours, just read
            if expected is not None and live.version != expected:
                raise errors.VersionConflict(session=live, current=live.version)
            if time.monotonic() > deadline:
                raise errors.VersionConflict(session=live, current=live.version)
            if contended:
                time.sleep(random.random() * 0.005)  # let the other writers through
            contended, current = True, live

    def op_append_messages(self, call: Call) -> dict[str, Any]:
        now = self.store.clock()
        k = len(call.messages)
        stored = [jsontext.dumps({"r": role, "c": content, "t": now}) for role, content in call.messages]
        reject = call.options.get("on_overflow") == "reject"
        update = {"$push": {"msgs": {"$each": stored}}, "$inc": {"n": k, "tot": k, "pl": k, "v": 1}, "$set": {"u": now}}
        s = self._write(call, update, now, room_for=k if reject else None)
        try:
            self.store.shrink(s)
        except errors.ServiceError:  # the append is stored: answer it; the next append shrinks again
            log.warning("could not archive or trim %s; will retry on the next append", s.key)
        before = min(s.n - k, s.max_history)
        messages = [
            {"seq": s.total - k + 1 + i, "role": role, "content": content, "ts": records.iso(now)}
            for i, (role, content) in enumerate(call.messages)
        ]
        return responses.session(s, now, dropped=before + k - s.message_count, messages=messages)

    def op_history(self, call: Call) -> dict[str, Any]:
        cursor = call.options.get("cursor")
        if cursor is not None and not cursor.isdigit():
            raise errors.InvalidArgument("options.cursor", "pattern")
        now = self.store.clock()
        s = self._write(call, {}, now, writable=False, messages=True)
        last = s.total if cursor is None else min(s.total, int(cursor) - 1)
        first = max(s.visible_first, last - call.options["limit"] + 1)
        texts = {s.inline_first + i: text for i, text in enumerate(s.messages or ())}
        if first < s.inline_first and first <= last:  # the page reaches into the archive
            texts.update(self.store.archived(s, first, min(last, s.inline_first - 1)))
        messages = []
        for seq in range(first, last + 1):
            if seq in texts:  # absent only if a concurrent clear or delete removed it
                m = jsontext.loads(texts[seq])
                messages.append({"seq": seq, "role": m["r"], "content": m["c"], "ts": records.iso(m["t"])})
        more = first <= last and first > s.visible_first
        return responses.session(s, now, messages=messages, next_cursor=str(first) if more else "")

    def op_clear_history(self, call: Call) -> dict[str, Any]:
        now = self.store.clock()
        # bk stays: its chunks are out of view now, and a clear retried after a failed drop finds them
        update = {"$set": {"msgs": [], "n": 0, "pl": 0, "u": now}, "$inc": {"v": 1}}
        before: dict = {}
        s = self._write(call, update, now, seen=before)
        self.store.drop_archive(before)  # the cleared messages leave the database, archive included
        return responses.session(s, now)

    def op_touch(self, call: Call) -> dict[str, Any]:
        self._check_caps(call)
        key = self._key(call)
        persist = call.options.get("persist", True)
        timeout = call.options.get("timeout")
        new_timeout_ms = timeout * 1000 if timeout is not None else None
        for _ in range(3):
            now = self.store.clock()
            # No expiry filter: touch revives an expired session that still holds its slot.
            found = self.store.write(
                key, {}, now=now, live=False, new_timeout_ms=new_timeout_ms, where=self.store.in_slot(), persist=persist
            )
            if not isinstance(found, Session):
                if found.stored is None:
                    raise errors.SessionExpired() if found.tomb else errors.SessionNotFound()
                if found.stored.status == "closed":
                    raise errors.SessionClosed(session=found.stored)
                found = self.store.reclaim_slot(found.stored, now=now, new_timeout_ms=new_timeout_ms, persist=persist)
            if found is not None:
                return responses.session(self._done(found), now)
        raise errors.StorageUnavailable()

    def op_list(self, call: Call) -> dict[str, Any]:
        after = None
        cursor = call.options.get("cursor")
        if cursor is not None:
            created, _, sid = cursor.partition(":")
            if not created.isdigit() or not sid:
                raise errors.InvalidArgument("options.cursor", "pattern")
            after = (int(created), sid)
        now = self.store.clock()
        limit = call.options["limit"]
        found = self.store.list(call.user_id, now, call.options.get("status", "all"), limit + 1, after)
        page = found[:limit]
        out = responses.blank()
        out["sessions"] = [responses.summary(s, now) for s in page]
        if len(found) > limit:
            out["next_cursor"] = f"{page[-1].created}:{page[-1].session_id}"
        return out

    def op_close(self, call: Call) -> dict[str, Any]:
        now = self.store.clock()
        key = self._key(call)
        update = {"$set": {"st": "closed", "slot": key, "u": now}, "$inc": {"v": 1}}
        try:
            s = self._write(call, update, now)
        except errors.SessionClosed as exc:
            s = exc.session  # closing twice is harmless: answer the closed session
        return responses.session(s, now)

    def op_delete(self, call: Call) -> dict[str, Any]:
        if not self.store.delete(self._key(call), persist=call.options.get("persist", True)):
            raise errors.SessionNotFound()
        out = responses.blank()
        out.update(session_id=call.session_id, status="deleted")
        return out
