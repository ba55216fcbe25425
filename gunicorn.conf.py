"""gunicorn settings for coze-session-node, read from the environment (see docs/operating.md).

The master checks every setting (app.settings) before it starts anything: a bad one ends the start
with exit 1 and the setting's name and reason as the last line, before any worker. With no
MONGODB_URI the master starts the embedded nx-27017 (data under var/) before forking the workers,
and in development without SERVICE_TOKEN it generates one and prints it. Before the fork it also
empties the directory where each worker keeps its metrics (PROMETHEUS_MULTIPROC_DIR, by default one
per instance under var/), so that a scrape, answered by any worker, sums them all. Whatever ends the
master (a signal, a port it cannot bind, an error), the embedded database it started is stopped.

TENANTS: the master checks the tenants file at start (a bad one ends the start, saying why) and again
on `kill -HUP <master>` (gunicorn then starts new workers and lets the old ones finish their
requests); the workers read the copy the master last accepted, so a file that does not parse is
refused with its reason in the log and the service goes on with the tenants it had.
"""

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8080')}"
# 2 workers x 8 threads beat 4 x 4 on every operation on a 2-core machine, with half the memory
# (see docs/performance.md); two workers keep serving when one is killed.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, answering in the service's JSON shape where gunicorn itself answers, slow bodies bounded
worker_class = "app.worker.JsonThreadWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
preload_app = False  # each worker builds the app, and its MongoClient, after the fork
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    # gunicorn's own lines as JSON objects too (the app's formatter): a log pipeline reads one format
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": loglevel.upper(), "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
            # the app writes the one line per request; gunicorn's access line only with ACCESS_LOG
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": bool(accesslog)},
        },
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    }

# gunicorn's control socket defaults to one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn): a second
# instance on the machine took it over and its exit removed the first's. One per instance instead.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or str(
    Path(os.environ.get("VAR_DIR", "var")).resolve() / f"gunicorn-{os.environ.get('PORT', '8080')}.ctl"
)
if len(control_socket) > 100:  # a Unix socket path must fit in 108 bytes
    control_socket = str(
        Path(tempfile.gettempdir()) / f"coze-session-{os.getuid()}-{os.environ.get('PORT', '8080')}.ctl"
    )

_embedded = None
_metrics_dir = None
_own_metrics_dir = False


def on_starting(server):
    var = Path(os.environ.get("VAR_DIR", "var"))
    _prepare_metrics_dir(var)
    no_token = not os.environ.get("SERVICE_TOKEN") and not os.environ.get("TENANTS")  # TENANTS names who may call
    if os.environ.get("APP_ENV", "development") != "production" and no_token:
        from scripts.embedded import dev_token

        os.environ["SERVICE_TOKEN"] = dev_token(os.environ, create=True)
        server.log.info("development service token (from %s): %s", var / "dev-token", os.environ["SERVICE_TOKEN"])
    _accept_tenants(server, starting=True)
    _check_settings()
    if not os.environ.get("MONGODB_URI"):
        _start_embedded(server)
    _ensure_indexes(server)


def _check_settings() -> None:
    """The workers would each fail on a bad setting after `Listening at`: the master refuses it first.

    gunicorn prints a RuntimeError from here as its last line, `Error: <message>`, and exits 1.
    """
    from app.settings import Settings, SettingsError

    try:
        Settings.from_env()
    except SettingsError as exc:
        raise RuntimeError(f"configuration: {exc}") from None


def on_reload(server):
    _accept_tenants(server, starting=False)


