"""`session-admin` (installed into .venv/bin by the Makefile; `make admin ARGS="..."` runs it): the
admin CLI of app/admin.py on the configured database, with its exit codes: 0 done, 1 failed, 2 bad usage.

With no MONGODB_URI it works on the embedded nx-27017 and its file under VAR_DIR (the project's var/
unless set): the one `make run` started, if one answers on EMBEDDED_DB_PORT, else one started for the
command and stopped after it. In development without SERVICE_TOKEN it reads the token `make run`
generated (var/dev-token), so `user-hash` prints the hash the running service logs. Development
wiring, like gunicorn.conf.py; the commands themselves are app/admin.py (and app/admin_*.py).
"""

from __future__ import annotations

import os
import sys

import click

from scripts.embedded import ROOT, dev_token, embedded_paths, port_open, start_embedded, stop_embedded

PROG = "session-admin"
NO_DATABASE = ("user-hash",)  # commands that never touch the database: no embedded one is started for them


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the CLI serves no requests: no file in the service's metrics
    env.setdefault("LOG_LEVEL", "ERROR")  # the service's start-up warnings are not the command's
    env.setdefault("VAR_DIR", str(ROOT / "var"))
    if env.get("APP_ENV", "development") != "production" and not env.get("SERVICE_TOKEN"):
        env["SERVICE_TOKEN"] = dev_token(env, create=False)
    from app import admin  # an unknown command is a usage error: no database is started for it

    wants_database = bool(argv) and argv[0] in set(admin.cli.commands) - set(NO_DATABASE)
    wants_database = wants_database and not {"--help", "-h"} & set(argv)
    embedded = None
    try:
        if wants_database and not env.get("MONGODB_URI"):
            db_path, port, log_file = embedded_paths(env)
            if port_open("127.0.0.1", port):
                click.echo(f"{PROG}: using the embedded database that answers on 127.0.0.1:{port}", err=True)
            else:
                embedded = start_embedded(db_path, port, log_file)
                click.echo(f"{PROG}: started the embedded database on {db_path} for this command", err=True)
            env["MONGODB_URI"] = f"mongodb://127.0.0.1:{port}"
        return _run(argv)
    except RuntimeError as exc:  # the embedded database could not be started
        click.echo(f"{PROG}: {exc}", err=True)
        return 1
    finally:
        if embedded is not None:
            stop_embedded(embedded)


def _run(argv: list[str]) -> int:
    from app import admin, create_app
    from app.settings import SettingsError

    try:
        app = create_app()
    except SettingsError as exc:
        click.echo(f"{PROG}: configuration: {exc}", err=True)
        return 1
    with app.app_context():
        try:
            admin.cli.main(args=argv, prog_name=PROG, standalone_mode=False)
        except click.ClickException as exc:  # a usage error is one (exit code 2), a failure another (1)
            exc.show()
            return exc.exit_code
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.Abort:
            click.echo("Aborted!", err=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
