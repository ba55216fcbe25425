"""A cache of what one process saw of the sessions it served: hints for one-round-trip writes. Pure, thread-safe.

Two things, both hints that are checked by the next conditional write, never trusted blindly:
- each session's (timeout, max_history): a sliding write must state the timeout it assumes;
- the latest state of recent sessions (byte-bounded): an update merges onto it and
  compare-and-sets on (nonce, version), so a session this process served last needs no read.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from app.model import Session

LEARNED_MAX = 100_000
RECENT_MAX_BYTES = 16 * 1024 * 1024


class SessionCache:
    def __init__(self, default_timeout_ms: int, default_max_history: int, max_bytes: int = RECENT_MAX_BYTES) -> None:
        self.defaults = (default_timeout_ms, default_max_history)
        self.max_bytes = max_bytes
        self._shape: dict[str, tuple[int, int]] = {}
        self._recent: OrderedDict[str, Session] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def learn(self, s: Session) -> None:
        """Remember what a read or write returned about a session."""
        if len(self._shape) >= LEARNED_MAX:
            self._shape.pop(next(iter(self._shape)), None)
        key = s.stored.key
        self._shape[key] = (s.timeout_ms, s.max_history)
        if len(s.context) > self.max_bytes // 4:
            return
        with self._lock:
            prev = self._drop(key)
            newer = prev is not None and prev.stored.nonce == s.stored.nonce and prev.version > s.version
            # threads may answer late: keep the newer state, and never the messages
            keep = prev if newer else dataclasses.replace(s, stored=dataclasses.replace(s.stored, texts=None))
            self._recent[key] = keep
            self._bytes += len(keep.context)
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._recent.popitem(last=False)[1].context)

    def shape(self, key: str) -> tuple[int, int]:
        """The session's (timeout ms, max_history) as last seen, else the configured defaults."""
        return self._shape.get(key, self.defaults)

    def recall(self, key: str) -> Session | None:
        """The latest state this process saw of a session, if any; possibly stale."""
        with self._lock:
            return self._recent.get(key)

    def forget(self, key: str | None = None) -> None:
        """Forget one session, or everything (as a process that never saw any)."""
        with self._lock:
            if key is None:
                self._shape.clear()
                self._recent.clear()
                self._bytes = 0
            else:
                self._shape.pop(key, None)
                self._drop(key)

    def _drop(self, key: str) -> Session | None:
        prev = self._recent.pop(key, None)
        if prev is not None:
            self._bytes -= len(prev.context)
        return prev
