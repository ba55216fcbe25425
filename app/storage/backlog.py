"""The deliveries as the admin CLI and the metrics see them: events not delivered, by state, type and
tenant; dead ones; their redelivery. I/O on the deliveries collection only (storage.outbox fills it).

A delivery names its session's stored user key, from which the tenant is read back (app.tenants):
the collection stays small (events in flight, dead ones, a day of delivered ones), so a tenant's
share is picked out here rather than kept in an index of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from app.storage.layout import F
from app.storage.mongo import Collections, storage_errors
from app.tenants import split_user_key


class Backlog:
    def __init__(self, deliveries: Collections) -> None:
        self.deliveries = deliveries

    def _found(self, where: dict, fields: dict, tenant: str | None) -> Iterator[dict]:
        """The deliveries matching `where`, only `tenant`'s unless it is None."""
        with storage_errors(writing=False):
            for doc in self.deliveries.read.find(where, {**fields, F.USER: 1}):
                if tenant is None or split_user_key(doc.get(F.USER, ""))[0] == tenant:
                    yield doc

    def summary(self, tenant: str | None = None) -> dict:
        """Counts of events not delivered: pending (never tried), retrying and dead, each by type."""
        counts: dict[str, Counter] = {"pending": Counter(), "retrying": Counter(), "dead": Counter()}
        for doc in self._found({"s": {"$in": ["pending", "dead"]}}, {"t": 1, "s": 1, "tries": 1}, tenant):
            state = "dead" if doc["s"] == "dead" else "retrying" if doc.get("tries") else "pending"
            counts[state][doc["t"]] += 1
        return {state: {"total": sum(c.values()), **dict(sorted(c.items()))} for state, c in counts.items()}

    def dead(self, limit: int, tenant: str | None = None) -> list[dict]:
        """Up to `limit` dead events with their type, tries, last error and when they died; `tenant` names
        the tenant of each."""
        found = self._found({"s": "dead"}, {"t": 1, "le": 1, "tries": 1, "dd": 1}, tenant)
        shown = [doc for doc, _ in zip(found, range(limit), strict=False)]
        for doc in shown:
            doc["tenant"] = split_user_key(doc.pop(F.USER, ""))[0]
        return shown

    def redeliver(self, event_id: str | None, now: int, tenant: str | None = None) -> int:
        """Send a dead event (or every dead one, `event_id` None; of `tenant` only unless it is None)
        again, with a new retry window."""
        where: dict = {"s": "dead"} if event_id is None else {F.ID: event_id, "s": "dead"}
        if tenant is not None:
            where[F.ID] = {"$in": [doc[F.ID] for doc in self._found(where, {F.ID: 1}, tenant)]}
        again = {"$set": {"s": "pending", "due": now, "tries": 0, "rs": now, "le": ""}}
        with storage_errors():
            return self.deliveries.durable.update_many(where, again).modified_count

    def pending_by_type(self) -> Counter:
        """Events recorded and not yet delivered nor dead, by type, all tenants together (a gauge's value)."""
        counts: Counter = Counter()
        for doc in self._found({"s": "pending"}, {"t": 1}, None):
            counts[doc["t"]] += 1
        return counts
