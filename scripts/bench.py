"""The performance benchmark: `make bench` (full, several minutes) or `BENCH_QUICK=1 make bench` (~1 min).

Starts the service as in production (`gunicorn -c gunicorn.conf.py app.wsgi:application`,
APP_ENV=production, a SERVICE_TOKEN, MONGODB_URI pointing at an nx-27017 started here on a file in a
temporary directory) next to the ceiling (scripts/bench_ceiling.py under the same gunicorn settings),
and drives both over loopback from a separate process (scripts/bench_loadgen.py: an asyncio +
aiohttp client, closed loop for saturation, open loop at a fixed offered rate). The goals, the
arithmetic and the Markdown tables are scripts/bench_report.py.

Measured: throughput at saturation and its ratio to the ceiling (slices of each operation alternate
with slices of the ceiling: the shared machine's speed drifts by a quarter over minutes); p50/p95/p99 at a fixed offered
1000 req/s (and at half the saturation rate, a load the service can sustain); database round trips
per operation (pymongo command monitoring, in-process through the Flask test client); latency against
history length and context size; worker RSS before and after a mixed run. Prints Markdown tables and
writes bench-results/bench-<time>.json.

Environment: BENCH_QUICK=1 (short phases), BENCH_CONCURRENCY (saturation connections, default 32),
BENCH_RATE (offered rate, default 1000), BENCH_MIXED_SECONDS (override the mixed run's length),
BENCH_ONLY (comma list of operations for the throughput phases), BENCH_PHASES (comma list of
round_trips, throughput, growth, memory; default all), BENCH_PYSPY (path of py-spy: record
the workers during each saturation phase, collapsed stacks saved next to the JSON). WEB_CONCURRENCY,
GUNICORN_THREADS etc. reach gunicorn.conf.py unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_report import OPS, WORKERS_SIMULATED, merged, report  # noqa: E402

TOKEN = "bench-" + secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
PHASES = ("round_trips", "throughput", "growth", "memory")
SESSIONS = 200  # pre-created sessions the get/update/append/history phases spread over


# ---------------------------------------------------------------- processes


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return sorted(out)


class Server:
    """One gunicorn with the project's gunicorn.conf.py, on a free port."""

    def __init__(self, name: str, app: str, env: dict[str, str], log: Path) -> None:
        from scripts.embedded import free_port

        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py", app],
            cwd=ROOT,
            env={**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port)},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, expected_workers: int) -> None:
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: gunicorn exited with {self.proc.returncode}; see {self.log}")
            try:
                healthy = requests.get(self.base + "/healthz", timeout=1).status_code == 200
                if healthy and len(self.workers()) >= expected_workers:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: gunicorn did not answer /healthz within 60 s; see {self.log}")

    def workers(self) -> list[int]:
        return _children(self.proc.pid)

    def rss_kib(self) -> dict[int, int]:
        return {pid: _rss_kib(pid) for pid in self.workers()}

    def cpu_s(self) -> float:
        return _proc_cpu(self.proc.pid) + sum(_proc_cpu(p) for p in self.workers())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, quick: bool, tmp: Path, out_dir: Path) -> None:
        self.quick = quick
        self.tmp = tmp
        self.out_dir = out_dir
        self.stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.sat_s = 1.5 if quick else 15.0
        self.warm_s = 0.5 if quick else 2.0
        self.pairs = 1 if quick else 3  # alternating slices of the ceiling and an operation
        self.slice_s = self.sat_s / self.pairs
        self.paced_s = 1.5 if quick else 15.0
        self.half_s = 1.0 if quick else 10.0
        self.drain_s = 3.0 if quick else 10.0  # open loop: a request still unanswered after this is an error
        self.growth_n = 20 if quick else 200
        self.growth_s = 2.0 if quick else 30.0  # each growth measurement stops at this time, or at growth_n
        self.mixed_s = float(os.environ.get("BENCH_MIXED_SECONDS") or (5 if quick else 300))
        self.concurrency = int(os.environ.get("BENCH_CONCURRENCY", "32"))
        self.rate = float(os.environ.get("BENCH_RATE", "1000"))
        self.pyspy = os.environ.get("BENCH_PYSPY", "")
        self.results: dict[str, Any] = {}
        self.nx_proc: subprocess.Popen | None = None
        self.service: Server | None = None
        self.ceiling: Server | None = None
        self.http: Any = None
        self.mongo: Any = None

    # helpers

    def post(self, path: str, body: dict, base: str | None = None) -> dict:
        response = self.http.post((base or self.service.base) + path, data=json.dumps(body), headers=AUTH, timeout=60)
        data = response.json()
        if response.status_code != 200 or data.get("error_code"):
            raise RuntimeError(f"{path}: HTTP {response.status_code} {data.get('error_code')} {data.get('error')}")
        return data

    def run_load(self, cfg: dict[str, Any], server: Server, profile: str = "") -> dict[str, Any]:
        """Run the load generator in its own process; adds the CPU each side used."""
        cfg = {"base": server.base, "headers": AUTH, **cfg}
        self.settle()
        docs = self.documents()
        budget = (
            cfg.get("duration", 0) + cfg.get("warmup", 1) + cfg.get("drain", 0) + cfg.get("request_timeout", 30) + 60
        )
        cpu_server, cpu_db, wall = server.cpu_s(), _proc_cpu(self.nx_proc.pid), time.monotonic()
        spies = []
        if profile and self.pyspy:  # CPU (GIL-holding) stacks of the workers and of nx-27017
            for side, pid, extra in (("workers", server.proc.pid, ["--subprocesses"]), ("db", self.nx_proc.pid, [])):
                out = self.out_dir / f"profile-{self.stamp}-{profile}-{side}.txt"
                spies.append(
                    subprocess.Popen(
                        [self.pyspy, "record", "--pid", str(pid), *extra, "--gil", "--format", "raw"]
                        + ["--rate", "100", "--nonblocking", "--output", str(out)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        try:
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve().parent / "bench_loadgen.py")],
                input=json.dumps(cfg).encode(),
                capture_output=True,
                timeout=budget,
                check=False,
                cwd=ROOT,
            )
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                try:
                    spy.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr.decode()[-2000:]}")
        result = json.loads(done.stdout)
        wall = time.monotonic() - wall
        result["server_cores"] = round((server.cpu_s() - cpu_server) / wall, 2)
        result["db_cores"] = round((_proc_cpu(self.nx_proc.pid) - cpu_db) / wall, 2)
        result["documents"] = docs
        return result

    def settle(self, limit: float = 30.0) -> None:
        """Wait (bounded) until the servers and the database are idle: no backlog of the last phase."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.service.cpu_s() + self.ceiling.cpu_s() + _proc_cpu(self.nx_proc.pid)
            time.sleep(0.3)
            used = self.service.cpu_s() + self.ceiling.cpu_s() + _proc_cpu(self.nx_proc.pid) - before
            if used < 0.3 * 0.1:
                return

    def documents(self) -> int:
        """Documents in the sessions collection (sessions and tombstones): nx-27017's costs grow with it."""
        return self.mongo["coze_sessions"]["sessions"].estimated_document_count()

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # setup

    def make_session(self, user: str, sid: str, context: Any = None, messages: int = 0, size: int = 100) -> None:
        body: dict[str, Any] = {"user_id": user, "session_id": sid}
        if context is not None:
            body["context"] = json.dumps(context, separators=(",", ":"))
        self.post("/v1/session/create", body)
        left = messages
        while left > 0:
            batch = min(left, 500)
            msgs = [{"role": "user" if i % 2 else "assistant", "content": "m" * size} for i in range(batch)]
            self.post("/v1/session/append_messages", {"user_id": user, "session_id": sid, "messages": msgs})
            left -= batch

    def start(self) -> None:
        import requests

        from scripts.embedded import free_port, start_embedded

        db_port = free_port()
        self.nx_proc = start_embedded(str(self.tmp / "sessions.db"), db_port, str(self.tmp / "nx.log"))
        self.uri = f"mongodb://127.0.0.1:{db_port}"
        env = {
            "APP_ENV": "production",
            "SERVICE_TOKEN": TOKEN,
            "MONGODB_URI": self.uri,
            "VAR_DIR": str(self.tmp / "var"),
            "PUBLIC_BASE_URL": "http://127.0.0.1",
        }
        self.results["config"] = self.config()
        self.workers = self.results["config"]["workers"]
        self.service = Server("service", "app.wsgi:application", env, self.tmp / "service.log")
        self.ceiling = Server("ceiling", "scripts.bench_ceiling:application", env, self.tmp / "ceiling.log")
        self.service.wait_ready(self.workers)
        self.ceiling.wait_ready(self.workers)
        self.http = requests.Session()
        from pymongo import MongoClient

        self.mongo = MongoClient(self.uri, serverSelectionTimeoutMS=5000)

    def config(self) -> dict[str, Any]:
        import gunicorn

        conf: dict[str, Any] = {}
        exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), conf)  # noqa: S102
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        return {
            "commit": git.stdout.strip() or "unknown",
            "quick": self.quick,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(),
            "cpu": cpu,
            "python": platform.python_version(),
            "gunicorn": gunicorn.__version__,
            "workers": conf["workers"],
            "threads": conf["threads"],
            "worker_class": conf["worker_class"],
            "log_level": conf["loglevel"],
            "database": "nx-27017 on a SQLite file (embedded)",
            "concurrency": self.concurrency,
            "offered_rps": self.rate,
            "load_before": os.getloadavg(),
        }

    def stop(self) -> None:
        from scripts.embedded import stop_embedded

        if self.http is not None:
            self.http.close()
        if self.mongo is not None:
            self.mongo.close()
        for server in (self.service, self.ceiling):
            if server is not None:
                server.stop()
        if self.nx_proc is not None:
            stop_embedded(self.nx_proc)

    # phases

    def phase_items(self, op: str, run: str) -> list[tuple[str, str]]:
        users = [(f"bench-u{i}", f"s{i}") for i in range(SESSIONS)]
        if op == "ceiling":
            return [("/ceiling", json.dumps({"key": f"s{i}", "value": "v%N%"})) for i in range(SESSIONS)]
        if op == "create":
            ctx = json.dumps(json.dumps({"topic": "bench", "n": 1}))
            return [("/v1/session/create", f'{{"user_id":"bench-new-{run}-%N%","context":{ctx}}}')]
        path = f"/v1/session/{op}"
        out = []
        for user, sid in users:
            body: dict[str, Any] = {"user_id": user, "session_id": sid}
            if op == "update":
                body["context"] = '{"step":%N%,"last":"bench"}'
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
            r = self.run_load(
                {"mode": "closed", "items": items, "connections": 8, "duration": 120, "max_requests": len(items)},
                self.service,
            )
            if r["error_count"]:
                raise RuntimeError(f"setup failed: {r['errors']}")

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
            "db_rss_mib": round(_rss_kib(self.nx_proc.pid) / 1024, 1),
        }

    def round_trips(self) -> None:
        self.log("round trips per operation (pymongo command monitoring, in-process)")
        self.results["round_trips"] = count_round_trips(self.uri)


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


