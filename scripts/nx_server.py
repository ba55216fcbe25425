"""The embedded nx-27017, with its TTL purge run at most every 30 seconds per collection.

neosqlite purges expired documents at the start of every find / count / aggregate: a full-table
DELETE per read, so each read costs O(documents) and the embedded default slowed to a crawl past
tens of thousands of sessions. MongoDB's own reaper runs once a minute, and this service checks
expiry in every query itself, so nothing depends on the purge being immediate.
Run as `python -m scripts.nx_server <nx-27017 arguments>`; without the hook it is plain nx-27017.
"""

from __future__ import annotations

import sys
import threading
import time

INTERVAL = 30.0  # MongoDB reaps every 60 s; one purge can take a second on a large collection


def throttle() -> bool:
    """Wrap neosqlite's per-read purge; False (stock behaviour) if its internals have changed."""
    try:
        from neosqlite.collection import Collection

        original = Collection._auto_purge_ttl
    except (ImportError, AttributeError):
        return False
    last: dict[tuple[int, str], float] = {}
    lock = threading.Lock()

    def throttled(self: Collection) -> None:
        key = (id(self.database), self.name)
        now = time.monotonic()
        with lock:
            if now - last.get(key, -INTERVAL) < INTERVAL:
                return
            last[key] = now
        original(self)

    Collection._auto_purge_ttl = throttled
    return True


if __name__ == "__main__":
    throttle()
    from nx_27017 import main

    sys.argv[0] = "nx-27017"
    main()
