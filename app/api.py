"""The HTTP edge: one route per tool, the token that picks the tenant, JSON answers of the one shape. Flask only.

Coze treats any status but 200 as a failed node, so everything a workflow can branch on is a 200
with `error_code`; 401, 413, 503 and 500 are kept for a node that really should fail, and 400 for a
body that cannot be read at all. The token is checked from the headers before the body is read, and
the body is read here, in pieces, under MAX_BODY_BYTES and BODY_READ_TIMEOUT (chunked or not).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app import errors, jsontext, responses, schemas, spec, validation
from app.core import Limits, Sessions
from app.metrics import Metrics
from app.storage.database import Database
from app.tenants import Tenant, Tenants
from app.waiting import LockWaiting

log = logging.getLogger("app.api")
bp = Blueprint("api", __name__)
BODY_PIECE = 64 * 1024


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _error(exc: errors.ServiceError, tool: spec.Tool = spec.MANAGE_TOOL, session_id: str = "") -> Response:
    lang = getattr(g, "lang", current_app.config["ERROR_LANG"])
    out = responses.error(exc, current_app.extensions["database"].clock(), lang, session_id)
    return _json(responses.project(out, tool, current_app.config["CONTEXT_SCHEMA"]), exc.http_status)


def _tenant() -> Tenant | None:
    """The tenant the request's token opens (from the headers alone: the body is not read yet)."""
    tenants: Tenants = current_app.config["TENANTS"]
    return tenants.pick(request.headers.get(current_app.config["AUTH_HEADER"], ""))


def _handle(tool: spec.Tool) -> Response:
    started = time.perf_counter()
    default_lang = g.lang = current_app.config["ERROR_LANG"]
    body: Any = None
    call: validation.Call | None = None
    code, status, from_storage = "", 200, False
    tenant = _tenant()
    try:
        if tenant is None:  # from the headers alone: a client without a tenant's token is not waited for
            g.lang = _header_lang(default_lang)
            raise errors.Unauthorized()
        raw = _read_body()
        try:
            body = jsontext.loads(raw, depth=jsontext.MAX_DEPTH + 2) if raw.strip() else {}
        except jsontext.JSONTextError as exc:
            g.lang = validation.lang_hint(raw, default_lang)
            raise errors.InvalidArgument(
                "", "json_body" if exc.reason == "json_text" else exc.reason, exc.expected
            ) from None
        g.lang = validation.lang_of(body, default_lang)
        call = validation.parse(
            tool.name,
            body,
            request.headers.get("X-Aiplugin-Connector-Identifier", ""),
            current_app.config["OPTION_DEFAULTS"][tenant.name],
            typed=current_app.config["CONTEXT_SCHEMA"] is not None,
            maxima=current_app.config["OPTION_MAXIMA"][tenant.name],
        )
        service: Sessions = current_app.extensions["sessions"](tenant.name)
        outcome = service.execute(call)
        current_app.extensions["metrics"].outcome(
            call.operation, tenant.name, replayed=outcome.replayed, resumed=outcome.resumed
        )
        return _json(responses.project(responses.render(outcome), tool, current_app.config["CONTEXT_SCHEMA"]))
    except RequestEntityTooLarge:
        code, status = "PAYLOAD_TOO_LARGE", 413
        return _error(errors.PayloadTooLarge(limit=current_app.config["MAX_CONTENT_LENGTH"]), tool)
    except errors.ServiceError as exc:
        code, status = exc.code, exc.http_status
        from_storage = isinstance(exc, errors.StorageUnavailable | errors.Internal)  # only the storage raises these
        session_id = body.get("session_id", "") if isinstance(body, dict) else ""
        return _error(exc, tool, session_id if isinstance(session_id, str) else "")
    except Exception:
        code, status = "INTERNAL", 500
        log.exception("unexpected error in %s", tool.name)
        return _error(errors.Internal(), tool)
    finally:
        seconds = time.perf_counter() - started
        tenant_name = tenant.name if tenant else ""
        current_app.extensions["metrics"].request(tool.name, tenant_name, code, seconds, from_storage=from_storage)
        current_app.extensions["request_log"].write(
            tenant=tenant_name,
            tool=tool.name,
            operation=call.operation if call else _named_operation(body),
            code=code,
            ms=seconds * 1000,
            logid=request.headers.get("X-Tt-Logid", ""),
            user_id=call.user_id if call else "",
            status=status,
        )


