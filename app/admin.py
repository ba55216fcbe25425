"""The admin CLI on Flask's CLI: stats, export, import, wipe-user, ensure-indexes, user-hash, events. click
and Flask only.

`session-admin ...` (scripts/admin.py, which also starts the embedded database when no MONGODB_URI is
set; `flask --app app.wsgi admin ...` is the same commands) works on the database the service is
configured with; the storage side is app.storage's transfer, records, census and outbox (events). Exit codes: 0 done,
1 failed, 2 bad usage. Reports go to standard output (an export's to standard error, its records may
be on standard output), progress to standard error when it is a terminal. Every command takes
`--tenant NAME`: a user id names a user of one tenant (with several tenants configured, a command
about one user needs it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, TypeVar

import click
import orjson
from flask import current_app
from flask.cli import AppGroup

from app import errors, logs, tenants
from app.responses import iso
from app.storage.database import Database, IndexBuildFailed
from app.storage.records import FORMAT, VERSION, BadRecord, check
from app.storage.store import SessionStore
from app.storage.transfer import NAMES, Restored

Command = TypeVar("Command", bound=Callable[..., Any])
cli = AppGroup(
    "admin", help="Operate the session store: stats, export, import, wipe-user, ensure-indexes, user-hash, events."
)
BATCH, BATCH_BYTES = 200, 8 * 1024 * 1024  # records written to the database at once
SHOWN = 50  # problem lines printed; the rest are counted


class Progress:
    """A running count on standard error, rewritten in place, only when it is a terminal."""

    def __init__(self, what: str) -> None:
        self.what, self.count = what, 0
        self.started = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, n: int = 1) -> None:
        self.count += n
        if self.tty and time.monotonic() - self.shown >= 0.2:
            self.shown = time.monotonic()
            click.echo(f"\r{self.what} {self.count:,} ({self.count / self.seconds:,.0f}/s)", err=True, nl=False)

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    def done(self) -> None:
        if self.tty and self.count:
            click.echo("\r\033[K", err=True, nl=False)


def _database() -> Database:
    database: Database = current_app.extensions["database"]
    return database


def _tenant_option(command: Command) -> Command:
    return click.option(
        "--tenant", metavar="NAME", help="Only this tenant (a name in TENANTS; `default`: SERVICE_TOKEN's)."
    )(command)


def _user_tenant(name: str | None) -> str:
    """The tenant of a command about one user: --tenant, checked, else the only tenant there is."""
    if name is not None:
        _tenant(name)
        return name
    known: tenants.Tenants = current_app.config["TENANTS"]
    if len(known.all) == 1:
        return known.all[0].name
    raise click.UsageError(f"several tenants are configured: give --tenant NAME (one of {', '.join(known.names)})")


def _tenant(name: str | None) -> str | None:
    """The tenant a command is about: --tenant, checked (None: every tenant)."""
    known: tenants.Tenants = current_app.config["TENANTS"]
    if name is None:
        return None
    if not tenants.NAME.match(name):
        raise click.BadParameter("must be 1-32 characters of a-z 0-9 _ -", param_hint="--tenant")
    if name not in known.by_name:  # a tenant taken out of TENANTS may still have data to export or erase
        click.echo(f"note: tenant {name!r} is not configured now (tenants: {', '.join(known.names)})", err=True)
    return name


def _store(tenant: str | None) -> SessionStore:
    """The store with the tenant's own MAX_SESSIONS (slots mean the same as for the service)."""
    known: tenants.Tenants = current_app.config["TENANTS"]
    own = known.by_name.get(tenant) if tenant else None
    return _database().store(own.max_sessions if own else None)


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """The service's errors and file errors as a message and exit code 1."""
    try:
        yield
    except errors.ServiceError as exc:
        if not _database().settings.mongodb_uri:
            raise click.ClickException(
                "no database: set MONGODB_URI, or run `session-admin`, which starts the embedded one"
            ) from None
        raise click.ClickException(f"{exc.code}: {exc.message('en')} ({_database().describe()})") from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


def _line(record: dict) -> bytes:
    return orjson.dumps(record) + b"\n"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{name}: {counter[kind]:,}" for kind, name in NAMES.items())


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@_tenant_option
def stats(as_json: bool, tenant: str | None) -> None:
    """Counts of documents, sessions by status, users, messages and context bytes; sessions and users by tenant."""
    db = _database()
    tenant = _tenant(tenant)
    with _failures():
        counts = _store(tenant).census(db.clock(), tenant)
    head = {"database": db.describe(), **({"tenant": tenant} if tenant else {})}
    if as_json:
        click.echo(orjson.dumps({**head, **counts}).decode())
        return
    for name, value in head.items():
        click.echo(f"{name}: {value}")
    by_tenant = counts.pop("tenants")
    for group, values in counts.items():
        rest = ", ".join(f"{n:,} {name}" for name, n in values.items() if name != "total")
        click.echo(f"{group}: {values['total']:,} ({rest})" if "total" in values else f"{group}: {rest}")
    for name, c in by_tenant.items():
        click.echo(f"tenant {name}: {c['sessions']:,} sessions ({c['active']:,} active), {c['users']:,} users")


