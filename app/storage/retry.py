"""The one retry policy of the storage: how it repeats an operation that lost a race. Pure.

Only lost races are repeated (a conditional write that missed because another request changed the
session first, a slot taken between choosing it and inserting): never a failed database command,
which the caller sees as 503 and may repeat itself.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    seconds: float  # rounds go on until this much time has passed (at least two are always tried)
    pause: float  # the longest random pause between rounds, from the third round on

    def rounds(self) -> Iterator[int]:
        """Round numbers from 0, until the time runs out (the caller then gives up)."""
        deadline = time.monotonic() + self.seconds
        for n in itertools.count():
            if n >= 2:
                if time.monotonic() > deadline:
                    return
                time.sleep(random.random() * self.pause)  # let the other writers through
            yield n


# Time, not a count, bounds the rounds: a write computed from the stored state that lost to another
# worker reads before it writes again, while that worker's next write goes straight from its cache,
# so at 32 connections on one cart a write lost 50 rounds in a row within a second and was answered
# 503 (4 of 2,000) when 50 rounds were the limit; given 10 s, the slowest won in 2.2 s.
LOST_RACES = RetryPolicy(seconds=10.0, pause=0.005)
