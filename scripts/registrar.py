"""The registration workflow on Coze Studio, step by step: development tooling, not run in production.

Log in, pick the space, find the plugin, register or update it, debug every tool against the service,
refuse to publish while a tool has not passed, publish. Follows docs/coze.md (Registering and publishing).
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app import spec
from scripts.coze_studio import (
    DEBUG_API,
    LOGIN,
    NEXT_VERSION,
    PLUGIN_APIS,
    PLUGIN_INFO,
    PLUGIN_LIST,
    PUBLISH,
    REGISTER,
    SPACE_LIST,
    UPDATE,
    Coze,
    CozeError,
    DryRun,
    field,
)
from scripts.plugin_documents import Documents, debug_order, sample_parameters
from scripts.register_console import Failure, Output

PAGE_SIZE = 20  # Coze refuses a tool-list page of 30 or more
REASON_CHARS = 300  # a failing tool's reason quotes the service's answer: keep the line readable


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
        session_id = lock_token = ""
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
                params = sample_parameters(spec_tool, user_id, session_id or fallback_id, lock_token)
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
                if spec_tool.operations == ("lock",) and resp.get("lock_token"):
                    lock_token = str(resp["lock_token"])
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
