"""A small Coze Studio stand-in for the registration tests, enforcing docs/coze.md (Registering and publishing).

- Every call is POST with a JSON object body; every path but login needs the `session_key` cookie
  (HTTP 401 without it). IDs are JSON strings (HTTP 400 otherwise); so are other bad parameters.
- Business errors are HTTP 200 with a non-zero `code` and a `msg`: wrong password, unknown space or
  plugin, `ai_plugin` / `openapi` that are not strings, do not parse or break scripts/cozerules.py, a tool
  that has not passed debug at publish, a version that is not higher than the last one.
- A manifest without `auth` crashes the validator with HTTP 500, as in Coze.
- `get_plugin_apis` refuses `size` of 30 or more.
- `debug_api` calls the REAL service over HTTP: server URL + path, inputs routed into the declared
  body (undeclared keys dropped, objects trimmed to declared properties, null treated as missing,
  declared defaults applied), the manifest's auth header with the token verbatim and its common
  headers. A tool passes only when the service answers HTTP 200 with a JSON object whose declared
  fields are never null and of the declared type (the test console's strict check).
- `update` matches tools by path and method; a changed tool goes back to "not debugged".

Everything it received is kept in `requests` and everything it sent to the service in `service_calls`.

Run by itself (`make coze-standin`, or `python -m tests.coze_standin`) it serves one stand-in on
127.0.0.1:COZE_STANDIN_PORT (8888) until Ctrl-C, accepting COZE_EMAIL / COZE_PASSWORD (defaults
printed), so an operator can rehearse `make register` locally (docs/coze.md, Rehearsing a registration locally).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import yaml
from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

from scripts import cozerules

VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
ERR_LOGIN = 700012001
ERR_PARAM = 700012002
ERR_PERMISSION = 700012003
ERR_NOT_FOUND = 702093003
ERR_INVALID_MANIFEST = 702093010
ERR_INVALID_OPENAPI = 702093011
ERR_NOT_DEBUGGED = 702093020
ERR_VERSION = 702093021


class _Crash(Exception):
    """HTTP 500, as Coze answers a manifest without `auth`."""


class BadRequest(Exception):
    """HTTP 400: a parameter of the wrong type or missing."""


class Business(Exception):
    """HTTP 200 with a non-zero code."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass
class Tool:
    api_id: str
    name: str
    path: str
    method: str
    operation: dict[str, Any]
    debug_status: int = 0
    disabled: bool = False


@dataclass
class Plugin:
    plugin_id: str
    space_id: str
    owner: str
    manifest: dict[str, Any]
    openapi: dict[str, Any]
    tools: list[Tool] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.manifest["name_for_human"])


