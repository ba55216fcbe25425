"""What is stored, at a glance, and the erasure of one user: for the admin CLI through SessionStore. I/O (pymongo).

The census streams one projection of every document and keeps counters, never documents (no
aggregate: nx-27017 runs one over a copy of the whole collection). Erasure deletes by `uid`, which
every document carries, kind by kind for the count, then whatever else a later kind may add.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from app.storage.layout import KINDS
from app.storage.mongo import Collections, storage_errors
from app.tenants import split_user_key

PROJECTION = {"k": 1, "uid": 1, "st": 1, "exp": 1, "n": 1, "mh": 1, "lu": 1, "csz": 1, "ac": 1}


def census(collections: Collections, max_sessions: int, now: int, tenant: str | None = None) -> dict[str, Any]:
    """Counts of documents, sessions, users, messages and context bytes, as of `now` (epoch ms): of one
    tenant if given, else of all with each tenant's sessions and users."""
    kinds: Counter = Counter()
    sessions: Counter = Counter()
    live_per_user: Counter = Counter()  # every user with a session, and how many of them are active
    per_tenant: dict[str, Counter] = {}
    messages = longest = context = largest = 0
    with storage_errors(writing=False):
        for doc in collections.read.find({}, PROJECTION).batch_size(1000):
            owner = split_user_key(doc["uid"])[0] if isinstance(doc.get("uid"), str) else ""
            if tenant is not None and owner != tenant:
                continue
            kinds[KINDS.get(doc.get("k"), "other")] += 1
            if doc.get("k") != "s":
                continue
            status = "expired" if doc["exp"] <= now else doc["st"]
            sessions[status] += 1
            counts = per_tenant.setdefault(owner, Counter())
            counts["sessions"] += 1
            counts["active"] += status == "active"
            counts["users"] += doc["uid"] not in live_per_user
            sessions["locked now"] += doc.get("lu", 0) > now
            sessions["never purged (auto_clean false)"] += not doc["ac"]
            live_per_user[doc["uid"]] += status == "active"
            visible = min(doc["n"], doc["mh"])
            messages, longest = messages + visible, max(longest, visible)
            context, largest = context + doc.get("csz", 0), max(largest, doc.get("csz", 0))
    return {
        "documents": {"total": sum(kinds.values()), **{name: kinds[name] for name in (*KINDS.values(), "other")}},
        "sessions": {
            "total": kinds[KINDS["s"]],
            **{
                s: sessions[s] for s in ("active", "expired", "closed", "locked now", "never purged (auto_clean false)")
            },
        },
        "users": {
            "total": len(live_per_user),
            "at the session limit": sum(1 for n in live_per_user.values() if n >= max_sessions),
        },
        "messages": {"visible": messages, "longest history": longest},
        # csz bounds a context with unfolded patches from above: "about"
        "context bytes (about)": {"total": context, "largest": largest},
        "tenants": {
            name: {"sessions": c["sessions"], "active": c["active"], "users": c["users"]}
            for name, c in sorted(per_tenant.items())
        },
    }


def wipe_user(collections: Collections, user_id: str) -> tuple[dict[str, int], bool]:
    """Delete every document of `user_id`: counts by kind, and whether none is left."""
    coll = collections.write(True)
    removed: dict[str, int] = {}
    with storage_errors():
        for kind, name in KINDS.items():  # sessions first: nothing new refers to what goes after
            removed[name] = coll.delete_many({"uid": user_id, "k": kind}).deleted_count
        removed["other"] = coll.delete_many({"uid": user_id}).deleted_count
        left = collections.read.find_one({"uid": user_id}, {"_id": 1})
    return removed, left is None