def count_round_trips(uri: str) -> dict[str, Any]:
    """Database commands per operation, through the app in this process (Flask test client)."""
    from pymongo import monitoring

    class Listener(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.names.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    listener = Listener()
    monitoring.register(listener)

    from app import create_app
    from app.settings import Settings

    settings = Settings(
        env="test", mongodb_uri=uri, mongodb_db="bench_round_trips", service_tokens=(TOKEN,), log_level="WARNING"
    )
    # Separate app instances stand for separate gunicorn workers: each has its own client and caches.
    apps = [create_app(settings) for _ in range(max(4, WORKERS_SIMULATED))]  # scenarios name workers 0-3
    clients = [a.test_client() for a in apps]
    out: dict[str, Any] = {}

    def post(worker: int, op: str, body: dict) -> tuple[dict, int, list[str]]:
        listener.names.clear()
        response = clients[worker].post(
            f"/v1/session/{op}", json=body, headers={"Authorization": AUTH["Authorization"]}
        )
        return response.get_json(), len(listener.names), list(listener.names)

    def call(label: str, op: str, body: dict, worker: int = 0) -> dict:
        data, n, names = post(worker, op, body)
        out[label] = {"round_trips": n, "commands": names}
        if data.get("error_code"):
            out[label]["error_code"] = data["error_code"]
        return data

    def spread(label: str, op: str, body: dict, count: int = 40) -> None:
        """The mean over `count` calls, each sent to a random simulated worker (fixed seed)."""
        rng = random.Random(5)
        counts = [post(rng.randrange(WORKERS_SIMULATED), op, body)[1] for _ in range(count)]
        out[label] = {
            "round_trips": round(sum(counts) / len(counts), 2),
            "commands": [f"min {min(counts)}, max {max(counts)} over {count} calls"],
        }

    try:
        for worker in range(len(clients)):
            post(worker, "create", {"user_id": f"rt-warm-{worker}"})  # indexes, connection pools
        user = "rt-user"
        sid = call("create", "create", {"user_id": user, "context": '{"a":1}'})["session_id"]
        call("create (caller id)", "create", {"user_id": user, "session_id": "rt-named"})
        call("create (existing id)", "create", {"user_id": user, "session_id": "rt-named"})
        base = {"user_id": user, "session_id": sid}
        call("get", "get", base)
        call("update", "update", {**base, "context": '{"b":2}'})
        call("update (replace)", "update", {**base, "context": '{"c":3}', "options": {"merge": False}})
        version = call("get", "get", base)["version"]
        call(
            "update (expected_version)",
            "update",
            {**base, "context": '{"d":4}', "options": {"expected_version": version}},
        )
        call("touch", "touch", base)
        call("append_messages", "append_messages", {**base, "role": "user", "content": "hi"})
        msgs = [{"role": "user", "content": f"m{i}"} for i in range(10)]
        call("append_messages (10)", "append_messages", {**base, "messages": msgs})
        call("history", "history", base)
        call("clear_history", "clear_history", base)
        call("list", "list", {"user_id": user})
        call("get (another worker)", "get", base, worker=1)
        call("update (last written by another worker)", "update", {**base, "context": '{"e":5}'}, worker=2)
        w = WORKERS_SIMULATED
        spread(f"update, {w} workers, random routing (mean)", "update", {**base, "context": '{"f":"%N%"}'})
        spread(f"get, {w} workers, random routing (mean)", "get", base)
        spread(f"append_messages, {w} workers, random routing (mean)", "append_messages", {**base, **msgs[0]})
        spread(  # one append in HISTORY_INLINE also archives a chunk: three more round trips
            "append_messages, 300 in a row, archiving included (mean)", "append_messages", {**base, **msgs[0]}, 300
        )
        custom = post(0, "create", {"user_id": "rt-user-2", "options": {"timeout": 600}})[0]["session_id"]
        call("get (timeout 600 s, first time in this worker)", "get", {"user_id": "rt-user-2", "session_id": custom}, 3)
        call("close", "close", base)
        call("delete", "delete", base)
        call("get (not found)", "get", base)
    finally:
        for a in apps:
            a.extensions["database"].close()
        listener.names.clear()
    return out


@contextlib.contextmanager
def _tempdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="coze-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    phases = set((os.environ.get("BENCH_PHASES") or ",".join(PHASES)).split(","))
    if phases - set(PHASES):
        sys.exit(f"BENCH_PHASES: unknown {', '.join(sorted(phases - set(PHASES)))}; known: {', '.join(PHASES)}")
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    with _tempdir() as tmp:
        bench = Bench(quick, tmp, out_dir)
        try:
            bench.start()
            if "round_trips" in phases:
                bench.round_trips()
            if {"throughput", "memory"} & phases:
                bench.setup_sessions()
            for phase in ("throughput", "growth", "memory"):
                if phase in phases:
                    getattr(bench, phase)()
        except BaseException:
            for log in ("service.log", "ceiling.log"):
                path = tmp / log
                if path.exists():
                    print(f"--- {log} (tail)\n" + path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            bench.stop()
        results = bench.results
        results["config"]["load_after"] = os.getloadavg()
        results["config"]["seconds"] = round(time.monotonic() - started, 1)
        path = out_dir / f"bench-{bench.stamp}{'-quick' if quick else ''}.json"
        path.write_text(json.dumps(results, indent=2))
    print(report(results))
    print(f"\nResults: {path.relative_to(ROOT)} ({results['config']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
