"""One computed write per session at a time within a process: fewer lost races, same guarantees. Pure.

A write computed from the stored state (edits, a schema-checked merge, compact, rewind) is a
compare-and-set: when many threads of one worker write one session at once, all but one miss and
read again, round after round, and with dozens of them some run out of the retry policy. Taking
turns per session inside the process leaves only the other processes to race (the database's
compare-and-set still decides between them), and each turn starts from the state the previous
one wrote. A turn is waited for at most `patience` seconds; past it the write races as before.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator


class _Turn:
    __slots__ = ("lock", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()


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
        got = turn.lock.acquire(timeout=self.patience)
        try:
            yield
        finally:
            if got:
                turn.lock.release()