def _accept_tenants(server, *, starting: bool) -> None:
    """Check the TENANTS file as the workers will read it and keep a copy of it for them if it is good.

    At start a bad file ends the start (as _check_settings); on a reload it is logged and the
    workers gunicorn starts keep reading the last good copy. This module is executed again on every
    reload: what must outlive one lives in the environment (TENANTS_ACCEPTED) and in that file.
    """
    path = os.environ.get("TENANTS", "").strip()
    if not path:
        return
    from app.settings import Settings, SettingsError

    var = Path(os.environ.get("VAR_DIR", "var")).resolve()
    accepted = var / f"tenants-{os.environ.get('PORT', '8080')}.accepted"
    candidate = accepted.with_suffix(".candidate")
    try:
        var.mkdir(parents=True, exist_ok=True)
        candidate.write_bytes(Path(path).read_bytes())  # read once: what is checked is what the workers get
        candidate.chmod(0o600)
        Settings.from_env({**os.environ, "TENANTS_ACCEPTED": str(candidate)}).tenants  # noqa: B018
    except (OSError, SettingsError) as exc:
        reason = f"TENANTS ({path}): {exc}" if isinstance(exc, OSError) else str(exc)
        if starting:
            raise RuntimeError(f"configuration: {reason}") from None
        server.log.error("%s; the workers keep the tenants of the last good file", reason)
        return
    os.replace(candidate, accepted)
    os.environ["TENANTS_ACCEPTED"] = str(accepted)
    server.log.info("tenants from %s: %s", path, ", ".join(Settings.from_env().tenants.names))


def _start_embedded(server) -> None:
    global _embedded
    from scripts.embedded import embedded_paths, start_embedded

    db_path, port, log_file = embedded_paths(os.environ)
    notes: list[str] = []
    _embedded = start_embedded(db_path, port, log_file, notes=notes)
    # on_exit is not called when gunicorn gives up binding its port: stop it at the interpreter's exit too
    atexit.register(_stop_embedded, os.getpid())
    for note in notes:
        server.log.warning("%s", note)
    os.environ["MONGODB_URI"] = f"mongodb://127.0.0.1:{port}"
    server.log.info(
        "embedded database: nx-27017 on 127.0.0.1:%d, data in %s (set MONGODB_URI to use MongoDB)", port, db_path
    )


def _stop_embedded(master_pid: int) -> bool:
    """Stop the embedded database, once, and only from the master (forked workers inherit atexit)."""
    global _embedded
    if _embedded is None or os.getpid() != master_pid:
        return False
    from scripts.embedded import stop_embedded

    proc, _embedded = _embedded, None
    stop_embedded(proc)
    return True


def _ensure_indexes(server):
    """Build the indexes before any worker starts, on a client closed before the fork; a failure stops start-up."""
    from app.settings import Settings
    from app.storage.database import Database, IndexBuildFailed, epoch_ms

    database = Database(Settings.from_env(), epoch_ms)
    try:
        database.ensure_indexes()
    except IndexBuildFailed as exc:
        server.log.error("%s", exc)
        raise SystemExit(f"coze-session-node: {exc}") from None
    finally:
        database.close()
    server.log.info("indexes ensured on %s", database.describe())


def _prepare_metrics_dir(var: Path) -> None:
    """Workers inherit the variable; counts a previous run left would be added to this one's."""
    global _metrics_dir, _own_metrics_dir
    _own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or var / f"metrics-{os.environ.get('PORT', '8080')}")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    _metrics_dir = path.resolve()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)


def post_worker_init(worker):
    """Lifecycle events: each worker runs its own sweeper thread (they share the work by leases)."""
    sweeper = worker.wsgi.extensions.get("events") if hasattr(worker.wsgi, "extensions") else None
    if sweeper is not None:
        sweeper.start()


def worker_exit(server, worker):
    sweeper = worker.wsgi.extensions.get("events") if hasattr(worker.wsgi, "extensions") else None
    if sweeper is not None:
        sweeper.stop()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its counters stay: a counter never goes back


def on_exit(server):
    if _metrics_dir is not None:
        for counts in _metrics_dir.glob("*.db"):
            counts.unlink()
        if _own_metrics_dir:
            with contextlib.suppress(OSError):  # never in the way of stopping the database below
                _metrics_dir.rmdir()
    if _stop_embedded(os.getpid()):
        server.log.info("embedded database stopped")
