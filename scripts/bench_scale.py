"""The benchmark's scale phase: how the embedded default behaves as sessions accumulate. Development tooling.

Not run in production. Through the real service (the rig's gunicorn, HTTP, its file-backed nx-27017) it
fills the database with the service's own `create` tool, concurrently, ~5 sessions per user, each with a
small context and, for one in 33, a few appended messages, up to each size of SIZES (stored sessions,
counted by the database: what earlier phases left counts too). At each size one client sends serial
requests: `list` (first page) of random users, `list` second page (users with 35 sessions, all but 5
closed: the limit is 10 active), and `get`, `update` (merge), `create` (a new user), which should stay
flat. At the largest size, housekeeping: a few thousand sessions created with a 1 s timeout become
purgeable (expiry + min(timeout, PURGE_GRACE) = creation + 2 s), then 4 clients run a closed loop of
`get` with one `list` in LIST_EVERY (list is a find, the kind of read that runs nx-27017's throttled,
budgeted purge pass: findAndModify, which get is, never does), for PURGE_LOOP_S, long enough to cover
the purge passes (every 30 s at most, then every second while a backlog lasts); the same loop before
those sessions existed is the baseline. What it measured goes to Bench.results["scale"];
scripts/bench_report.py reports it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
from typing import Any

from scripts.bench_rig import Rig

SIZES = (10_000, 50_000, 150_000)  # stored sessions; BENCH_SCALE_SIZES overrides (comma list)
QUICK_SIZES = (2_000, 10_000)
PER_USER = 5  # sessions per populated user
WITH_MESSAGES = 33  # one populated session in 33 is created under a caller's id and gets MESSAGES
MESSAGES = [{"role": "user" if i % 2 else "assistant", "content": f"scale message {i} " + "m" * 80} for i in range(4)]
HEAVY_USERS = [f"sc-h{j}" for j in range(20)]  # users with a second page
HEAVY_SESSIONS = 35  # per heavy user: created ten at a time, each ten closed before the next
PAGE = 20
LONG_TIMEOUT = 86_400  # populated sessions' timeout: only the expiring ones become purgeable in the phase
LIST_EVERY = 10  # housekeeping loop: one list in this many requests
CONTEXT = json.dumps({"topic": "scale", "lang": "en", "step": 0}, separators=(",", ":"))
SEED = 20261201
OWN_SESSIONS = 1_000  # the fewest sessions the phase creates itself, whatever is stored already


def _req(op: str, **body: Any) -> tuple[str, str]:
    return f"/v1/session/{op}", json.dumps(body)


class Scale(Rig):
    """The scale phase (BENCH_PHASES=scale) on the rig's processes."""

    def scale(self) -> None:
        started = time.monotonic()
        env_sizes = [int(s) for s in os.environ.get("BENCH_SCALE_SIZES", "").split(",") if s.strip()]
        sizes = env_sizes or (QUICK_SIZES if self.quick else SIZES)
        n = 100 if self.quick else 200
        rng = random.Random(SEED)
        out: dict[str, Any] = {"serial_requests": n, "sizes": []}
        self.results["scale"] = out
        self.log(f"scale: {len(HEAVY_USERS)} users with {HEAVY_SESSIONS} sessions each (all but 5 closed)")
        self._heavy_users()
        made = 0  # sessions populated so far: session s belongs to user sc-u<s // PER_USER>
        known: list[tuple[str, str]] = []
        for target in sizes:
            missing = target - self.sessions_stored()
            if made == 0:  # its own users to sample: earlier phases may have stored more than the first size
                missing = max(missing, OWN_SESSIONS)
            populate = None
            if missing > 0:
                self.log(f"scale: creating {missing:,} sessions (to {target:,} stored), {self.concurrency} connections")
                populate = self._populate(made, missing)
                made += missing
            users = -(-made // PER_USER)
            self.log(f"scale: at {target:,}: serial list, list page 2, get, update, create ({n} each)")
            entry, known = self._measure(target, users, n, rng)
            entry["populate"] = populate
            out["sizes"].append(entry)
        out["housekeeping"] = self._housekeeping(users, known, rng)
        out["seconds"] = round(time.monotonic() - started, 1)

    def _count(self, query: dict[str, Any]) -> int:
        """The database's own count (the `count` command: one SQL COUNT in nx-27017)."""
        return self.mongo["coze_sessions"].command("count", "sessions", query=query)["n"]

    def sessions_stored(self) -> int:
        return self._count({"k": "s"})

    def _heavy_users(self) -> None:
        for first in range(0, HEAVY_SESSIONS, 10):
            ids = [f"h{k}" for k in range(first, min(first + 10, HEAVY_SESSIONS))]
            self.run_all([_req("create", user_id=u, session_id=s, context=CONTEXT) for s in ids for u in HEAVY_USERS])
            if first + 10 < HEAVY_SESSIONS:
                self.run_all([_req("close", user_id=u, session_id=s) for s in ids for u in HEAVY_USERS])

    def _populate(self, first: int, count: int) -> dict[str, Any]:
        """Create sessions first .. first+count-1; a user's sessions far apart in the order, so rarely at once."""
        order = sorted(range(first, first + count), key=lambda s: (s % PER_USER, s))
        creates, appends = [], []
        for s in order:
            user = f"sc-u{s // PER_USER}"
            body: dict[str, Any] = {"user_id": user, "context": CONTEXT, "options": {"timeout": LONG_TIMEOUT}}
            if s % WITH_MESSAGES == 0:
                body["session_id"] = f"m{s}"
                appends.append(_req("append_messages", user_id=user, session_id=f"m{s}", messages=MESSAGES))
            creates.append(_req("create", **body))
        r = self.run_all(creates, self.concurrency)
        self.run_all(appends, self.concurrency)
        return {"created": count, "with_messages": len(appends), "rps": r["throughput_rps"], "seconds": r["elapsed_s"]}

    def _serial(self, items: list[tuple[str, str]], n: int) -> dict[str, Any]:
        """One client, back to back, n requests (the items in turn)."""
        cfg = {"mode": "closed", "items": items, "connections": 1, "duration": 120, "max_requests": n}
        return self.run_load(cfg, self.service)

    def _measure(
        self, target: int, users: int, n: int, rng: random.Random
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        stored, documents = self.sessions_stored(), self.documents()  # the size measured at (creates add n)
        sample = [f"sc-u{rng.randrange(users)}" for _ in range(n)]
        known: list[tuple[str, str]] = []  # existing sessions, learned from first pages
        for user in sample[: max(10, n // 4)]:
            page = self.post("/v1/session/list", {"user_id": user, "options": {"limit": PAGE}})
            known += [(user, s["session_id"]) for s in page["sessions"]]
        cursors = [self.post("/v1/session/list", {"user_id": u, "options": {"limit": PAGE}}) for u in HEAVY_USERS]
        if not all(c["next_cursor"] for c in cursors):
            raise RuntimeError("scale: a heavy user has no second page")
        touched = rng.sample(known, min(n, len(known)))
        items = {
            "list": [_req("list", user_id=u, options={"limit": PAGE}) for u in sample],
            "list_page2": [
                _req("list", user_id=u, options={"limit": PAGE, "cursor": c["next_cursor"]})
                for u, c in zip(HEAVY_USERS, cursors, strict=True)
            ],
            "get": [_req("get", user_id=u, session_id=s) for u, s in touched],
            "update": [_req("update", user_id=u, session_id=s, context='{"step":%N%}') for u, s in touched],
            "create": [_req("create", user_id=f"sc-new-{target}-%N%", context=CONTEXT)],
        }
        ops = {op: self._serial(its, n) for op, its in items.items()}
        entry = {
            "target": target,
            "sessions": stored,
            "documents": documents,
            "load": os.getloadavg(),
            "ops": ops,
        }
        return entry, known

    def _purgeable(self, users: list[str]) -> int:
        """Sessions of these users still stored although their purge date has passed."""
        now = dt.datetime.now(dt.UTC)
        return self._count({"k": "s", "uid": {"$in": users}, "pa": {"$lt": now}})

    def _housekeeping(self, users: int, known: list[tuple[str, str]], rng: random.Random) -> dict[str, Any]:
        seconds = 35.0 if self.quick else 60.0
        expiring = 1_000 if self.quick else 3_000
        mix = []
        for i, (user, sid) in enumerate(known):
            mix.append(_req("get", user_id=user, session_id=sid))
            if i % (LIST_EVERY - 1) == LIST_EVERY - 2:
                mix.append(_req("list", user_id=f"sc-u{rng.randrange(users)}", options={"limit": PAGE}))
        loop = {"mode": "closed", "items": mix, "connections": 4, "duration": seconds, "warmup": 1.0, "by_path": True}
        self.log(f"scale: housekeeping baseline, get + 1 list in {LIST_EVERY}, 4 clients, {seconds:.0f} s")
        baseline = self.run_load(loop, self.service)
        owners = [f"sc-x{j}" for j in range(expiring // PER_USER)]
        self.log(f"scale: {expiring:,} sessions with a 1 s timeout, then the same loop while they are purged")
        short = [_req("create", user_id=u, context=CONTEXT, options={"timeout": 1}) for u in owners]
        made = self.run_all(short * PER_USER, self.concurrency)
        time.sleep(3)  # past every purge date: creation + 1 s timeout + min(1 s, PURGE_GRACE)
        at_start = self._purgeable(owners)
        during = self.run_load(loop, self.service)
        left = self._purgeable(owners)  # counted right after the loop (the count may run one more bounded pass)
        return {
            "seconds": seconds,
            "clients": 4,
            "list_every": LIST_EVERY,
            "sessions": self.sessions_stored(),
            "expiring": expiring,
            "create_rps": made["throughput_rps"],
            "purgeable_at_start": at_start,
            "purgeable_at_end": left,
            "purged": expiring - left,
            "documents_after": self.documents(),
            "baseline": baseline,
            "during": during,
        }
