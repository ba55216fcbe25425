"""Session storage on MongoDB: the only package that imports pymongo or spells a stored field name.

`Database` owns the client of one process; its `store()` is the SessionStore the core asks for
typed changes (app.model) under typed conditions. The admin CLI reads and writes whole sessions
as export records through `transfer` and `records`, and counts and erases through `census`.
"""

from __future__ import annotations

import time

from app.storage.client import Database

__all__ = ["Database", "epoch_ms"]


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000
