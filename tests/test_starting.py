"""A start that fails fails cleanly: a bad setting stops gunicorn's master before any worker, and the
embedded database a start launched never outlives it; a leftover from a crash is recognised by var/nx.pid.

Each test starts its own gunicorn and nx-27017 on free ports and looks only for nx-27017 processes on
its own port: other tests' (and other people's) databases are never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from scripts.embedded import free_port, leftover, start_embedded, stop_embedded
from tests.support import ROOT

pytestmark = pytest.mark.slow
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def nx_on(port: int) -> list[int]:
    """Pids of the nx-27017 processes (scripts.nx_server) listening on `port`, whoever started them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "scripts.nx_server" in args and "-p" in args[:-1] and args[args.index("-p") + 1] == str(port):
            found.append(int(entry.name))
    return found


def start_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """`make run`'s environment (embedded database, development token) on free ports under tmp_path."""
    return {
        **os.environ,
        "MONGODB_URI": "",
        "SERVICE_TOKEN": "",
        "APP_ENV": "development",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "EMBEDDED_DB_PORT": str(free_port()),
        "VAR_DIR": str(tmp_path / "var"),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
        "LOG_LEVEL": "info",
        **extra,
    }


def run_to_end(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [GUNICORN, "-c", "gunicorn.conf.py", "app.wsgi:application"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)


def wait_until_serving(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError("gunicorn did not answer /healthz within 30 s")


def test_a_bad_setting_ends_the_start_before_any_worker_with_its_name_last_and_no_database_left(tmp_path):
    env = start_env(tmp_path, CONTEXT_SCHEMA=str(tmp_path / "missing.schema.json"))
    result = run_to_end(env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "CONTEXT_SCHEMA" in last and "missing.schema.json" in last, result.stderr
    assert "Booting worker" not in result.stderr and "Traceback" not in result.stderr
    assert nx_on(int(env["EMBEDDED_DB_PORT"])) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOG_FORMAT", "yaml"), ("MAX_HISTORY", "many"), ("APP_ENV", "staging")],
)
def test_every_bad_setting_is_refused_by_the_master_naming_it(tmp_path, name, value):
    result = run_to_end(start_env(tmp_path, **{name: value}))
    assert result.returncode != 0
    assert name in result.stderr.strip().splitlines()[-1], result.stderr


def test_a_start_that_cannot_bind_its_port_stops_the_embedded_database_it_launched(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = start_env(tmp_path, PORT=str(taken.getsockname()[1]))
        result = run_to_end(env)
    assert result.returncode != 0
    assert "embedded database: nx-27017" in result.stderr  # it was started, then the bind failed
    assert nx_on(int(env["EMBEDDED_DB_PORT"])) == []


def test_a_database_left_by_a_crashed_start_is_recognised_by_its_pid_file_and_stopped(tmp_path):
    env = start_env(tmp_path)
    db_port = int(env["EMBEDDED_DB_PORT"])
    base = f"http://127.0.0.1:{env['PORT']}"
    crashed = subprocess.Popen(
        [GUNICORN, "-c", "gunicorn.conf.py", "app.wsgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(base, crashed)
        (left,) = nx_on(db_port)
        assert leftover(db_port, tmp_path / "var" / "nx.pid") == (left, False)  # its gunicorn still runs
        crashed.send_signal(signal.SIGKILL)  # a crash: no on_exit, no atexit
        crashed.wait()
        assert nx_on(db_port) == [left]
        assert (tmp_path / "var" / "nx.pid").read_text().split()[0] == str(left)

        # its orphaned worker may still answer on the old port for a moment: the next start takes another
        env = {**env, "PORT": str(free_port())}
        base = f"http://127.0.0.1:{env['PORT']}"
        log = tmp_path / "second.log"
        with open(log, "wb") as out:
            second = subprocess.Popen(
                [GUNICORN, "-c", "gunicorn.conf.py", "app.wsgi:application"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until_serving(base, second)
                assert requests.get(base + "/readyz", timeout=10).json() == {"status": "ready"}
                assert left not in nx_on(db_port)
            finally:
                second.terminate()
                second.wait(timeout=30)
        assert f"stopped the embedded database pid {left}" in log.read_text()
        assert nx_on(db_port) == []
    finally:
        for pid in nx_on(db_port):  # only this test's database, should an assertion have failed
            os.kill(pid, signal.SIGTERM)


def test_a_port_held_by_anything_else_is_named_in_the_error_and_left_alone(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = start_env(tmp_path, EMBEDDED_DB_PORT=str(taken.getsockname()[1]))
        result = run_to_end(env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "already in use" in last and "nx.pid" in last and "EMBEDDED_DB_PORT" in last, last


def test_only_nx_27017_on_that_port_with_that_pid_file_counts_as_a_leftover(tmp_path):
    var = tmp_path / "var"
    port = free_port()
    proc = start_embedded(str(var / "sessions.db"), port, str(var / "nx.log"))
    try:
        assert leftover(port, var / "nx.pid") == (proc.pid, True)  # started by pytest, not by a gunicorn
        assert leftover(port, tmp_path / "other.pid") == (0, False)
        assert leftover(free_port(), var / "nx.pid") == (0, False)  # not on that port
    finally:
        stop_embedded(proc)
