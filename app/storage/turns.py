"""One computed write per session at a time within a process: fewer lost races, same guarantees. Pure.

A write computed from the stored state (edits, a schema-checked merge, compact, rewind) is a
compare-and-set: when many threads of one worker write one session at once, all but one miss and
read again, round after round, and with dozens of them some run out of the retry policy. Taking
turns per session inside the process leaves only the other processes to race (the database's
compare-and-set still decides between them), and each turn starts from the state the previous
one wrote. Turns are served in the order they were asked for; one is waited for at most
`patience` seconds, past which the write races as before. The write keeps the time its caller
read before waiting (the answer's expiry figures count from it), so under heavy contention a
session's expiry may be set up to that wait earlier.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator


class _Turn:
    """A ticket queue of one session (a plain lock lets a thread wait forever while later ones go first)."""

    __slots__ = ("ready", "next", "serving", "abandoned", "__weakref__")

    def __init__(self) -> None:
        self.ready = threading.Condition()
        self.next = self.serving = 0
        self.abandoned: set[int] = set()

    def take(self, patience: float) -> int | None:
        """Wait for this thread's turn: its ticket, or None if `patience` ran out first."""
        with self.ready:
            ticket = self.next
            self.next += 1
            deadline = time.monotonic() + patience
            while self.serving != ticket:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.abandoned.add(ticket)  # skipped when its turn comes
                    return None
                self.ready.wait(left)
            return ticket

    def done(self) -> None:
        with self.ready:
            self.serving += 1
            while self.serving in self.abandoned:
                self.abandoned.discard(self.serving)
                self.serving += 1
            self.ready.notify_all()


class Turns:
    def __init__(self, patience: float) -> None:
        self.patience = patience
        self._turns: weakref.WeakValueDictionary[str, _Turn] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def turn(self, key: str) -> Iterator[None]:
        with self._guard:
            turn = self._turns.get(key)
            if turn is None:
                turn = self._turns[key] = _Turn()
        ticket = turn.take(self.patience)
        try:
            yield
        finally:
            if ticket is not None:
                turn.done()
