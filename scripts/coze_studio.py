"""The Coze Studio HTTP API as the registration script calls it: development tooling, not run in production.

Coze sends each request; DryRun prints it (secrets masked) and answers with placeholders. Both raise
CozeError unless Coze answers HTTP 200 with code 0.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import requests

from scripts.plugin_documents import Documents
from scripts.register_console import MASK, Failure, Output

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


class CozeError(Failure):
    """Coze answered something other than HTTP 200 with code 0."""

    def __init__(self, step: str, status: Any, code: Any, msg: str) -> None:
        super().__init__(step, f"HTTP {status}, code {code}, msg {msg!r}")
        self.status = status
        self.code = code
        self.msg = msg


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
