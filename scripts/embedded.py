"""The embedded nx-27017 for development, tests and the benchmark: start it, wait for it, stop it.

Development-only (the service in production talks to MONGODB_URI): gunicorn.conf.py uses it when no
MONGODB_URI is set. nx-27017 runs through scripts/nx_server.py, which patches its slow paths.

A start that finds the port taken looks at the pid file the last start wrote next to the log
(var/nx.pid): if that pid is really nx-27017 on this port with this pid file, and the process that
started it is gone (a crashed `make run`), it is this service's leftover and is stopped; anything
else is named in the error, never killed. A pid file that names a live process other than nx-27017
(pids repeat across a container's starts) is a crash's leftover too, and is removed before the start.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
STARTERS = ("gunicorn", "session-admin", "scripts.admin")  # what starts the embedded database and owns it


def embedded_paths(env: Mapping[str, str]) -> tuple[str, int, str]:
    """The embedded database of `make run`: (SQLite file, port, log file), from VAR_DIR and EMBEDDED_DB_PORT."""
    var = Path(env.get("VAR_DIR", "var"))
    return str(var / "sessions.db"), int(env.get("EMBEDDED_DB_PORT", "27017")), str(var / "nx.log")


def dev_token(env: Mapping[str, str], *, create: bool) -> str:
    """The development SERVICE_TOKEN `make run` keeps in $VAR_DIR/dev-token ("" if none and not `create`)."""
    token_file = Path(env.get("VAR_DIR", "var")) / "dev-token"
    if not token_file.exists():
        if not create:
            return ""
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
    return token_file.read_text().strip()


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


def pid_file(log_file: str) -> Path:
    """Where the embedded database's pid is kept: next to its log (var/nx.pid)."""
    return Path(log_file).with_suffix(".pid")


def _proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    stat = _proc(pid, "stat")  # "pid (comm) state ppid ...": comm may hold spaces, so split after ")"
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


def _runs_with(pid: int, wanted: dict) -> bool:
    """Whether process `pid` is scripts.nx_server with these arguments (a path compared resolved)."""
    args = _proc(pid, "cmdline").split("\0")
    if "scripts.nx_server" not in args:
        return False
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    for flag, value in wanted.items():
        if flag not in args[:-1]:
            return False
        given = args[args.index(flag) + 1]
        same = (cwd / given).resolve() == value if isinstance(value, Path) else given == value
        if not same:
            return False
    return True


def leftover(port: int, pids: Path) -> tuple[int, bool]:
    """(pid, whether it may be stopped) of the embedded database a previous start left on `port`.

    (0, False) when `pids` names no process that is nx-27017 on this port with this pid file: the
    port is someone else's. A match whose starter (a gunicorn master, an admin command) still runs is
    not a leftover: (pid, False).
    """
    try:
        pid = int(pids.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0, False
    if not _runs_with(pid, {"-p": str(port), "--pid-file": pids.resolve()}):
        return 0, False
    starter = _proc(_parent(pid), "cmdline").split("\0")[:3]  # [python, gunicorn, ...] or [python, -m, module]
    running = any(Path(arg).name in STARTERS for arg in starter)
    return pid, not running


def clear_port(port: int, pids: Path, host: str = "127.0.0.1") -> str:
    """Free `port` of this service's own leftover database, or raise naming what holds it."""
    pid, stoppable = leftover(port, pids)
    if not pid:
        raise RuntimeError(
            f"port {port} is already in use, and not by an embedded database this service left ({pids} names "
            "no nx-27017 on it); set EMBEDDED_DB_PORT or MONGODB_URI"
        )
    if not stoppable:
        raise RuntimeError(
            f"port {port} is held by the embedded database pid {pid} ({pids}) of a service that is still "
            "running; stop that one first, or set EMBEDDED_DB_PORT"
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while port_open(host, port) and time.monotonic() < deadline:
        time.sleep(0.1)
    if port_open(host, port):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    return f"stopped the embedded database pid {pid} a previous start left running on port {port} ({pids})"


def clear_stale_pid_file(pids: Path) -> None:
    """Remove a pid file a killed nx-27017 left, unless the process it names is an nx-27017.

    nx-27017 refuses to start while its pid file names any live process. In a container pids repeat
    from one start to the next, so after a crash (SIGKILL, out of memory) the file often names this
    very service's gunicorn, and the embedded database would never start again on that volume.
    """
    try:
        pid = int(pids.read_text().strip())
    except (OSError, ValueError):
        return
    command = _proc(pid, "cmdline")
    if command and "nx_server" not in command and "nx_27017" not in command and "nx-27017" not in command:
        pids.unlink(missing_ok=True)
    # no command: no such process (nx-27017 starts over a dead pid itself), or no /proc to ask


def start_embedded(
    db_path: str, port: int, log_file: str, host: str = "127.0.0.1", *, notes: list[str] | None = None
) -> subprocess.Popen:
    """Start nx-27017 (a MongoDB wire-protocol server on SQLite) and wait until it answers.

    A leftover of this service's on the port is stopped first (said in `notes`), anything else refused.
    """
    if port_open(host, port):
        note = clear_port(port, pid_file(log_file), host)
        if notes is not None:
            notes.append(note)
    for path in (db_path, log_file):
        if path != "memory":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    clear_stale_pid_file(pid_file(log_file))
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
        str(pid_file(log_file)),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nx-27017 exited with {proc.returncode}; see {log_file}")
        if port_open(host, port):
            client = MongoClient(host, port, serverSelectionTimeoutMS=2000)
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
