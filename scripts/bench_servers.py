"""The benchmark's processes: gunicorn servers, their workers' CPU and memory from /proc, a scratch directory.

Development tooling, not run in production: scripts/bench.py starts the service and the ceiling with these.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
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
        return {pid: rss_kib(pid) for pid in self.workers()}

    def cpu_s(self) -> float:
        return proc_cpu(self.proc.pid) + sum(proc_cpu(p) for p in self.workers())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


@contextlib.contextmanager
def tempdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="coze-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
