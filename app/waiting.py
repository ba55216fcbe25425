"""How many threads of a process may wait for a session lock at once. Pure: threading only."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class LockWaiting:
    """How many of a process's threads may wait for a session lock at once.

    A waiting `lock` holds its worker thread (gthread: one request, one thread) for up to
    `options.wait` seconds, trying again with growing pauses; past `slots` waiters a lock that is
    held is answered SESSION_LOCKED at once, so waiting can never take every thread of a worker.
    """

    def __init__(self, slots: int) -> None:
        self._slots = threading.BoundedSemaphore(slots) if slots > 0 else None

    @contextlib.contextmanager
    def slot(self) -> Iterator[bool]:
        got = self._slots is not None and self._slots.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._slots.release()
