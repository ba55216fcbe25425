"""Register (or update), debug and publish the plugin on Coze Studio; export it for Coze SaaS.

    python scripts/register_plugin.py --coze-url http://coze-studio:8888 --base-url https://sessions.example.com \\
        [--space-id ID] [--plugin-id ID] [--debug] [--publish] [--version vX.Y.Z] [--dry-run] [--export DIR]

Credentials come only from the environment: COZE_EMAIL, COZE_PASSWORD (the Coze Studio login) and
SERVICE_TOKEN (the token Coze sends to the service). What is sent is built from the committed
plugin.yaml and openapi.json: the server URL set to --base-url, the manifest's auth.service_token set
from SERVICE_TOKEN. Follows section 4 of COZE_CONTRACT.md. One progress line per step on stdout;
every failure names the step, the HTTP status, Coze's code and msg on stderr and exits non-zero.
No password or token is ever printed.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import schemas, spec  # noqa: E402
from scripts import cozerules  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VERSION_PATTERN = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
MASK = "***"
PAGE_SIZE = 20  # Coze refuses a tool-list page of 30 or more
REASON_CHARS = 300  # a failing tool's reason quotes the service's answer: keep the line readable
STUDIO_OPTIONS = ("space_id", "plugin_id", "debug", "publish", "version", "dry_run")
EXIT_FAILED = 1
EXIT_USAGE = 2

LOGIN = "/api/passport/web/email/login/"
SPACE_LIST = "/api/playground_api/space/list"
PLUGIN_LIST = "/api/plugin_api/get_dev_plugin_list"
PLUGIN_INFO = "/api/plugin_api/get_plugin_info"
REGISTER = "/api/plugin_api/register"
UPDATE = "/api/plugin_api/update"
PLUGIN_APIS = "/api/plugin_api/get_plugin_apis"
DEBUG_API = "/api/plugin_api/debug_api"
NEXT_VERSION = "/api/plugin_api/get_plugin_next_version"
PUBLISH = "/api/plugin_api/publish_plugin"


class Failure(Exception):
    """A step failed; the message says which and why. Exit code EXIT_FAILED unless told otherwise."""

    def __init__(self, step: str, detail: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(f"{step} failed: {detail}")
        self.step = step
        self.exit_code = exit_code


class CozeError(Failure):
    """Coze answered something other than HTTP 200 with code 0."""

    def __init__(self, step: str, status: Any, code: Any, msg: str) -> None:
        super().__init__(step, f"HTTP {status}, code {code}, msg {msg!r}")
        self.status = status
        self.code = code
        self.msg = msg


class Output:
    """Every line the script prints goes through here, with every known secret masked."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self._secrets: list[str] = []
        self.prefix = ""  # "(dry run) " while nothing is really sent

    def add_secret(self, value: str | None) -> None:
        if not value or len(value) < 4:  # shorter ones would garble the output; they are never printed anyway
            return
        variants = {
            value,
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            json.dumps(json.dumps(value))[3:-3],
        }
        self._secrets = sorted(set(self._secrets) | {v for v in variants if v}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def step(self, step: str, text: str) -> None:
        print(self.mask(f"{step}: {self.prefix}{text}"), file=self.out, flush=True)

    def text(self, text: str) -> None:
        print(self.mask(text), file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(self.mask(f"warning: {text}"), file=self.err, flush=True)

    def error(self, text: str) -> None:
        print(self.mask(f"error: {text}"), file=self.err, flush=True)


# --- what is sent -------------------------------------------------------------------------------


@dataclass
class Documents:
    manifest: dict[str, Any]
    openapi: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name_for_human"])

    def ai_plugin(self) -> str:
        return json.dumps(self.manifest, ensure_ascii=False)

    def openapi_text(self) -> str:
        return json.dumps(self.openapi, ensure_ascii=False, indent=2)

    def tool_names(self) -> list[str]:
        return [op["operationId"] for item in self.openapi["paths"].values() for op in item.values()]


def load_documents(base_url: str, token: str, out: Output, root: Path = ROOT) -> Documents:
    """plugin.yaml and openapi.json as committed, with the server URL and the token filled in and checked."""
    manifest = yaml.safe_load((root / "plugin.yaml").read_text(encoding="utf-8"))
    openapi = json.loads((root / "openapi.json").read_text(encoding="utf-8"))
    committed_url = (openapi.get("servers") or [{}])[0].get("url", "")
    if openapi != schemas.openapi_document(committed_url):
        out.warn("openapi.json differs from what app/spec.py generates: run `make openapi` and commit it")
    if (manifest.get("auth") or {}).get("type") == "service_http":
        manifest["auth"]["service_token"] = token
    openapi["servers"] = [{"url": base_url}]
    problems = cozerules.manifest_problems(manifest) + cozerules.openapi_problems(openapi)
    if problems:
        raise Failure("check", "Coze would refuse these documents: " + "; ".join(problems), EXIT_USAGE)
    return Documents(manifest, openapi)


def sample_parameters(tool: spec.Tool, user_id: str, session_id: str) -> dict[str, Any]:
    """The flat input object debug_api sends for `tool`, from the spec: what its operation needs."""
    op_name = "get" if len(tool.operations) > 1 else tool.operations[0]
    op = spec.OPERATIONS[op_name]
    params: dict[str, Any] = {}
    for name in tool.inputs:
        if name == "operation":
            params[name] = op_name
        elif name == "user_id":
            params[name] = user_id
        elif name == "session_id" and name in op.needs:
            params[name] = session_id
        elif name == "context" and name in op.inputs:
            params[name] = json.dumps({"coze_debug": True, "tool": tool.name})
        elif name == "messages" and name in op.inputs:
            params[name] = [{"role": "user", "content": "Hello from the registration script's debug run."}]
    if "lang" in tool.options():
        params["options"] = {"lang": "en"}
    return params


def debug_order(name: str) -> tuple[int, int]:
    """create first (its session serves the others), close then delete last, the rest in spec order."""
    tool = spec.TOOLS_BY_NAME.get(name)
    index = spec.TOOLS.index(tool) if tool else len(spec.TOOLS)
    ops = tool.operations if tool else ()
    rank = 0 if ops == ("create",) else 2 if ops == ("close",) else 3 if ops == ("delete",) else 1
    return rank, index


# --- talking to Coze Studio ---------------------------------------------------------------------


def field(data: dict[str, Any], name: str, default: Any = None) -> Any:
    """A response field: Coze puts some at the top level, some under `data`."""
    if name in data:
        return data[name]
    inner = data.get("data")
    if isinstance(inner, dict) and name in inner:
        return inner[name]
    return default


class Coze:
    """POSTs JSON to Coze Studio with the login cookie; every answer must be HTTP 200 with code 0."""

    def __init__(self, base_url: str, session: requests.Session, out: Output, timeout: float = 200) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.out = out
        self.timeout = timeout  # debug_api waits for the service; Coze itself allows it 3 minutes
        self.cookie = ""

    def call(self, step: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        cookies = {"session_key": self.cookie} if self.cookie else None
        try:
            response = self.session.post(self.base_url + path, json=body, cookies=cookies, timeout=self.timeout)
        except requests.RequestException as exc:
            raise CozeError(step, "-", "-", f"cannot reach {self.base_url}: {type(exc).__name__}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            snippet = " ".join(response.text.split())[:200]
            raise CozeError(step, response.status_code, "-", f"not a JSON object: {snippet}")
        code = data.get("code", "-")
        msg = str(data.get("msg") or data.get("message") or "")
        if response.status_code != 200 or str(code) != "0":
            raise CozeError(step, response.status_code, code, msg)
        if path == LOGIN:
            self.cookie = response.cookies.get("session_key") or self.session.cookies.get("session_key") or ""
            if not self.cookie:
                raise CozeError(step, response.status_code, code, "no session_key cookie in the login answer")
            self.out.add_secret(self.cookie)
        return data


class DryRun:
    """Prints each request (secrets masked) instead of sending it; answers with placeholders."""

    def __init__(self, base_url: str, out: Output, docs: Documents) -> None:
        self.base_url = base_url.rstrip("/")
        self.out = out
        self.docs = docs
        self.debugged: set[str] = set()

    def call(self, step: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        shown = dict(body)
        if "password" in shown:
            shown["password"] = MASK
        if "ai_plugin" in shown:
            manifest = copy.deepcopy(self.docs.manifest)
            if (manifest.get("auth") or {}).get("service_token"):
                manifest["auth"]["service_token"] = MASK
            shown["ai_plugin"] = json.dumps(manifest, ensure_ascii=False)
        if "openapi" in shown:
            shown["openapi"] = (
                f"<openapi.json as a JSON string: {len(body['openapi'])} characters, "
                f"{len(self.docs.tool_names())} tools, server {self.docs.openapi['servers'][0]['url']}>"
            )
        cookie = "" if path == LOGIN else " (cookie session_key=***)"
        self.out.text(f"  would POST {self.base_url}{path}{cookie} {json.dumps(shown, ensure_ascii=False)}")
        return self._reply(path, body)

    def _reply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == LOGIN:
            return {"code": 0, "data": {"user_id_str": "<your user id>"}}
        if path == SPACE_LIST:
            return {"code": 0, "data": {"bot_space_list": [{"id": "<first space id>", "name": "<first space>"}]}}
        if path == PLUGIN_LIST:
            return {"code": 0, "plugin_list": [], "total": 0}
        if path == PLUGIN_INFO:
            return {"code": 0, "meta_info": {"name": self.docs.name}}
        if path == REGISTER:
            return {"code": 0, "data": {"plugin_id": "<new plugin id>"}}
        if path == PLUGIN_APIS:
            tools = [
                {"api_id": f"<id of {name}>", "name": name, "debug_status": int(f"<id of {name}>" in self.debugged)}
                for name in self.docs.tool_names()
            ]
            return {"code": 0, "api_info": tools, "total": len(tools)}
        if path == DEBUG_API:
            self.debugged.add(body["api_id"])
            resp = {"session_id": "<session id from session_create>", "status": "active", "error_code": ""}
            return {"code": 0, "success": True, "resp": json.dumps(resp), "reason": ""}
        if path == NEXT_VERSION:
            return {"code": 0, "next_version_name": "<next version from Coze>"}
        return {"code": 0, "data": {}}


# --- the steps ----------------------------------------------------------------------------------


@dataclass
class ToolState:
    api_id: str
    name: str
    debug_status: int
    disabled: bool


class Registrar:
    def __init__(self, coze: Coze | DryRun, docs: Documents, out: Output, args: argparse.Namespace) -> None:
        self.coze = coze
        self.docs = docs
        self.out = out
        self.args = args
        self.dry_run = isinstance(coze, DryRun)
        self.user_id = ""
        self.space_id = ""
        self.plugin_id = ""

    def login(self, email: str, password: str) -> None:
        data = self.coze.call("login", LOGIN, {"email": email, "password": password})
        self.user_id = str(field(data, "user_id_str") or field(data, "user_id") or "")
        self.out.step("login", f"ok, user {self.user_id}")

    def space(self) -> None:
        if self.args.space_id:
            self.space_id = self.args.space_id
            self.out.step("space", f"{self.space_id} (from --space-id)")
            return
        data = self.coze.call("space", SPACE_LIST, {})
        spaces = field(data, "bot_space_list") or []
        if not spaces:
            raise Failure("space", "this user has no space in Coze Studio; pass --space-id")
        self.space_id = str(spaces[0]["id"])
        self.out.step("space", f"{self.space_id} ({spaces[0].get('name', '')}, the first of {len(spaces)})")

    def find(self) -> None:
        """--plugin-id (checked to exist), else the plugin of the same name in the space, else none."""
        if self.args.plugin_id:
            data = self.coze.call("find", PLUGIN_INFO, {"plugin_id": self.args.plugin_id})
            self.plugin_id = self.args.plugin_id
            name = (field(data, "meta_info") or {}).get("name", "")
            self.out.step("find", f"plugin {self.plugin_id} ({name}, from --plugin-id)")
            return
        found: list[str] = []
        page = 1
        while True:
            body = {
                "space_id": self.space_id,
                "dev_id": self.user_id,
                "name": self.docs.name,
                "page": page,
                "size": PAGE_SIZE,
            }
            data = self.coze.call("find", PLUGIN_LIST, body)
            plugins = field(data, "plugin_list") or []
            found += [str(p["id"]) for p in plugins if p.get("name") == self.docs.name]
            total = int(field(data, "total") or 0)
            if not plugins or page * PAGE_SIZE >= total or page >= 50:
                break
            page += 1
        if len(found) > 1:
            ids = ", ".join(found)
            detail = f"{len(found)} plugins named {self.docs.name!r} in space {self.space_id} ({ids})"
            raise Failure("find", f"{detail}: pass --plugin-id to choose one")
        self.plugin_id = found[0] if found else ""
        if self.dry_run:
            self.out.step("find", f"a real run updates the plugin named {self.docs.name!r} if there is one")
        elif self.plugin_id:
            self.out.step("find", f"plugin {self.plugin_id} named {self.docs.name!r}: it will be updated")
        else:
            self.out.step("find", f"no plugin named {self.docs.name!r} in space {self.space_id}: it will be registered")

    def register_or_update(self) -> None:
        ai_plugin, openapi = self.docs.ai_plugin(), self.docs.openapi_text()
        server = self.docs.openapi["servers"][0]["url"]
        if self.plugin_id:
            self.coze.call("update", UPDATE, {"plugin_id": self.plugin_id, "ai_plugin": ai_plugin, "openapi": openapi})
            self.out.step("update", f"plugin {self.plugin_id} updated, server {server}")
            return
        data = self.coze.call(
            "register", REGISTER, {"ai_plugin": ai_plugin, "openapi": openapi, "space_id": self.space_id}
        )
        self.plugin_id = str(field(data, "plugin_id") or "")
        if not self.plugin_id:
            raise Failure("register", "Coze answered code 0 but no plugin_id")
        self.out.step("register", f"plugin {self.plugin_id} registered in space {self.space_id}, server {server}")

    def tools(self, step: str = "tools") -> list[ToolState]:
        tools: list[ToolState] = []
        page = 1
        while True:
            body = {"plugin_id": self.plugin_id, "page": page, "size": PAGE_SIZE}
            data = self.coze.call(step, PLUGIN_APIS, body)
            batch = field(data, "api_info") or []
            for info in batch:
                tools.append(
                    ToolState(
                        api_id=str(info.get("api_id", "")),
                        name=str(info.get("name", "")),
                        debug_status=int(info.get("debug_status") or 0),
                        disabled=bool(info.get("disabled")),
                    )
                )
            total = int(field(data, "total") or 0)
            if not batch or len(tools) >= total or page >= 50:
                return tools
            page += 1

    def debug(self) -> dict[str, str]:
        """debug_api on every enabled tool; returns {tool: reason} for the ones that failed."""
        tools = sorted((t for t in self.tools() if not t.disabled), key=lambda t: debug_order(t.name))
        passed = sum(t.debug_status == 1 for t in tools)
        self.out.step("tools", f"{len(tools)} enabled, {passed} passed debug before this run")
        user_id = f"coze-debug-{secrets.token_hex(6)}"
        session_id = ""
        fallback_id = f"coze-debug-{secrets.token_hex(6)}"  # if session_create fails, the others still run
        failures: dict[str, str] = {}
        deleted = False
        self.out.step("debug", f"sample inputs from app/spec.py, throw-away user {user_id}")
        try:
            for tool in tools:
                spec_tool = spec.TOOLS_BY_NAME.get(tool.name)
                if spec_tool is None:
                    failures[tool.name] = "not a tool of app/spec.py: no sample input"
                    self.out.step(f"debug {tool.name}", "skipped (not in app/spec.py)")
                    continue
                params = sample_parameters(spec_tool, user_id, session_id or fallback_id)
                ok, reason, resp = self._debug_one(tool, params)
                if not ok:
                    failures[tool.name] = reason
                    self.out.step(f"debug {tool.name}", f"FAILED: {reason}")
                    continue
                note = ""
                if resp.get("error_code"):
                    note = f" (the service answered error_code {resp['error_code']}: {resp.get('error', '')})"
                self.out.step(f"debug {tool.name}", f"pass{note}")
                if spec_tool.operations == ("create",) and resp.get("session_id"):
                    session_id = str(resp["session_id"])
                if spec_tool.operations == ("delete",) and not resp.get("error_code"):
                    deleted = True
        finally:
            if session_id and not deleted:
                self._cleanup(tools, user_id, session_id)
            elif session_id:
                self.out.step("cleanup", f"debug session {session_id} of {user_id} deleted")
        return failures

    def _debug_one(self, tool: ToolState, params: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
        body = {
            "plugin_id": self.plugin_id,
            "api_id": tool.api_id,
            "parameters": json.dumps(params, ensure_ascii=False),
            "operation": 1,
        }
        data = self.coze.call(f"debug {tool.name}", DEBUG_API, body)
        try:
            resp = json.loads(field(data, "resp") or "{}")
        except ValueError:
            resp = {}
        if not isinstance(resp, dict):
            resp = {}
        if not field(data, "success", False):
            reason = " ".join(str(field(data, "reason") or "Coze gave no reason").split())
            return False, reason[:REASON_CHARS] + ("..." if len(reason) > REASON_CHARS else ""), resp
        return True, "", resp

    def _cleanup(self, tools: list[ToolState], user_id: str, session_id: str) -> None:
        deleter = next((t for t in tools if t.name == "session_delete"), None)
        if deleter is None:
            self.out.warn(f"cleanup: no session_delete tool; debug session {session_id} of {user_id} is left")
            return
        params = sample_parameters(spec.TOOLS_BY_NAME["session_delete"], user_id, session_id)
        try:
            ok, reason, _ = self._debug_one(deleter, params)
        except CozeError as exc:
            ok, reason = False, str(exc)
        if ok:
            self.out.step("cleanup", f"debug session {session_id} of {user_id} deleted")
        else:
            self.out.warn(f"cleanup: debug session {session_id} of {user_id} not deleted ({reason}); it expires")

    def check_debugged(self, failures: Mapping[str, str]) -> None:
        """Refuse to publish, with the list, while a tool has not passed debug."""
        if failures:
            listed = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
            raise Failure("publish", f"refused, {len(failures)} tool(s) failed debug: {listed}")
        pending = [t.name for t in self.tools("publish") if not t.disabled and t.debug_status != 1]
        if pending and self.dry_run:
            self.out.step("publish", "a real run refuses unless every tool has passed debug")
        elif pending:
            server = self.docs.openapi["servers"][0]["url"]
            raise Failure(
                "publish",
                f"refused, {len(pending)} tool(s) have not passed debug: {', '.join(pending)}. "
                f"Run with --debug (Coze must reach the service at {server}) and fix what it reports.",
            )

    def publish(self) -> None:
        version = self.args.version
        if not version:
            data = self.coze.call("version", NEXT_VERSION, {"plugin_id": self.plugin_id, "space_id": self.space_id})
            version = str(field(data, "next_version_name") or "")
            if not version:
                raise Failure("version", "Coze gave no next_version_name; pass --version vX.Y.Z")
            self.out.step("version", f"{version} (Coze's next version)")
        body = {
            "plugin_id": self.plugin_id,
            "version_name": version,
            "version_desc": f"coze-session-node {spec.VERSION}, published by scripts/register_plugin.py",
            "privacy_status": False,
            "privacy_info": "",
        }
        self.coze.call("publish", PUBLISH, body)
        self.out.step("publish", f"plugin {self.plugin_id} published as {version}")


# --- export for Coze SaaS -----------------------------------------------------------------------


def export(directory: Path, docs: Documents, out: Output) -> None:
    """Import-ready openapi.json and ai_plugin.json (the manifest, without the token) for the SaaS UI."""
    manifest = copy.deepcopy(docs.manifest)
    if isinstance(manifest.get("auth"), dict) and "service_token" in manifest["auth"]:
        manifest["auth"]["service_token"] = ""  # never written to disk: typed into the import form instead
    problems = cozerules.manifest_problems(manifest) + cozerules.openapi_problems(docs.openapi)
    if problems:
        raise Failure("export", "; ".join(problems), EXIT_USAGE)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "openapi.json").write_text(json.dumps(docs.openapi, ensure_ascii=False, indent=2) + "\n", "utf-8")
    (directory / "ai_plugin.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", "utf-8")
    server = docs.openapi["servers"][0]["url"]
    auth = manifest.get("auth") or {}
    out.step("export", f"wrote {directory / 'openapi.json'} (server {server}) and {directory / 'ai_plugin.json'}")
    steps = [
        "Import into Coze SaaS (coze.cn / coze.com has no API for this; do it in the web UI):",
        "  1. Open your workspace, Library -> + -> Plugin -> Import.",
        f"  2. Choose 'local file' and upload {directory / 'openapi.json'} (or paste its text), then Next.",
        f"  3. Name and description: take them from ai_plugin.json ({docs.name}).",
        f"  4. Authorization: 'Service', location {auth.get('location', 'Header')}, "
        f"parameter name {auth.get('key', 'Authorization')}, service token = your SERVICE_TOKEN "
        "(the value is sent verbatim; 'Bearer <token>' also works).",
        f"  5. Enable all {len(docs.tool_names())} tools and run each one in the test console (Debug) until "
        "it passes: first session_create with a user_id, then use the session_id it returns for the others.",
        "  6. Publish the plugin; only published plugins can be added to workflows and agents.",
        f"  The service must answer at {server} from the internet, on a domain name (Coze SaaS refuses IP addresses).",
    ]
    for line in steps:
        out.text(line)


# --- command line -------------------------------------------------------------------------------


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
    p.add_argument("--base-url", type=_url, required=True, help="the service's public URL, as Coze must reach it")
    p.add_argument("--space-id", type=_id, help="Coze space id (default: your first space)")
    p.add_argument("--plugin-id", type=_id, help="plugin to update (default: the plugin of the same name)")
    p.add_argument("--debug", action="store_true", help="run Coze's debug call on every tool")
    p.add_argument("--publish", action="store_true", help="publish; refused unless every tool passed debug")
    p.add_argument("--version", type=_version, help="version to publish, vX.Y.Z (default: Coze's next version)")
    p.add_argument("--dry-run", action="store_true", help="print every request (secrets masked), send nothing")
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


def run(args: argparse.Namespace, env: Mapping[str, str], session: requests.Session, out: Output) -> int:
    email = env.get("COZE_EMAIL", "").strip()
    password = env.get("COZE_PASSWORD", "")
    token = env.get("SERVICE_TOKEN", "").split(",")[0].strip()
    for secret in (password, token, env.get("SERVICE_TOKEN", "")):
        out.add_secret(secret)
    studio_only = [f"--{n.replace('_', '-')}" for n in STUDIO_OPTIONS if getattr(args, n)]
    if studio_only and not args.coze_url:
        raise Failure("arguments", f"{', '.join(studio_only)} need(s) --coze-url", EXIT_USAGE)
    if not args.coze_url and not args.export:
        raise Failure("arguments", "give --coze-url (Coze Studio) and/or --export DIR (Coze SaaS)", EXIT_USAGE)
    if args.coze_url:
        missing = [name for name, value in (("COZE_EMAIL", email), ("COZE_PASSWORD", password)) if not value]
        if not token:
            missing.append("SERVICE_TOKEN")
        if missing:
            raise Failure("config", f"set {', '.join(missing)} in the environment", EXIT_USAGE)
    _warn_unreachable(args, out)
    docs = load_documents(args.base_url, token, out)
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
