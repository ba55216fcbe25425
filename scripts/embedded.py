"""The embedded nx-27017 for development, tests and the benchmark: start it, wait for it, stop it.

Development-only (the service in production talks to MONGODB_URI): gunicorn.conf.py uses it when no
MONGODB_URI is set. nx-27017 runs through scripts/nx_server.py, which patches its slow paths.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent


def embedded_paths(env: Mapping[str, str]) -> tuple[str, int, str]:
    """The embedded database of `make run`: (SQLite file, port, log file), from VAR_DIR and EMBEDDED_DB_PORT."""
    var = Path(env.get("VAR_DIR", "var"))
    return str(var / "sessions.db"), int(env.get("EMBEDDED_DB_PORT", "27017")), str(var / "nx.log")


def nx_command() -> list[str]:
    """nx-27017 run by this interpreter through scripts/nx_server.py (its slow paths patched)."""
    try:
        import nx_27017  # noqa: F401
    except ImportError:
        raise RuntimeError("nx-27017 is not installed: run `make run` or pip install -r requirements.txt") from None
    return [sys.executable, "-m", "scripts.nx_server"]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_embedded(db_path: str, port: int, log_file: str, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start nx-27017 (a MongoDB wire-protocol server on SQLite) and wait until it answers."""
    if port_open(host, port):
        raise RuntimeError(f"port {port} is already in use; set EMBEDDED_DB_PORT or MONGODB_URI")
    for path in (db_path, log_file):
        if path != "memory":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    args = [
        *nx_command(),
        "--db",
        db_path,
        "--host",
        host,
        "-p",
        str(port),
        "--log-file",
        log_file,
        "--pid-file",
        str(Path(log_file).with_suffix(".pid")),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nx-27017 exited with {proc.returncode}; see {log_file}")
        if port_open(host, port):
            client: MongoClient = MongoClient(host, port, serverSelectionTimeoutMS=2000)
            try:
                client.admin.command("ping")
                return proc
            except Exception:  # noqa: BLE001 - not ready yet, keep waiting
                pass
            finally:
                client.close()
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"nx-27017 did not answer on {host}:{port} within 20 s")


def stop_embedded(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
