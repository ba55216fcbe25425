"""The admin command `events`: lifecycle events not delivered, and their redelivery. click and Flask only
(the storage through the process's outbox, storage.outbox); registered on the admin group by app.admin.
"""

from __future__ import annotations

import click
import orjson
from flask.cli import with_appcontext

from app.admin_base import checked_tenant, database, failures, tenant_option
from app.responses import iso

DEAD_SHOWN = 50  # dead events listed with their last error; the rest are counted


@click.command("events")
@click.option("--redeliver", "event_id", metavar="ID", help="Send this dead event again (a new retry window).")
@click.option("--all-dead", is_flag=True, help="Send every dead event again.")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
@tenant_option
@with_appcontext
def events(event_id: str | None, all_dead: bool, as_json: bool, tenant: str | None) -> None:
    """Lifecycle events not delivered: pending, retrying and dead, by type; redeliver dead ones."""
    db = database()
    tenant = checked_tenant(tenant)
    if not db.settings.events_enabled:
        raise click.ClickException("lifecycle events are off: set WEBHOOK_URL (or WEBHOOK_TARGET=coze_workflow)")
    if event_id is not None and all_dead:
        raise click.UsageError("give --redeliver ID or --all-dead, not both")
    with failures():
        outbox = db.store().outbox
        assert outbox is not None  # events_enabled: every store has the process's outbox
        backlog = outbox.backlog
        if event_id is not None or all_dead:
            n = backlog.redeliver(event_id, db.clock(), tenant)
            if event_id is not None and n == 0:
                raise click.ClickException(f"no dead event {event_id!r}" + (f" of tenant {tenant}" if tenant else ""))
            plural = "s" if n != 1 else ""
            click.echo(f"{n} dead event{plural} queued again; the sweeper sends them within seconds")
            return
        counts = backlog.summary(tenant)
        dead = backlog.dead(DEAD_SHOWN, tenant) if counts["dead"]["total"] else []
    if as_json:
        click.echo(orjson.dumps(counts).decode())
        return
    click.echo(f"database: {db.describe()}" + (f", tenant {tenant}" if tenant else ""))
    for state, by_type in counts.items():
        kinds = ", ".join(f"{kind}: {n:,}" for kind, n in by_type.items() if kind != "total")
        click.echo(f"{state}: {by_type['total']:,}" + (f" ({kinds})" if kinds else ""))
    for doc in dead:
        when = iso(doc["dd"]) if doc.get("dd") else "?"
        tries, error = doc.get("tries", 0), doc.get("le", "")
        click.echo(f"dead {doc['_id']} {doc['t']} of tenant {doc['tenant']} after {tries} tries, {when}: {error}")
    if counts["dead"]["total"] > len(dead):
        click.echo(f"... and {counts['dead']['total'] - len(dead)} more dead events")
