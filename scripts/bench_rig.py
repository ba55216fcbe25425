"""The benchmark's rig: nx-27017, the service and the ceiling started, loaded and stopped. Development tooling.

Not run in production. Rig starts the database and both gunicorns (scripts/bench_servers.py), runs the load
generator (scripts/bench_loadgen.py) in its own process against one of them and adds the CPU each side used;
the phases that use it are scripts/bench_phases.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from scripts.bench_servers import ROOT, Server, proc_cpu

TOKEN = "bench-" + secrets.token_hex(16)
T = TypeVar("T")
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class Rig:
    """The processes under test and the settings of the run; scripts/bench_phases.py measures with it."""

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
        self._nx_proc: subprocess.Popen | None = None
        self._service: Server | None = None
        self._ceiling: Server | None = None
        self.http: Any = None
        self.mongo: Any = None

    @property
    def nx_proc(self) -> subprocess.Popen:
        """The nx-27017 process (`start` starts it)."""
        return _started(self._nx_proc)

    @property
    def service(self) -> Server:
        """The service under test (`start` starts it)."""
        return _started(self._service)

    @property
    def ceiling(self) -> Server:
        """The do-nothing Flask app on the same gunicorn settings (`start` starts it)."""
        return _started(self._ceiling)

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
        cpu_server, cpu_db, wall = server.cpu_s(), proc_cpu(self.nx_proc.pid), time.monotonic()
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
        result["db_cores"] = round((proc_cpu(self.nx_proc.pid) - cpu_db) / wall, 2)
        result["documents"] = docs
        return result

    def run_all(self, items: list[tuple[str, str]], connections: int = 8) -> dict[str, Any]:
        """Send every item once, `connections` at a time (setting up); any error fails the benchmark."""
        cfg = {"mode": "closed", "items": items, "connections": connections, "duration": 3600}
        r = self.run_load({**cfg, "max_requests": len(items)}, self.service)
        if r["error_count"]:
            raise RuntimeError(f"setup failed: {r['errors']}")
        return r

    def settle(self, limit: float = 30.0) -> None:
        """Wait (bounded) until the servers and the database are idle: no backlog of the last phase."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.service.cpu_s() + self.ceiling.cpu_s() + proc_cpu(self.nx_proc.pid)
            time.sleep(0.3)
            used = self.service.cpu_s() + self.ceiling.cpu_s() + proc_cpu(self.nx_proc.pid) - before
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
        self._nx_proc = start_embedded(str(self.tmp / "sessions.db"), db_port, str(self.tmp / "nx.log"))
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
        self._service = Server("service", "app.wsgi:application", env, self.tmp / "service.log")
        self._ceiling = Server("ceiling", "scripts.bench_ceiling:application", env, self.tmp / "ceiling.log")
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
        for server in (self._service, self._ceiling):
            if server is not None:
                server.stop()
        if self._nx_proc is not None:
            stop_embedded(self._nx_proc)


def _started(part: T | None) -> T:
    if part is None:
        raise RuntimeError("the rig is not started")
    return part
