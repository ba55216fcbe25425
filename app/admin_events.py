"""The admin CLI's `events`: what lifecycle events wait, which are dead and why, and redelivery. click only.

Registered on app.admin's group (`make admin ARGS="events ..."`); the storage side is app.storage.outbox.
"""

from __future__ import annotations

import click
import orjson

from app.admin import _database, _failures, cli
from app.responses import iso

SHOWN = 50  # dead events listed with their last error; the rest are counted


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
        if event_id is not None or all_dead:
            n = outbox.redeliver(event_id, db.clock())
            if event_id is not None and n == 0:
                raise click.ClickException(f"no dead event {event_id!r}")
            plural = "s" if n != 1 else ""
            click.echo(f"{n} dead event{plural} queued again; the sweeper sends them within seconds")
            return
        counts = outbox.summary()
        dead = outbox.dead(SHOWN) if counts["dead"]["total"] else []
    if as_json:
        click.echo(orjson.dumps(counts).decode())
        return
    click.echo(f"database: {db.describe()}")
    for state, by_type in counts.items():
        kinds = ", ".join(f"{kind}: {n:,}" for kind, n in by_type.items() if kind != "total")
        click.echo(f"{state}: {by_type['total']:,}" + (f" ({kinds})" if kinds else ""))
    for doc in dead:
        when = iso(doc["dd"]) if doc.get("dd") else "?"
        click.echo(f"dead {doc['_id']} {doc['t']} after {doc.get('n', 0)} tries, {when}: {doc.get('le', '')}")
    if counts["dead"]["total"] > len(dead):
        click.echo(f"... and {counts['dead']['total'] - len(dead)} more dead events")