@cli.command("export")
@click.option("--user", "user_id", metavar="USER_ID", help="Only this user's sessions, tombstones and receipts.")
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True), default="-", help="File (default: stdout).")
@_tenant_option
def export(user_id: str | None, out: str, tenant: str | None) -> None:
    """Write every session (its context, whole history and settings) as JSON Lines, each naming its tenant."""
    if user_id == "":
        raise click.BadParameter("must not be empty", param_hint="--user")
    tenant = _user_tenant(tenant) if user_id is not None else _tenant(tenant)
    user_key = tenants.user_key(tenant, user_id) if user_id is not None and tenant else None
    db = _database()
    partial = f"{out}.partial" if out != "-" else ""  # a file only appears once it is whole
    progress, counts = Progress("exported"), Counter[str]()
    with _failures():
        if partial:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        transfer = _store(tenant).transfer()
        try:
            with click.open_file(partial or "-", "wb") as stream:
                header = {"format": FORMAT, "version": VERSION, "exported_at": iso(db.clock())}
                stream.write(_line({**header, "user": user_id, "tenant": tenant, "database": db.describe()}))
                for record in chain(transfer.sessions(user_key, tenant), transfer.markers(user_key, tenant)):
                    stream.write(_line(record))
                    counts[record["kind"]] += 1
                    progress.step()
                stream.write(_line({"kind": "end", "records": {kind: counts[kind] for kind in NAMES}}))
        except BaseException:
            if partial:
                with contextlib.suppress(OSError):
                    os.remove(partial)
            raise
        if partial:
            os.replace(partial, out)
    progress.done()
    where = "standard output" if out == "-" else out
    click.echo(f"exported to {where} in {progress.seconds:.1f} s: {_counts(counts)}", err=True)
    if transfer.unreadable:
        for user, session in transfer.unreadable[:SHOWN]:
            owner, plain = tenants.split_user_key(user)
            click.echo(f"not exported: session {session!r} of user {plain!r} of tenant {owner!r}", err=True)
        raise click.ClickException(
            f"{len(transfer.unreadable)} sessions could not be read whole: they kept changing while read "
            "(export again), or an archive chunk they list is missing"
        )


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--replace", is_flag=True, help="Overwrite a different session stored under the same id.")
@click.option(
    "--tenant", metavar="NAME", help="Import every record into this tenant (default: the tenant each record names)."
)
def import_(file: str, replace: bool, tenant: str | None) -> None:
    """Restore an export exactly; what is already stored as the file has it is left alone."""
    tenant = _tenant(tenant)
    db = _database()
    done, failed, seen, progress = Restored(), [], Counter[str](), Progress("imported")
    end = None
    with _failures(), click.open_file(file, "rb") as stream:
        _header(next(stream, b""))
        transfer = (_store(tenant) if tenant else db.store()).transfer()
        batch: list[tuple[int, dict]] = []
        size = 0
        for n, raw in enumerate(stream, start=2):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
                if end is not None:
                    raise BadRecord("a record after the end record")
                if isinstance(record, dict) and record.get("kind") == "end":
                    end = record
                    continue
                if tenant and isinstance(record, dict):
                    record["tenant"] = tenant
                batch.append((n, check(record)))
            except (orjson.JSONDecodeError, BadRecord) as exc:
                failed.append((n, str(exc) if isinstance(exc, BadRecord) else "not a JSON object"))
                continue
            seen[record["kind"]] += 1
            size += len(raw)
            if len(batch) >= BATCH or size >= BATCH_BYTES:
                done.add(transfer.restore(batch, replace=replace))
                progress.step(len(batch))
                batch, size = [], 0
        done.add(transfer.restore(batch, replace=replace))
        progress.step(len(batch))
    progress.done()
    _report(done, failed, seen, end, progress.seconds)


def _header(raw: bytes) -> None:
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise click.ClickException(f"line 1: not an export of {FORMAT} (its first line names the format)")
    if header.get("version") != VERSION:
        raise click.ClickException(f"line 1: export format version {header.get('version')!r}; this reads {VERSION}")


