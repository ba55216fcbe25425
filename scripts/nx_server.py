"""The embedded nx-27017, its TTL purge run at most every 30 seconds, its queries on its indexes.

neosqlite purges expired documents at the start of every find / count / aggregate: a DELETE per
read. MongoDB's own reaper runs once a minute, and this service checks expiry in every query itself,
so nothing depends on the purge being immediate. scripts/nx_patch.py then makes the purge and the
queries by uid use indexes (list, slot holders, deletes by session key), so they stay flat as
sessions accumulate. Run as `python -m scripts.nx_server <nx-27017 arguments>`; development tooling.
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
    from scripts import nx_patch

    nx_patch.apply()  # after throttle(): its TTL purge wraps the throttled one
    from nx_27017 import main

    sys.argv[0] = "nx-27017"
    main()