class CozeStandIn:
    """The state and the Flask app of one stand-in; see the module docstring for what it enforces."""

    def __init__(self, email: str, password: str) -> None:
        self.url = ""
        self.users = {email: (password, "7000000000000000001")}
        self.spaces = {"7100000000000000001": ("Personal", "7000000000000000001")}
        self.sessions: dict[str, str] = {}
        self.plugins: dict[str, Plugin] = {}
        self.requests: list[tuple[str, Any]] = []
        self.service_calls: list[dict[str, Any]] = []
        self._ids = itertools.count(7200000000000000001)
        self._lock = threading.Lock()
        self.app = self._make_app()

    def _new_id(self) -> str:
        return str(next(self._ids))

    # -- plumbing --------------------------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask("coze_standin")
        routes: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            "/api/playground_api/space/list": self.space_list,
            "/api/plugin_api/register": self.register,
            "/api/plugin_api/update": self.update,
            "/api/plugin_api/get_plugin_info": self.get_plugin_info,
            "/api/plugin_api/get_dev_plugin_list": self.get_dev_plugin_list,
            "/api/plugin_api/get_plugin_apis": self.get_plugin_apis,
            "/api/plugin_api/debug_api": self.debug_api,
            "/api/plugin_api/get_plugin_next_version": self.get_plugin_next_version,
            "/api/plugin_api/publish_plugin": self.publish_plugin,
        }

        @app.post("/api/passport/web/email/login/")
        def login() -> Response:
            body = self._body()
            if isinstance(body, Response):
                return body
            password, user_id = self.users.get(str(body.get("email")), (None, ""))
            if password is None or body.get("password") != password:
                return self._json({"code": ERR_LOGIN, "msg": "email or password is incorrect"})
            key = secrets.token_hex(16)
            self.sessions[key] = user_id
            response = self._json({"code": 0, "msg": "", "data": {"user_id_str": user_id, "name": "operator"}})
            response.set_cookie("session_key", key, httponly=True, path="/")
            return response

        def handler(path: str) -> Callable[[], Response]:
            def handle() -> Response:
                body = self._body()
                if isinstance(body, Response):
                    return body
                user_id = self.sessions.get(request.cookies.get("session_key", ""))
                if not user_id:
                    return self._json({"code": 700012006, "msg": "authentication failed: log in first"}, 401)
                try:
                    with self._lock:
                        return self._json({"code": 0, "msg": "", **routes[path](body, user_id)})
                except BadRequest as exc:
                    return self._json({"code": ERR_PARAM, "msg": str(exc)}, 400)
                except Business as exc:
                    return self._json({"code": exc.code, "msg": exc.msg})

            return handle

        for path in routes:
            app.add_url_rule(path, path, handler(path), methods=["POST"])

        @app.errorhandler(_Crash)
        def crash(exc: _Crash) -> Response:
            return self._json({"code": 500, "msg": f"internal error: {exc}"}, 500)

        return app

    def _body(self) -> dict[str, Any] | Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            body = None
        self.requests.append((request.path, body))
        if not isinstance(body, dict):
            return self._json({"code": ERR_PARAM, "msg": "the body must be a JSON object"}, 400)
        return body

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    @staticmethod
    def _id(body: dict[str, Any], name: str) -> str:
        value = body.get(name)
        if not isinstance(value, str) or not value.isdigit():
            raise BadRequest(f"{name} must be an id as a JSON string, got {value!r}")
        return value

    @staticmethod
    def _int(body: dict[str, Any], name: str) -> int:
        value = body.get(name)
        if type(value) is not int:
            raise BadRequest(f"{name} must be an integer, got {value!r}")
        return value

    def _space(self, body: dict[str, Any], user_id: str) -> str:
        space_id = self._id(body, "space_id")
        if self.spaces.get(space_id, ("", ""))[1] != user_id:
            raise Business(ERR_PERMISSION, f"space {space_id} not found or no permission")
        return space_id

    def _plugin(self, body: dict[str, Any], user_id: str) -> Plugin:
        plugin_id = self._id(body, "plugin_id")
        plugin = self.plugins.get(plugin_id)
        if plugin is None or self.spaces[plugin.space_id][1] != user_id:
            raise Business(ERR_NOT_FOUND, f"plugin {plugin_id} not found")
        return plugin

    def _documents(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        ai_plugin, openapi = body.get("ai_plugin"), body.get("openapi")
        if not isinstance(ai_plugin, str):
            raise Business(ERR_INVALID_MANIFEST, "ai_plugin must be the manifest as a JSON string")
        if not isinstance(openapi, str):
            raise Business(ERR_INVALID_OPENAPI, "openapi must be the OpenAPI document as a YAML or JSON string")
        try:
            manifest = json.loads(ai_plugin)
        except ValueError as exc:
            raise Business(ERR_INVALID_MANIFEST, f"ai_plugin is not JSON: {exc}") from None
        try:
            doc = yaml.safe_load(openapi)
        except yaml.YAMLError as exc:
            raise Business(ERR_INVALID_OPENAPI, f"openapi does not parse: {exc}") from None
        if not isinstance(manifest, dict) or not isinstance(doc, dict):
            raise Business(ERR_INVALID_OPENAPI, "ai_plugin and openapi must hold objects")
        if "auth" not in manifest:
            raise _Crash("nil pointer dereference in manifest validator")
        problems = cozerules.manifest_problems(manifest)
        if problems:
            raise Business(ERR_INVALID_MANIFEST, "invalid manifest: " + "; ".join(problems))
        problems = cozerules.openapi_problems(doc)
        if problems:
            raise Business(ERR_INVALID_OPENAPI, "invalid openapi: " + "; ".join(problems))
        return manifest, doc

    @staticmethod
    def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for path, item in doc["paths"].items():
            for method, op in item.items():
                yield path, method.upper(), op

    # -- the API ---------------------------------------------------------------------------------

    def space_list(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        spaces = [{"id": sid, "name": name} for sid, (name, owner) in self.spaces.items() if owner == user_id]
        return {"data": {"bot_space_list": spaces}}

    def register(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        space_id = self._space(body, user_id)
        manifest, doc = self._documents(body)
        plugin = Plugin(self._new_id(), space_id, user_id, manifest, doc)
        for path, method, op in self._operations(doc):
            plugin.tools.append(Tool(self._new_id(), op["operationId"], path, method, op))
        self.plugins[plugin.plugin_id] = plugin
        return {"data": {"plugin_id": plugin.plugin_id, "openapi": body["openapi"]}}

    def update(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        plugin = self._plugin(body, user_id)
        manifest, doc = self._documents(body)
        old = {(t.path, t.method): t for t in plugin.tools}
        tools = []
        for path, method, op in self._operations(doc):
            tool = old.get((path, method))
            if tool is None:
                tool = Tool(self._new_id(), op["operationId"], path, method, op)
            elif tool.operation != op:
                tool.name, tool.operation, tool.debug_status = op["operationId"], op, 0
            tools.append(tool)
        plugin.manifest, plugin.openapi, plugin.tools = manifest, doc, tools
        return {"data": {"res": True, "edit_version": 1}}

    def get_plugin_info(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        plugin = self._plugin(body, user_id)
        meta = {"name": plugin.name, "desc": plugin.manifest["description_for_human"]}
        return {"meta_info": meta, "published": bool(plugin.versions)}

    def get_dev_plugin_list(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        space_id = self._space(body, user_id)
        if self._id(body, "dev_id") != user_id:
            raise Business(ERR_PERMISSION, "dev_id is not you")
        page, size = self._int(body, "page"), self._int(body, "size")
        if page < 1 or not 1 <= size <= 100:
            raise BadRequest("page must be at least 1 and size 1 to 100")
        name = str(body.get("name") or "")
        found = [p for p in self.plugins.values() if p.space_id == space_id and name.lower() in p.name.lower()]
        chunk = found[(page - 1) * size : page * size]
        return {"plugin_list": [{"id": p.plugin_id, "name": p.name} for p in chunk], "total": len(found)}

    def get_plugin_apis(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        plugin = self._plugin(body, user_id)
        page, size = self._int(body, "page"), self._int(body, "size")
        if page < 1 or not 1 <= size < 30:
            raise BadRequest("page must be at least 1 and size under 30")
        chunk = plugin.tools[(page - 1) * size : page * size]
        info = [
            {
                "api_id": t.api_id,
                "name": t.name,
                "path": t.path,
                "method": t.method,
                "debug_status": t.debug_status,
                "disabled": t.disabled,
            }
            for t in chunk
        ]
        return {"api_info": info, "total": len(plugin.tools)}

    def get_plugin_next_version(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        plugin = self._plugin(body, user_id)
        self._space(body, user_id)
        if not plugin.versions:
            return {"next_version_name": "v0.0.1"}
        major, minor, patch = VERSION.match(plugin.versions[-1]).groups()  # type: ignore[union-attr]
        return {"next_version_name": f"v{major}.{minor}.{int(patch) + 1}"}

    def publish_plugin(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        plugin = self._plugin(body, user_id)
        version = body.get("version_name")
        match = VERSION.match(version) if isinstance(version, str) else None
        if not match:
            raise Business(ERR_VERSION, f"version_name must be vX.Y.Z, got {version!r}")
        pending = [t.name for t in plugin.tools if not t.disabled and t.debug_status != 1]
        if pending:
            raise Business(ERR_NOT_DEBUGGED, "tools have not passed debug: " + ", ".join(pending))
        if plugin.versions:
            last = tuple(int(x) for x in VERSION.match(plugin.versions[-1]).groups())  # type: ignore[union-attr]
            if tuple(int(x) for x in match.groups()) <= last:
                raise Business(ERR_VERSION, f"version {version} must be higher than {plugin.versions[-1]}")
        plugin.versions.append(version)
        return {"version_ts": str(len(plugin.versions))}

    def debug_api(self, body: dict[str, Any], user_id: str) -> dict[str, Any]:
        plugin = self._plugin(body, user_id)
        api_id = self._id(body, "api_id")
        if self._int(body, "operation") != 1:
            raise BadRequest("operation must be 1 (debug)")
        tool = next((t for t in plugin.tools if t.api_id == api_id), None)
        if tool is None:
            raise Business(ERR_NOT_FOUND, f"api {api_id} not found")
        parameters = body.get("parameters")
        if not isinstance(parameters, str):
            raise BadRequest("parameters must be the input object as a JSON string")
        try:
            inputs = json.loads(parameters)
        except ValueError:
            raise BadRequest("parameters is not JSON") from None
        if not isinstance(inputs, dict):
            raise BadRequest("parameters must hold a JSON object")
        ok, reason, resp, raw_resp, raw_req = self._invoke(plugin, tool, inputs, user_id)
        if ok:
            tool.debug_status = 1
        return {"success": ok, "resp": resp, "reason": reason, "raw_resp": raw_resp, "raw_req": raw_req}

    # -- calling the service like Coze -----------------------------------------------------------

    def _invoke(self, plugin: Plugin, tool: Tool, inputs: dict[str, Any], user_id: str) -> tuple:
        op = tool.operation
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        try:
            payload = _build_body(schema, inputs)
        except ValueError as exc:
            return False, str(exc), "", "", ""
        headers = {"Content-Type": "application/json", "X-Tt-Logid": secrets.token_hex(8)}
        headers["X-Aiplugin-Connector-Identifier"] = user_id
        for param in plugin.manifest.get("common_params", {}).get("header") or []:
            headers[param["name"]] = param["value"]
        auth = plugin.manifest["auth"]
        if auth.get("type") == "service_http" and auth.get("location") == "Header":
            headers[auth["key"]] = auth.get("service_token", "")
        url = plugin.openapi["servers"][0]["url"] + tool.path
        raw_req = json.dumps({"url": url, "method": tool.method, "header": headers, "body": payload})
        self.service_calls.append({"tool": tool.name, "url": url, "headers": headers, "body": payload})
        try:
            answer = requests.request(tool.method, url, json=payload, headers=headers, timeout=60)
        except requests.RequestException as exc:
            return False, f"http request failed: {type(exc).__name__}", "", "", raw_req
        raw_resp = answer.text
        if answer.status_code != 200:
            return False, f"http request failed, status={answer.status_code}, resp={raw_resp}", "", raw_resp, raw_req
        try:
            data = json.loads(raw_resp) if raw_resp.strip() else {}
        except ValueError:
            return False, "the response is not JSON", "", raw_resp, raw_req
        if not isinstance(data, dict):
            return False, "the response is not a JSON object", "", raw_resp, raw_req
        out_schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        problems = _strict_problems(out_schema, data, "")
        if problems:
            return False, "response does not match its schema: " + "; ".join(problems), "", raw_resp, raw_req
        return True, "", json.dumps(_trim(out_schema, data)), raw_resp, raw_req


def _build_body(schema: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The flat inputs routed into the declared body: declared keys only, null is missing, defaults applied."""
    body: dict[str, Any] = {}
    for name, sub in (schema.get("properties") or {}).items():
        value = inputs.get(name)
        if value is None and "default" in sub:
            value = sub["default"]
        if value is None:
            if name in (schema.get("required") or []):
                raise ValueError(f"missing required parameter {name}")
            continue
        body[name] = _shape(sub, value)
    return body


def _shape(schema: dict[str, Any], value: Any) -> Any:
    if schema.get("type") == "object" and isinstance(value, dict):
        return _build_body(schema, value)  # objects keep only their declared properties
    if schema.get("type") == "array" and isinstance(value, list):
        return [_shape(schema.get("items") or {}, v) for v in value]
    return value


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def _strict_problems(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    """The test console's check: no null in a declared field, every value of its declared type."""
    if value is None:
        return [f"{where or 'response'} is null"]
    if not _TYPES.get(schema.get("type", ""), lambda v: True)(value):
        return [f"{where or 'response'} is {value!r}, not {schema.get('type')}"]
    out = []
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                out += _strict_problems(sub, value[name], f"{where}.{name}" if where else name)
    if isinstance(value, list):
        for i, item in enumerate(value):
            out += _strict_problems(schema.get("items") or {}, item, f"{where}[{i}]")
    return out


def _trim(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: _trim(props[k], v) for k, v in value.items() if k in props}
    if isinstance(value, list):
        return [_trim(schema.get("items") or {}, v) for v in value]
    return value


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def standin(email: str, password: str) -> Iterator[CozeStandIn]:
    """A fresh stand-in served on a free loopback port; its address is `.url`."""
    coze = CozeStandIn(email, password)
    with serve(coze.app) as url:
        coze.url = url
        yield coze


def faulty_front(target: str, fail_path: str, status: int = 500) -> Flask:
    """A reverse proxy to `target` that answers `status` for `fail_path`: a service broken for one tool."""
    app = Flask("faulty_front")

    @app.route("/<path:path>", methods=["GET", "POST"])
    def forward(path: str) -> Response:
        if "/" + path == fail_path:
            body = json.dumps({"error": "injected failure", "error_code": "INTERNAL"})
            return Response(body, status=status, mimetype="application/json")
        keep = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(request.method, f"{target}/{path}", data=request.get_data(), headers=keep, timeout=60)
        return Response(answer.content, status=answer.status_code, mimetype="application/json")

    return app


ZERO_VALUES = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": []}


class WorkflowNode:
    """A Coze workflow's plugin node for one tool of the imported document (docs/coze.md, What Coze sends).

    Top-level inputs the author left unset arrive as zero values ("", 0, false, []); inside an
    object (options) an unset field is null, so the declared default applies; a field bound to a
    variable arrives with the variable's value, "" and 0 included. The answer must pass the test
    console's strict check, and reaches the workflow trimmed to the declared outputs.
    `post(path, body)` sends one request to the service: (HTTP status, JSON answer).
    """

    def __init__(self, document: dict[str, Any], tool_name: str, post: Callable[[str, dict], tuple[int, Any]]):
        self.path, item = next(
            (p, i["post"]) for p, i in document["paths"].items() if i["post"]["operationId"] == tool_name
        )
        self.request = item["requestBody"]["content"]["application/json"]["schema"]
        self.response = item["responses"]["200"]["content"]["application/json"]["schema"]
        self.post = post

    def __call__(self, **bound: Any) -> dict[str, Any]:
        inputs = {
            name: bound[name] if name in bound else {} if sub["type"] == "object" else ZERO_VALUES[sub["type"]]
            for name, sub in self.request["properties"].items()
        }
        status, data = self.post(self.path, _build_body(self.request, inputs))
        assert status == 200, (status, data)
        problems = _strict_problems(self.response, data, "")
        assert not problems, problems
        return _trim(self.response, data)


def main() -> None:
    """Serve one stand-in on COZE_STANDIN_PORT (8888) until interrupted, printing what to run against it."""
    email = os.environ.get("COZE_EMAIL") or "operator@example.com"
    password = os.environ.get("COZE_PASSWORD") or "standin-password"
    port = int(os.environ.get("COZE_STANDIN_PORT") or "8888")
    coze = CozeStandIn(email, password)
    server = make_server("127.0.0.1", port, coze.app, threaded=True)
    coze.url = f"http://127.0.0.1:{server.server_port}"
    print(f"Coze stand-in on {coze.url}: log in as COZE_EMAIL={email} COZE_PASSWORD={password}", flush=True)
    print(
        f'  make register ARGS="--coze-url {coze.url} --base-url http://127.0.0.1:8080 --debug --publish"', flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
