"""Waiting for a session lock: how many threads of a process may wait at once, and the wait itself.
Pure: threading and time only (no Flask, no pymongo).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from app import errors

T = TypeVar("T")
FIRST_PAUSE, LONGEST_PAUSE = 0.05, 0.5  # seconds between tries while waiting for a lock


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
        slots = self._slots
        got = slots is not None and slots.acquire(blocking=False)
        try:
            yield got
        finally:
            if slots is not None and got:
                slots.release()

    def retrying(
        self, take: Callable[[], T], wait_s: float, clock: Callable[[], int], on_wait: Callable[[], None]
    ) -> T:
        """`take()`, tried again while it finds the session locked, for up to `wait_s` seconds if a slot is
        free; pauses grow from FIRST_PAUSE to LONGEST_PAUSE, never past the lock's end; `on_wait` once."""
        deadline = time.monotonic() + wait_s
        pause = FIRST_PAUSE
        with contextlib.ExitStack() as stack:
            may_wait = None
            while True:
                try:
                    return take()
                except errors.SessionLocked as exc:
                    left = deadline - time.monotonic()
                    if may_wait is None and left > 0:
                        may_wait = stack.enter_context(self.slot())
                    if left <= 0 or not may_wait:
                        raise
                    if pause == FIRST_PAUSE:
                        on_wait()
                    until_free = (exc.session.locked_until - clock()) / 1000
                    time.sleep(max(0.0, min(pause, left, until_free)))
                    pause = min(pause * 2, LONGEST_PAUSE)
