"""Register (or update), debug and publish the plugin on Coze Studio; export it for Coze SaaS.

    python scripts/register_plugin.py --coze-url http://coze-studio:8888 --base-url https://sessions.example.com \\
        [--space-id ID] [--plugin-id ID] [--debug] [--publish] [--version vX.Y.Z] [--dry-run] [--export DIR]

Credentials come only from the environment: COZE_EMAIL, COZE_PASSWORD (the Coze Studio login) and
SERVICE_TOKEN (the token Coze sends to the service). What is sent is built from the committed
plugin.yaml and openapi.json: the server URL set to --base-url, the manifest's auth.service_token set
from SERVICE_TOKEN; with CONTEXT_SCHEMA set, the OpenAPI document is generated with its typed context
fields instead of read. Follows docs/coze.md (Registering and publishing). One progress line per step on stdout;
every failure names the step, the HTTP status, Coze's code and msg on stderr and exits non-zero.
No password or token is ever printed.

Development tooling: production never runs it. This file is the command line (arguments, their
checks, the order of the steps); the steps are scripts/registrar.py, the Coze Studio client
scripts/coze_studio.py, the documents scripts/plugin_documents.py, the output scripts/register_console.py.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.context_schema import ContextSchema, ContextSchemaError  # noqa: E402
from scripts.coze_studio import Coze, DryRun  # noqa: E402
from scripts.plugin_documents import export, load_documents  # noqa: E402
from scripts.register_console import EXIT_USAGE, Failure, Output  # noqa: E402
from scripts.registrar import Registrar  # noqa: E402

VERSION_PATTERN = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
STUDIO_OPTIONS = ("space_id", "plugin_id", "debug", "publish", "version", "dry_run")


def _url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL with a host")
    return value.strip().rstrip("/")


def _id(value: str) -> str:
    if not re.fullmatch(r"[0-9]{1,20}", value.strip()):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Coze id (digits)")
    return value.strip()


def _version(value: str) -> str:
    if not VERSION_PATTERN.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not of the form vX.Y.Z")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="register_plugin.py",
        description="Register or update the Session Manager plugin on Coze Studio, debug every tool and "
        "publish it; or export import-ready files for Coze SaaS. Credentials only from the environment: "
        "COZE_EMAIL, COZE_PASSWORD, SERVICE_TOKEN.",
    )
    p.add_argument("--coze-url", type=_url, help="Coze Studio web address, e.g. http://coze-studio:8888")
    p.add_argument(
        "--base-url",
        type=_url,
        help="the service's public URL, as Coze must reach it (default: PUBLIC_BASE_URL; "
        "for a dry run, http://127.0.0.1:PORT)",
    )
    p.add_argument("--space-id", type=_id, help="Coze space id (default: your first space)")
    p.add_argument("--plugin-id", type=_id, help="plugin to update (default: the plugin of the same name)")
    p.add_argument("--debug", action="store_true", help="run Coze's debug call on every tool")
    p.add_argument("--publish", action="store_true", help="publish; refused unless every tool passed debug")
    p.add_argument("--version", type=_version, help="version to publish, vX.Y.Z (default: Coze's next version)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print every request (secrets masked), send nothing; without --coze-url, as to the local "
        "stand-in (make coze-standin)",
    )
    p.add_argument("--export", metavar="DIR", type=Path, help="write openapi.json and ai_plugin.json for Coze SaaS")
    return p


def _warn_unreachable(args: argparse.Namespace, out: Output) -> None:
    host = urlsplit(args.base_url).hostname or ""
    loopback = host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
    coze_host = (urlsplit(args.coze_url).hostname or "") if args.coze_url else ""
    coze_loopback = coze_host == "localhost" or (_is_ip(coze_host) and ipaddress.ip_address(coze_host).is_loopback)
    if args.coze_url and loopback and not coze_loopback:
        out.warn(f"--base-url {args.base_url} is a loopback address: Coze calls it from its own machine, not yours")
    if args.export and _is_ip(host):
        out.warn("Coze SaaS refuses a server URL on an IP address: use a domain name for the import")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _defaults(args: argparse.Namespace, env: Mapping[str, str], out: Output) -> None:
    """--base-url from PUBLIC_BASE_URL; a dry run needs nothing: it rehearses against the local stand-in's
    address for the service on this machine (both named, so nobody mistakes it for their own)."""
    try:
        if not args.base_url and env.get("PUBLIC_BASE_URL", "").strip():
            args.base_url = _url(env["PUBLIC_BASE_URL"])
        if args.dry_run and not args.base_url:
            args.base_url = f"http://127.0.0.1:{env.get('PORT', '').strip() or 8080}"
            out.text(f"dry run: --base-url not given, using {args.base_url}")
        if args.dry_run and not args.coze_url and not args.export:
            args.coze_url = _url(env.get("COZE_URL", "") or f"http://127.0.0.1:{env.get('COZE_STANDIN_PORT') or 8888}")
            out.text(f"dry run: --coze-url not given, using {args.coze_url} (make coze-standin serves there)")
    except argparse.ArgumentTypeError as exc:
        raise Failure("config", str(exc), EXIT_USAGE) from None
    if not args.base_url:
        raise Failure("arguments", "give --base-url (the service's public URL) or set PUBLIC_BASE_URL", EXIT_USAGE)


def run(args: argparse.Namespace, env: Mapping[str, str], session: requests.Session, out: Output) -> int:
    email = env.get("COZE_EMAIL", "").strip()
    password = env.get("COZE_PASSWORD", "")
    token = env.get("SERVICE_TOKEN", "").split(",")[0].strip()
    for secret in (password, token, env.get("SERVICE_TOKEN", "")):
        out.add_secret(secret)
    _defaults(args, env, out)
    studio_only = [f"--{n.replace('_', '-')}" for n in STUDIO_OPTIONS if getattr(args, n)]
    if studio_only and not args.coze_url:
        raise Failure("arguments", f"{', '.join(studio_only)} need(s) --coze-url", EXIT_USAGE)
    if not args.coze_url and not args.export:
        raise Failure("arguments", "give --coze-url (Coze Studio) and/or --export DIR (Coze SaaS)", EXIT_USAGE)
    if args.coze_url and args.dry_run:  # nothing is sent: the credentials may be missing, placeholders stand in
        email, password, token = email or "you@example.com", password or "password", token or "service-token"
        out.add_secret(password)
        out.add_secret(token)
    elif args.coze_url:
        missing = [name for name, value in (("COZE_EMAIL", email), ("COZE_PASSWORD", password)) if not value]
        if not token:
            missing.append("SERVICE_TOKEN")
        if missing:
            raise Failure("config", f"set {', '.join(missing)} in the environment", EXIT_USAGE)
    _warn_unreachable(args, out)
    schema_path = env.get("CONTEXT_SCHEMA", "").strip()
    try:
        schema = ContextSchema.load(schema_path) if schema_path else None
    except ContextSchemaError as exc:
        raise Failure("config", str(exc), EXIT_USAGE) from None
    docs = load_documents(args.base_url, token, out, context_schema=schema)
    out.step("check", f"plugin.yaml and openapi.json pass the Coze import rules ({len(docs.tool_names())} tools)")
    if args.export:
        export(args.export, docs, out)
    if not args.coze_url:
        return 0
    if args.dry_run:
        out.text("dry run: nothing is sent; the answers below are placeholders")
        out.prefix = "(dry run) "
        coze: Coze | DryRun = DryRun(args.coze_url, out, docs)
    else:
        coze = Coze(args.coze_url, session, out)
    registrar = Registrar(coze, docs, out, args)
    registrar.login(email, password)
    registrar.space()
    registrar.find()
    registrar.register_or_update()
    failures: dict[str, str] = {}
    if args.debug:
        failures = registrar.debug()
    if args.publish:
        registrar.check_debugged(failures)
        registrar.publish()
    elif failures:
        names = ", ".join(failures)
        raise Failure("debug", f"{len(failures)} tool(s) failed: {names}. Coze must reach {args.base_url}.")
    out.step("done", f"plugin {registrar.plugin_id} in space {registrar.space_id}")
    return 0


def main(
    argv: list[str],
    env: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out = Output(stdout or sys.stdout, stderr or sys.stderr)
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    own = session is None
    session = session or requests.Session()
    try:
        return run(args, os.environ if env is None else env, session, out)
    except Failure as exc:
        out.error(str(exc))
        return exc.exit_code
    finally:
        if own:
            session.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
