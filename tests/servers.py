"""Real processes for tests: the service under gunicorn, exactly as `make run` starts it, and a client for it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from app import spec
from scripts.embedded import free_port
from tests.support import AUTH, HISTORY_INLINE, ROOT, TOKEN, assert_no_leak, check_response, ok


def service_env(mongo_uri: str, db: str, **extra: str) -> dict[str, str]:
    """The environment of the service under test: this database, the tests' token, APP_ENV=test, and `extra`."""
    return {"MONGODB_URI": mongo_uri, "MONGODB_DB": db, "SERVICE_TOKEN": TOKEN, "APP_ENV": "test", **extra}


@contextlib.contextmanager
def gunicorn(env: dict[str, str], *, workers: int = 2, threads: int = 4, log: Path | None = None) -> Iterator[str]:
    """Start gunicorn with gunicorn.conf.py on a free port; yields its base URL, stops it after.

    `env` is added to a copy of this process's environment (MONGODB_URI, SERVICE_TOKEN, ...).
    """
    with gunicorn_process(env, workers=workers, threads=threads, log=log) as (base, _):
        yield base


@contextlib.contextmanager
def gunicorn_process(
    env: dict[str, str], *, workers: int = 2, threads: int = 4, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """As `gunicorn`, yielding (base URL, the master process) for a test that signals the master."""
    port = free_port()
    full_env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_THREADS": str(threads),
        "LOG_LEVEL": "warning",
        "HISTORY_INLINE": str(HISTORY_INLINE),
        **env,
    }
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py", "app.wsgi:application"],
        cwd=ROOT,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}" + (f"; see {log}" if log else ""))
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not up yet, or slow to answer on a busy machine
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer /healthz within 30 s")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


class ToolClient:
    """Calls the tools of a running service over HTTP, as the clients of the tests' threads would.

    One keep-alive `requests.Session` per thread, with the service's auth header. Every answer is
    schema-checked and must not leak an implementation detail (`LEAKS`), whatever its status.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers.update(AUTH)
        return s

    def reconnect(self) -> None:
        """Drop this thread's connection (say the server closed it); the next call opens a fresh one."""
        s = getattr(self._local, "session", None)
        self._local.session = None
        if s is not None:
            s.close()

    def call(self, op: str, body: dict) -> tuple[int, dict, float]:
        """POST `body` to the tool `session_<op>`: (HTTP status, answer, seconds taken), any status."""
        tool = spec.TOOLS_BY_NAME[f"session_{op}"]
        t0 = time.monotonic()
        r = self._session().post(self.base + tool.path, json=body, timeout=60)
        elapsed = time.monotonic() - t0
        assert_no_leak(r.text)
        data = r.json()
        check_response(tool, data)
        return r.status_code, data, elapsed

    def post(self, op: str, body: dict) -> dict:
        """The answer of a call that must be HTTP 200; it may still carry an error_code."""
        status, data, _ = self.call(op, body)
        assert status == 200, (op, status, data)
        return data

    def ok(self, op: str, body: dict) -> dict:
        """The answer of a call that must succeed: HTTP 200, no error_code and no error message."""
        return ok(self.post(op, body))