def _report(done: Restored, failed: list, seen: Counter, end: dict | None, seconds: float) -> None:
    click.echo(f"imported in {seconds:.1f} s: {_counts(done.imported)}")
    if sum(done.replaced.values()):
        click.echo(f"of which replaced a stored one (--replace): {_counts(done.replaced)}")
    click.echo(f"already there, left alone: {_counts(done.unchanged)}")
    problems = sorted(failed + done.refused)
    for n, reason in problems[:SHOWN]:
        click.echo(f"line {n}: {reason}", err=True)
    if len(problems) > SHOWN:
        click.echo(f"... and {len(problems) - SHOWN} more lines", err=True)
    trouble = []
    if problems:
        trouble.append(f"{len(problems)} lines not imported")
    if end is None:
        trouble.append("the file has no end record: it may be cut short")
    elif not failed and end.get("records") != {kind: seen[kind] for kind in NAMES}:
        trouble.append(f"the end record counts {end.get('records')}, the file holds {dict(seen)}")
    if trouble:
        raise click.ClickException("; ".join(trouble))


@cli.command("wipe-user")
@click.argument("user_id")
@_tenant_option
def wipe(user_id: str, tenant: str | None) -> None:
    """Erase every document of USER_ID of one tenant (sessions, archive chunks, tombstones, receipts); say what went."""
    if not user_id:
        raise click.BadParameter("must not be empty", param_hint="USER_ID")
    tenant = _user_tenant(tenant)
    with _failures():
        removed, clean = _database().store().wipe_user(tenants.user_key(tenant, user_id))
    listing = ", ".join(f"{name}: {n:,}" for name, n in removed.items())
    click.echo(f"removed {sum(removed.values()):,} documents of user {user_id!r} of tenant {tenant!r} ({listing})")
    if not clean:
        raise click.ClickException("documents of this user were written meanwhile: stop their traffic and wipe again")


@cli.command("ensure-indexes")
def ensure_indexes() -> None:
    """Build the collection's indexes (idempotent; the service also builds them when it starts)."""
    db = _database()
    try:
        db.ensure_indexes()
    except IndexBuildFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"indexes ensured on {db.describe()}")


@cli.command("user-hash")
@click.argument("user_id")
@_tenant_option
def user_hash(user_id: str, tenant: str | None) -> None:
    """The hash that stands for USER_ID of a tenant in JSON logs (`user`), keyed as the service keys it: grep for it."""
    if not user_id:
        raise click.BadParameter("must not be empty", param_hint="USER_ID")
    tenant = _user_tenant(tenant)
    key = logs.hash_key(current_app.config["SETTINGS"])
    click.echo(logs.user_hash(key, tenants.user_key(tenant, user_id)))


DEAD_SHOWN = 50  # dead events listed with their last error; the rest are counted


@cli.command("events")
@click.option("--redeliver", "event_id", metavar="ID", help="Send this dead event again (a new retry window).")
@click.option("--all-dead", is_flag=True, help="Send every dead event again.")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
def events(event_id: str | None, all_dead: bool, as_json: bool) -> None:
    """Lifecycle events not delivered: pending, retrying and dead, by type; redeliver dead ones."""
    db = _database()
    if not db.settings.events_enabled:
        raise click.ClickException("lifecycle events are off: set WEBHOOK_URL (or WEBHOOK_TARGET=coze_workflow)")
    if event_id is not None and all_dead:
        raise click.UsageError("give --redeliver ID or --all-dead, not both")
    with _failures():
        outbox = db.store().outbox
        assert outbox is not None  # events_enabled: every store has the process's outbox
        if event_id is not None or all_dead:
            n = outbox.redeliver(event_id, db.clock())
            if event_id is not None and n == 0:
                raise click.ClickException(f"no dead event {event_id!r}")
            plural = "s" if n != 1 else ""
            click.echo(f"{n} dead event{plural} queued again; the sweeper sends them within seconds")
            return
        counts = outbox.summary()
        dead = outbox.dead(DEAD_SHOWN) if counts["dead"]["total"] else []
    if as_json:
        click.echo(orjson.dumps(counts).decode())
        return
    click.echo(f"database: {db.describe()}")
    for state, by_type in counts.items():
        kinds = ", ".join(f"{kind}: {n:,}" for kind, n in by_type.items() if kind != "total")
        click.echo(f"{state}: {by_type['total']:,}" + (f" ({kinds})" if kinds else ""))
    for doc in dead:
        when = iso(doc["dd"]) if doc.get("dd") else "?"
        click.echo(f"dead {doc['_id']} {doc['t']} after {doc.get('tries', 0)} tries, {when}: {doc.get('le', '')}")
    if counts["dead"]["total"] > len(dead):
        click.echo(f"... and {counts['dead']['total'] - len(dead)} more dead events")
