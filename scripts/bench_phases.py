"""The benchmark's phases: throughput, growth, memory and round trips. Development tooling, not production.

Each phase drives the rig (scripts/bench_rig.py) and stores what it measured in Bench.results, which
scripts/bench_report.py turns into the Markdown tables. The scale phase is scripts/bench_scale.py,
which Bench inherits.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from scripts.bench_report import OPS, merged
from scripts.bench_rig import TOKEN
from scripts.bench_round_trips import count_round_trips
from scripts.bench_scale import Scale
from scripts.bench_servers import Server, rss_kib

SESSIONS = 200  # pre-created sessions the get/update/append/history phases spread over


class Bench(Scale):
    """The phases BENCH_PHASES chooses among (scale: scripts/bench_scale.py), and the sessions they run on."""

    def phase_items(self, op: str, run: str) -> list[tuple[str, str]]:
        users = [(f"bench-u{i}", f"s{i}") for i in range(SESSIONS)]
        if op == "ceiling":
            return [("/ceiling", json.dumps({"key": f"s{i}", "value": "v%N%"})) for i in range(SESSIONS)]
        if op == "create":
            ctx = json.dumps(json.dumps({"topic": "bench", "n": 1}))
            return [("/v1/session/create", f'{{"user_id":"bench-new-{run}-%N%","context":{ctx}}}')]
        path = "/v1/session/update" if op == "update_edits" else f"/v1/session/{op}"
        out = []
        for user, sid in users:
            body: dict[str, Any] = {"user_id": user, "session_id": sid}
            if op == "update":
                body["context"] = '{"step":%N%,"last":"bench"}'
            elif op == "update_edits":  # three in-place edits: a counter, a window of the last 10, a field
                body["edits"] = [
                    {"op": "increment", "path": "/turns", "value": "1"},
                    {"op": "append", "path": "/recent", "value": '"q%N%"', "keep_last": 10},
                    {"op": "set", "path": "/last", "value": '"bench"'},
                ]
            elif op == "append_messages":
                body.update(role="user", content="hello from the benchmark, message %N% " + "x" * 60)
            elif op == "history":
                body["options"] = {"limit": 20}
            out.append((path, json.dumps(body)))
        return out

    def setup_sessions(self) -> None:
        self.log(f"creating {SESSIONS} sessions with 20 messages each")
        ctx = json.dumps({"topic": "bench", "turn": 0})
        msgs = [{"role": "user" if i % 2 else "assistant", "content": "m" * 100} for i in range(20)]
        creates = [
            ("/v1/session/create", json.dumps({"user_id": f"bench-u{i}", "session_id": f"s{i}", "context": ctx}))
            for i in range(SESSIONS)
        ]
        appends = [
            (
                "/v1/session/append_messages",
                json.dumps({"user_id": f"bench-u{i}", "session_id": f"s{i}", "messages": msgs}),
            )
            for i in range(SESSIONS)
        ]
        for items in (creates, appends):
            self.run_all(items)

    def throughput(self) -> None:
        only = [o for o in os.environ.get("BENCH_ONLY", "").split(",") if o]
        ops = ["ceiling", *(o for o in OPS if not only or o in only)]
        out = self.results.setdefault("throughput", {})
        for op in ops:
            server = self.ceiling if op == "ceiling" else self.service
            check = op != "ceiling"
            run = secrets.token_hex(3)
            if op == "ceiling":
                self.log(f"{op}: saturation, {self.concurrency} connections, {self.sat_s:.0f} s")
                sat, paired = self.saturate(op, run + "a", server, self.sat_s, profile=op), None
            else:  # the shared machine's speed drifts: alternate slices with the ceiling, ratio of the sums
                self.log(f"{op}: saturation, {self.concurrency} connections, {self.pairs} x {self.slice_s:.0f} s")
                self.log(f"  each slice after one of the ceiling; {op} profiled in its first slice")
                slices, ceilings = [], []
                for i in range(self.pairs):
                    ceilings.append(self.saturate("ceiling", f"{run}p{i}", self.ceiling, self.slice_s))
                    slices.append(self.saturate(op, f"{run}a{i}", server, self.slice_s, profile=op if i == 0 else ""))
                sat, paired = merged(slices), merged(ceilings)
            self.log(f"{op}: {sat['throughput_rps']} req/s; open loop at {self.rate:.0f} req/s, {self.paced_s:.0f} s")
            paced = self.run_load(
                {
                    "mode": "open",
                    "items": self.phase_items(op, run + "b"),
                    "connections": 128,
                    "rate": self.rate,
                    "duration": self.paced_s,
                    "max_outstanding": int(self.rate),
                    "drain": self.drain_s,
                    "check_error_code": check,
                },
                server,
            )
            half_rate = max(10.0, round(sat["throughput_rps"] / 2))
            self.log(f"{op}: open loop at {half_rate:.0f} req/s (half of saturation), {self.half_s:.0f} s")
            half = self.run_load(
                {
                    "mode": "open",
                    "items": self.phase_items(op, run + "c"),
                    "connections": 64,
                    "rate": half_rate,
                    "duration": self.half_s,
                    "max_outstanding": int(self.rate),
                    "drain": self.drain_s,
                    "check_error_code": check,
                },
                server,
            )
            out[op] = {"saturation": sat, "paced": paced, "half": half}
            if paired is not None:
                ceiling = paired["throughput_rps"]
                out[op]["paired_ceiling_rps"] = ceiling
                out[op]["ratio_to_ceiling"] = round(sat["throughput_rps"] / ceiling, 3) if ceiling else 0

    def saturate(self, op: str, run: str, server: Server, seconds: float, profile: str = "") -> dict[str, Any]:
        """Closed-loop load at the benchmark's concurrency: the throughput at saturation."""
        return self.run_load(
            {
                "mode": "closed",
                "items": self.phase_items(op, run),
                "connections": self.concurrency,
                "duration": seconds,
                "warmup": self.warm_s,
                "check_error_code": op != "ceiling",
            },
            server,
            profile=profile,
        )

    def growth(self) -> None:
        out = self.results.setdefault("growth", {})
        n = self.growth_n
        per_level = 4
        self.log("growth: history 0/100/1000 messages")
        for length in (0, 100, 1000):
            sessions = [(f"bench-h{length}-{j}", f"h{j}") for j in range(per_level)]
            for user, sid in sessions:
                self.make_session(user, sid, {"topic": "growth"}, messages=length, size=200)
            for op in ("get", "append_messages"):
                items = []
                for user, sid in sessions:
                    body: dict[str, Any] = {"user_id": user, "session_id": sid}
                    if op == "append_messages":
                        body.update(role="user", content="growth %N% " + "y" * 190)
                    items.append((f"/v1/session/{op}", json.dumps(body)))
                r = self.run_load(
                    {"mode": "closed", "items": items, "connections": 1, "duration": self.growth_s, "max_requests": n},
                    self.service,
                )
                out[f"{op}@history={length}"] = r
        self.log("growth: context 1 KB / 100 KB / 1 MiB")
        for label, size in (("1KB", 1024), ("100KB", 100 * 1024), ("1MiB", 1024 * 1024 - 64)):
            context = _context_of(size)
            sessions = [(f"bench-c{label}-{j}", f"c{j}") for j in range(per_level)]
            for user, sid in sessions:
                self.make_session(user, sid, context)
            for op in ("get", "update"):
                items = []
                for user, sid in sessions:
                    body = {"user_id": user, "session_id": sid}
                    if op == "update":
                        body["context"] = '{"k0000":"patched %N%"}'
                    items.append((f"/v1/session/{op}", json.dumps(body)))
                count = n if size < 500_000 else max(10, n // 4)
                r = self.run_load(
                    {
                        "mode": "closed",
                        "items": items,
                        "connections": 1,
                        "duration": self.growth_s,
                        "max_requests": count,
                    },
                    self.service,
                )
                out[f"{op}@context={label}"] = r

    def memory(self) -> None:
        self.log(f"memory: mixed run of {self.mixed_s:.0f} s")
        items = []
        for i in range(SESSIONS):
            user, sid = f"bench-u{i}", f"s{i}"
            base = {"user_id": user, "session_id": sid}
            items += [
                ("/v1/session/get", json.dumps(base)),
                ("/v1/session/update", json.dumps({**base, "context": '{"mixed":%N%}'})),
                ("/v1/session/append_messages", json.dumps({**base, "role": "assistant", "content": "mix %N%"})),
                ("/v1/session/history", json.dumps({**base, "options": {"limit": 10}})),
                ("/v1/session/touch", json.dumps(base)),
                ("/v1/session/get", json.dumps(base)),
            ]
        items.insert(3, ("/v1/session/create", '{"user_id":"bench-mixed-%N%","context":"{\\"a\\":1}"}'))
        before = self.service.rss_kib()
        r = self.run_load(
            {"mode": "closed", "items": items, "connections": 16, "duration": self.mixed_s, "warmup": 0.5},
            self.service,
            profile="mixed",
        )
        after = self.service.rss_kib()
        same = sorted(set(before) & set(after))
        self.results["memory"] = {
            "mixed_seconds": self.mixed_s,
            "mixed_run": r,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "workers_replaced": sorted(set(before) ^ set(after)),
            "total_before_mib": round(sum(before.values()) / 1024, 1),
            "total_after_mib": round(sum(after.values()) / 1024, 1),
            "max_worker_growth_mib": round(max((after[p] - before[p] for p in same), default=0) / 1024, 1),
            "db_rss_mib": round(rss_kib(self.nx_proc.pid) / 1024, 1),
        }

    def round_trips(self) -> None:
        self.log("round trips per operation (pymongo command monitoring, in-process)")
        self.results["round_trips"] = count_round_trips(self.uri, TOKEN)


def _context_of(size: int) -> dict[str, str]:
    """A context of many ~100-byte keys whose compact JSON is `size` bytes or just under."""
    out: dict[str, str] = {}
    used = 2
    i = 0
    while True:
        key = f"k{i:04d}"
        value = "v" * 90
        cost = len(key) + len(value) + 6 + (1 if out else 0)
        if used + cost > size:
            break
        out[key] = value
        used += cost
        i += 1
    rest = size - used - len('"pad":""') - (1 if out else 0)
    if rest >= 0:
        out["pad"] = "p" * rest
    return out
