"""What every admin command stands on: the app's database, the --tenant option, failures as exit code 1,
progress on a terminal, JSON Lines. click and Flask only (the storage through app.storage's Database).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
import orjson
from flask import current_app

from app import errors, tenants
from app.storage.database import Database
from app.storage.store import SessionStore
from app.storage.transfer import NAMES

Command = TypeVar("Command", bound=Callable[..., Any])


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


def database() -> Database:
    """The database of the app the command runs in."""
    db: Database = current_app.extensions["database"]
    return db


def tenant_option(command: Command) -> Command:
    """The --tenant option every command about tenants takes."""
    return click.option(
        "--tenant", metavar="NAME", help="Only this tenant (a name in TENANTS; `default`: SERVICE_TOKEN's)."
    )(command)


def user_tenant(name: str | None) -> str:
    """The tenant of a command about one user: --tenant, checked, else the only tenant there is."""
    if name is not None:
        checked_tenant(name)
        return name
    known: tenants.Tenants = current_app.config["TENANTS"]
    if len(known.all) == 1:
        return known.all[0].name
    raise click.UsageError(f"several tenants are configured: give --tenant NAME (one of {', '.join(known.names)})")


def checked_tenant(name: str | None) -> str | None:
    """The tenant a command is about: --tenant, checked (None: every tenant)."""
    known: tenants.Tenants = current_app.config["TENANTS"]
    if name is None:
        return None
    if not tenants.NAME.match(name):
        raise click.BadParameter("must be 1-32 characters of a-z 0-9 _ -", param_hint="--tenant")
    if name not in known.by_name:  # a tenant taken out of TENANTS may still have data to export or erase
        click.echo(f"note: tenant {name!r} is not configured now (tenants: {', '.join(known.names)})", err=True)
    return name


def tenant_store(tenant: str | None) -> SessionStore:
    """The store with the tenant's own MAX_SESSIONS (slots mean the same as for the service)."""
    known: tenants.Tenants = current_app.config["TENANTS"]
    own = known.by_name.get(tenant) if tenant else None
    return database().store(own.max_sessions if own else None)


@contextlib.contextmanager
def failures() -> Iterator[None]:
    """The service's errors and file errors as a message and exit code 1."""
    try:
        yield
    except errors.ServiceError as exc:
        if not database().settings.mongodb_uri:
            raise click.ClickException(
                "no database: set MONGODB_URI, or run `session-admin`, which starts the embedded one"
            ) from None
        raise click.ClickException(f"{exc.code}: {exc.message('en')} ({database().describe()})") from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


def json_line(record: dict) -> bytes:
    return orjson.dumps(record) + b"\n"


def kind_counts(counter: Counter) -> str:
    return ", ".join(f"{name}: {counter[kind]:,}" for kind, name in NAMES.items())
