"""The admin CLI on Flask's CLI: stats, export, import, wipe-user, ensure-indexes, user-hash, events. click
and Flask only.

`session-admin ...` (scripts/admin.py, which also starts the embedded database when no MONGODB_URI is
set; `flask --app app.wsgi admin ...` is the same commands) works on the database the service is
configured with; the storage side is app.storage's transfer, records, census and outbox (events). Exit codes: 0 done,
1 failed, 2 bad usage. Reports go to standard output (an export's to standard error, its records may
be on standard output), progress to standard error when it is a terminal. Every command takes
`--tenant NAME`: a user id names a user of one tenant (with several tenants configured, a command
about one user needs it). What every command stands on is app.admin_base; `events` is app.admin_events.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from itertools import chain

import click
import orjson
from flask import current_app
from flask.cli import AppGroup

from app import logs, tenants
from app.admin_base import (
    Progress,
    checked_tenant,
    database,
    failures,
    json_line,
    kind_counts,
    tenant_option,
    tenant_store,
    user_tenant,
)
from app.admin_events import events
from app.responses import iso
from app.storage.database import IndexBuildFailed
from app.storage.records import FORMAT, VERSION, BadRecord, check
from app.storage.transfer import NAMES, Restored

cli = AppGroup(
    "admin", help="Operate the session store: stats, export, import, wipe-user, ensure-indexes, user-hash, events."
)
BATCH, BATCH_BYTES = 200, 8 * 1024 * 1024  # records written to the database at once
SHOWN = 50  # problem lines printed; the rest are counted


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@tenant_option
def stats(as_json: bool, tenant: str | None) -> None:
    """Counts of documents, sessions by status, users, messages and context bytes; sessions and users by tenant."""
    db = database()
    tenant = checked_tenant(tenant)
    with failures():
        counts = tenant_store(tenant).census(db.clock(), tenant)
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
@tenant_option
def export(user_id: str | None, out: str, tenant: str | None) -> None:
    """Write every session (its context, whole history and settings) as JSON Lines, each naming its tenant."""
    if user_id == "":
        raise click.BadParameter("must not be empty", param_hint="--user")
    tenant = user_tenant(tenant) if user_id is not None else checked_tenant(tenant)
    user_key = tenants.user_key(tenant, user_id) if user_id is not None and tenant else None
    db = database()
    partial = f"{out}.partial" if out != "-" else ""  # a file only appears once it is whole
    progress, counts = Progress("exported"), Counter[str]()
    with failures():
        if partial:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        transfer = tenant_store(tenant).transfer()
        try:
            with click.open_file(partial or "-", "wb") as stream:
                header = {"format": FORMAT, "version": VERSION, "exported_at": iso(db.clock())}
                stream.write(json_line({**header, "user": user_id, "tenant": tenant, "database": db.describe()}))
                for record in chain(transfer.sessions(user_key, tenant), transfer.markers(user_key, tenant)):
                    stream.write(json_line(record))
                    counts[record["kind"]] += 1
                    progress.step()
                stream.write(json_line({"kind": "end", "records": {kind: counts[kind] for kind in NAMES}}))
        except BaseException:
            if partial:
                with contextlib.suppress(OSError):
                    os.remove(partial)
            raise
        if partial:
            os.replace(partial, out)
    progress.done()
    where = "standard output" if out == "-" else out
    click.echo(f"exported to {where} in {progress.seconds:.1f} s: {kind_counts(counts)}", err=True)
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
    tenant = checked_tenant(tenant)
    db = database()
    done, failed, seen, progress = Restored(), [], Counter[str](), Progress("imported")
    end = None
    with failures(), click.open_file(file, "rb") as stream:
        _header(next(stream, b""))
        transfer = (tenant_store(tenant) if tenant else db.store()).transfer()
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
    click.echo(f"imported in {seconds:.1f} s: {kind_counts(done.imported)}")
    if sum(done.replaced.values()):
        click.echo(f"of which replaced a stored one (--replace): {kind_counts(done.replaced)}")
    click.echo(f"already there, left alone: {kind_counts(done.unchanged)}")
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
@tenant_option
def wipe(user_id: str, tenant: str | None) -> None:
    """Erase every document of USER_ID of one tenant (sessions, archive chunks, tombstones, receipts); say what went."""
    if not user_id:
        raise click.BadParameter("must not be empty", param_hint="USER_ID")
    tenant = user_tenant(tenant)
    with failures():
        removed, clean = database().store().wipe_user(tenants.user_key(tenant, user_id))
    listing = ", ".join(f"{name}: {n:,}" for name, n in removed.items())
    click.echo(f"removed {sum(removed.values()):,} documents of user {user_id!r} of tenant {tenant!r} ({listing})")
    if not clean:
        raise click.ClickException("documents of this user were written meanwhile: stop their traffic and wipe again")


@cli.command("ensure-indexes")
def ensure_indexes() -> None:
    """Build the collection's indexes (idempotent; the service also builds them when it starts)."""
    db = database()
    try:
        db.ensure_indexes()
    except IndexBuildFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"indexes ensured on {db.describe()}")


@cli.command("user-hash")
@click.argument("user_id")
@tenant_option
def user_hash(user_id: str, tenant: str | None) -> None:
    """The hash that stands for USER_ID of a tenant in JSON logs (`user`), keyed as the service keys it: grep for it."""
    if not user_id:
        raise click.BadParameter("must not be empty", param_hint="USER_ID")
    tenant = user_tenant(tenant)
    key = logs.hash_key(current_app.config["SETTINGS"])
    click.echo(logs.user_hash(key, tenants.user_key(tenant, user_id)))


cli.add_command(events)
