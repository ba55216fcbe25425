"""The one retry policy of the storage: how it repeats an operation that lost a race. Pure.

Only lost races are repeated (a conditional write that missed because another request changed the
session first, a slot taken between choosing it and inserting): never a failed database command,
which the caller sees as 503 and may repeat itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    seconds: float
    pause: float  # the longest random pause between rounds, from the third round on

    def rounds(self) -> Iterator[int]:
        """Round numbers from 0, until the attempts or the time run out (the caller then gives up)."""
        deadline = time.monotonic() + self.seconds
        for n in range(self.attempts):
            if n >= 2:
                if time.monotonic() > deadline:
                    return
                time.sleep(random.random() * self.pause)  # let the other writers through
            yield n


LOST_RACES = RetryPolicy(attempts=50, seconds=10.0, pause=0.005)