def _read_body() -> bytes:
    """The request body, within MAX_BODY_BYTES (413) and BODY_READ_TIMEOUT; one that cannot be read
    (a malformed chunk, a client gone mid-body, a stall) is the client's error: 400, never INTERNAL."""
    limit: int = current_app.config["MAX_CONTENT_LENGTH"]
    deadline = time.monotonic() + current_app.config["BODY_READ_TIMEOUT"]
    if (request.content_length or 0) > limit:
        raise errors.PayloadTooLarge(limit=limit)
    # A server that ends the stream itself (gunicorn: chunked bodies too) is read directly: werkzeug's
    # wrapper would stop silently at the limit, and a cut body would be answered as if it were whole.
    environ = request.environ
    parts, size = [], 0
    try:
        stream = environ["wsgi.input"] if environ.get("wsgi.input_terminated") else request.stream
        while piece := stream.read(BODY_PIECE):
            size += len(piece)
            if size > limit:
                raise errors.PayloadTooLarge(limit=limit)
            if time.monotonic() > deadline:
                raise TimeoutError("the body took longer than BODY_READ_TIMEOUT")
            parts.append(piece)
        if request.content_length is not None and size < request.content_length:
            raise EOFError("the client went before its whole body")
    except errors.ServiceError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the server's reader raises (gunicorn: InvalidChunkSize...)
        log.info("unreadable request body (%s): answered 400", type(exc).__name__)
        raise errors.UnreadableBody() from None
    return b"".join(parts)


def _header_lang(default: str) -> str:
    """The language of an answer given without reading the body: Accept-Language's if it starts with
    en or zh, else `default` (ERROR_LANG)."""
    asked = request.headers.get("Accept-Language", "").strip().lower()[:2]
    return asked if asked in ("en", "zh") else default


def _named_operation(body: Any) -> str:
    """The operation a request that failed validation named, if it is one (never raw input in a log)."""
    op = body.get("operation") if isinstance(body, dict) else None
    return op if isinstance(op, str) and op in spec.OPERATIONS else ""


def _route(tool: spec.Tool) -> None:
    bp.add_url_rule(tool.path, tool.name, lambda: _handle(tool), methods=["POST"])


for _tool in spec.TOOLS:
    _route(_tool)


@bp.get("/healthz")
def healthz() -> Response:
    return _json({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    try:
        current_app.extensions["database"].ping()
    except errors.ServiceError as exc:
        return _json({"status": "unavailable", "error_code": exc.code}, 503)
    return _json({"status": "ready"})


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text of every worker's counts; with METRICS_TOKEN, only for `Bearer <METRICS_TOKEN>`."""
    m: Metrics = current_app.extensions["metrics"]
    if not m.authorized(request.headers.get("Authorization", "")):
        response = _error(errors.Unauthorized(metrics=True))
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    text, content_type = m.exposition()
    return Response(text, content_type=content_type)


@bp.get("/")
def index() -> Response:
    """What answers here, for whoever opens the address in a browser or curls it."""
    return _json({"name": spec.PROJECT, "title": spec.TITLE, "version": spec.VERSION, "openapi": "/openapi.json"})


@bp.get("/openapi.json")
def openapi() -> Response:
    base = current_app.config["PUBLIC_BASE_URL"] or _request_base_url()
    return _json(schemas.openapi_document(base, current_app.config["CONTEXT_SCHEMA"]))


_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def _request_base_url() -> str:
    """The scheme, host and port this request reached, as the caller named them (or the proxy, if trusted)."""
    scheme, host = request.scheme, request.host
    if current_app.config["TRUST_PROXY_HEADERS"]:
        scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() or scheme
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip() or host
    if scheme not in ("http", "https"):
        scheme = request.scheme
    if not _HOST.match(host):  # a Host header is the caller's to write: never echo anything but a host
        host = request.host if _HOST.match(request.host) else "127.0.0.1"
    return f"{scheme}://{host}"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        return _error(errors.PayloadTooLarge(limit=app.config["MAX_CONTENT_LENGTH"]))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """404, 405 (naming the method the path takes), any other refusal: the JSON of the output shape.
        The body is not read: a path that is no tool's does not wait for one."""
        g.lang = _header_lang(app.config["ERROR_LANG"])
        allowed = [m for m in getattr(exc, "valid_methods", None) or () if m not in ("HEAD", "OPTIONS")]
        reason = {404: "no_such_tool", 405: "method"}.get(exc.code or 400, "body")
        invalid = errors.InvalidArgument(request.path if reason != "body" else "", reason, ", ".join(allowed))
        out = responses.error(invalid, current_app.extensions["database"].clock(), g.lang)
        answer = _json(responses.project(out, spec.MANAGE_TOOL, current_app.config["CONTEXT_SCHEMA"]), exc.code or 400)
        if allowed:
            answer.headers["Allow"] = ", ".join(allowed)
        return answer

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error(errors.Internal())


def make_service(
    database: Database,
    limits: dict[str, Limits],
    max_sessions: dict[str, int],
    waiting: LockWaiting,
    events: Callable[[str, str], None],
) -> Callable[[str], Sessions]:
    """The core of a tenant on this process's store (created on first use, after gunicorn forks)."""

    def service(tenant: str) -> Sessions:
        store = database.store(max_sessions[tenant])
        return Sessions(store, limits[tenant], waiting, lambda event: events(event, tenant), tenant=tenant)

    return service
