"""Logging: the format of every line, and the one line per request. Pure: the logging module only.

Text (the default) keeps the line operators grep today. LOG_FORMAT=json writes one JSON object a
line; a request's names its tenant and its user by a keyed hash (HMAC-SHA256 of the stored user key,
the user id within its tenant, 16 hex digits), so an operator can follow one user's requests without
the log holding who they are. No raw user id,
session id, context or message content is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import orjson

from app.responses import iso
from app.settings import Settings
from app.tenants import user_key

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
HASH_HEX = 16  # 64 bits: enough to tell a team's users apart, too few to be worth storing as an id
# The request lines keep the name they have always been logged under (the README's examples, and
# operators' filters, use it): they are the HTTP edge's lines, written here.
REQUEST_LOGGER = "app.api"
request_log = logging.getLogger(REQUEST_LOGGER)


def hash_key(settings: Settings) -> bytes:
    """LOG_HASH_KEY, else a key derived from the first SERVICE_TOKEN (secret, like the key must be), or
    with only TENANTS, from each tenant's first token."""
    if settings.log_hash_key:
        return settings.log_hash_key.encode()
    seed = settings.service_tokens[0].encode() if settings.service_tokens else settings.tenants.log_seed()
    return hashlib.sha256(b"coze-session-node log hash key\0" + seed).digest()


def user_hash(key: bytes, user_id: str) -> str:
    """The keyed hash that stands for a user id in JSON logs ("" for no user)."""
    if not user_id:
        return ""
    return hmac.new(key, user_id.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:HASH_HEX]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, then a request's fields or the message."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": iso(int(record.created * 1000)), "level": record.levelname, "logger": record.name}
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(settings: Settings) -> None:
    """The root handler's level and format (as logging.basicConfig: a no-op if one is set already)."""
    if settings.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=settings.log_level, handlers=[handler])
    else:
        logging.basicConfig(level=settings.log_level, format=TEXT_FORMAT)


class RequestLog:
    """Writes the line of one request, in the configured format."""

    def __init__(self, settings: Settings) -> None:
        self.json = settings.log_format == "json"
        self.key = hash_key(settings)

    def write(
        self, *, tenant: str, tool: str, operation: str, code: str, ms: float, logid: str, user_id: str, status: int
    ) -> None:
        if not self.json:
            code, logid, tenant = code or "OK", logid or "-", tenant or "-"
            request_log.info("%s %s %s %.1fms logid=%s tenant=%s", tool, operation, code, ms, logid, tenant)
            return
        fields = {
            "logid": logid,
            "tenant": tenant,
            "tool": tool,
            "operation": operation,
            "error_code": code or "OK",
            "status": status,
            "ms": round(ms, 1),
            "user": user_hash(self.key, user_key(tenant, user_id) if user_id else ""),
        }
        request_log.info("request", extra={"request": fields})
