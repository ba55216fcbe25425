"""Configuration: the only module that reads the environment. Bad values fail at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from app import spec, tenants
from app.context_schema import ContextSchema, ContextSchemaError

MAX_CHUNK = 64  # messages per archive chunk at most: 64 of 64 KiB make a 4 MiB chunk
# A session document holds the context, its patch log (64 KiB), at most 4.4 MiB of inline messages and
# one append (at most a request body): this keeps the sum 1.5 MiB below MongoDB's 16 MiB.
DOCUMENT_BUDGET = 10 * 1024 * 1024


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{name} must be true or false (1 or 0), got {raw!r}")
    return raw in ("true", "1", "yes")


def _http_url(name: str, value: str) -> None:
    scheme, _, rest = value.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with safe defaults (see docs/operating.md, Configuration)."""

    env: str = "development"
    mongodb_uri: str = ""
    mongodb_db: str = "coze_sessions"
    mongodb_collection: str = "sessions"
    # waiting for a primary must outlast an election (~12 s); a hung command is cut by the socket timeout
    mongodb_server_selection_timeout_ms: int = 15_000
    mongodb_connect_timeout_ms: int = 5_000
    mongodb_socket_timeout_ms: int = 15_000
    mongodb_wtimeout_ms: int = 5_000
    service_tokens: tuple[str, ...] = ()
    auth_header: str = "Authorization"
    max_sessions: int = spec.MAX_SESSIONS
    session_timeout: int = spec.TIMEOUT
    max_timeout: int = spec.MAX_TIMEOUT
    max_history: int = spec.MAX_HISTORY
    max_context_bytes: int = spec.MAX_CONTEXT_BYTES
    max_body_bytes: int = 8 * 1024 * 1024
    body_read_timeout: int = 10  # seconds a request body may take to arrive (each wait, and the whole read)
    history_inline: int = 50
    lock_waiters: int = 4  # requests of one worker that may wait for a session lock at once
    purge_grace: int = 300
    expired_retention: int = 7 * 24 * 3600
    public_base_url: str = ""  # empty: GET /openapi.json names the address it was fetched from
    trust_proxy_headers: bool = False  # X-Forwarded-Proto/Host name that address (behind a proxy that sets them)
    error_lang: str = "zh"  # the language of error messages when a request does not ask (options.lang)
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object a line
    log_hash_key: str = ""  # keys the user hash in JSON logs; empty: derived from the first SERVICE_TOKEN
    metrics_token: str = ""  # bearer token GET /metrics requires; empty: open
    # gunicorn's start-up sets it (see gunicorn.conf.py): each worker writes its counts there, a scrape sums them
    metrics_dir: str = ""
    context_schema_path: str = ""  # CONTEXT_SCHEMA: a JSON Schema file declaring the context's typed fields
    tenants_path: str = ""  # TENANTS: the tenants file (YAML or JSON); empty: SERVICE_TOKEN is the one tenant
    # under gunicorn, the copy of TENANTS the master last accepted (gunicorn.conf.py): a file broken by an
    # edit is refused at reload and the workers it starts keep the last good one
    tenants_copy: str = ""
    # lifecycle events (docs/events.md): off unless WEBHOOK_URL or WEBHOOK_TARGET=coze_workflow
    webhook_target: str = "http"  # or "coze_workflow"
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_expiring_lead: int = 300  # seconds before expiry for session.expiring; 0: none
    webhook_retry_hours: int = 24
    webhook_include_context: bool = True
    webhook_poll_ms: int = 1000  # the sweeper's pause between passes (tests shorten it)
    coze_api_base: str = ""
    coze_api_token: str = ""
    coze_workflow_id: str = ""

    @property
    def events_enabled(self) -> bool:
        return bool(self.webhook_url) or self.webhook_target == "coze_workflow"

    @cached_property
    def context_schema(self) -> ContextSchema | None:
        """The operator's context schema, checked and compiled once; None without CONTEXT_SCHEMA."""
        if not self.context_schema_path:
            return None
        try:
            return ContextSchema.load(self.context_schema_path)
        except ContextSchemaError as exc:
            raise SettingsError(str(exc)) from None

    @cached_property
    def tenants(self) -> tenants.Tenants:
        """Who may call, and with which limits: the TENANTS file's tenants, `default` for SERVICE_TOKEN."""
        limits = {
            "max_sessions": self.max_sessions,
            "timeout": self.session_timeout,
            "max_timeout": self.max_timeout,
            "max_history": self.max_history,
            "max_context_bytes": self.max_context_bytes,
        }
        if not self.tenants_path:
            return tenants.single(self.service_tokens, limits)
        try:
            return tenants.load(
                self.tenants_copy or self.tenants_path,
                service_tokens=self.service_tokens,
                defaults=limits,
                max_context_bytes=DOCUMENT_BUDGET - self.max_body_bytes,
                production=self.env == "production",
            )
        except tenants.TenantsError as exc:
            raise SettingsError(f"TENANTS ({self.tenants_path}): {exc}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        if env.get("MONGODB_TIMEOUT_MS", "").strip():
            raise SettingsError(
                "MONGODB_TIMEOUT_MS is split into MONGODB_SERVER_SELECTION_TIMEOUT_MS, MONGODB_CONNECT_TIMEOUT_MS "
                "and MONGODB_SOCKET_TIMEOUT_MS (see docs/operating.md); set those instead"
            )
        app_env = env.get("APP_ENV", "development").strip() or "development"
        if app_env not in ("development", "production", "test"):
            raise SettingsError(f"APP_ENV must be development, production or test, got {app_env!r}")
        tokens = tuple(t.strip() for t in env.get("SERVICE_TOKEN", "").split(",") if t.strip())
        settings = cls(
            env=app_env,
            mongodb_uri=env.get("MONGODB_URI", "").strip(),
            mongodb_db=env.get("MONGODB_DB", "").strip() or "coze_sessions",
            mongodb_collection=env.get("MONGODB_COLLECTION", "").strip() or "sessions",
            mongodb_server_selection_timeout_ms=_int(env, "MONGODB_SERVER_SELECTION_TIMEOUT_MS", 15_000, 100),
            mongodb_connect_timeout_ms=_int(env, "MONGODB_CONNECT_TIMEOUT_MS", 5_000, 100),
            mongodb_socket_timeout_ms=_int(env, "MONGODB_SOCKET_TIMEOUT_MS", 15_000, 100),
            mongodb_wtimeout_ms=_int(env, "MONGODB_WTIMEOUT_MS", 5_000, 100),
            service_tokens=tokens,
            auth_header=env.get("AUTH_HEADER", "").strip() or "Authorization",
            max_sessions=_int(env, "MAX_SESSIONS", spec.MAX_SESSIONS),
            session_timeout=_int(env, "SESSION_TIMEOUT", spec.TIMEOUT),
            max_timeout=_int(env, "MAX_TIMEOUT", spec.MAX_TIMEOUT),
            max_history=_int(env, "MAX_HISTORY", spec.MAX_HISTORY),
            max_context_bytes=_int(env, "MAX_CONTEXT_BYTES", spec.MAX_CONTEXT_BYTES),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 8 * 1024 * 1024, 1024),
            body_read_timeout=_int(env, "BODY_READ_TIMEOUT", 10),
            history_inline=_int(env, "HISTORY_INLINE", 50),
            lock_waiters=_int(env, "LOCK_WAITERS", 4, 0),
            purge_grace=_int(env, "PURGE_GRACE", 300),
            expired_retention=_int(env, "EXPIRED_RETENTION", 7 * 24 * 3600),
            public_base_url=env.get("PUBLIC_BASE_URL", "").strip().rstrip("/"),
            trust_proxy_headers=_flag(env, "TRUST_PROXY_HEADERS"),
            error_lang=env.get("ERROR_LANG", "").strip().lower() or "zh",
            log_level=env.get("LOG_LEVEL", "").strip().upper() or "INFO",
            context_schema_path=env.get("CONTEXT_SCHEMA", "").strip(),
            tenants_path=env.get("TENANTS", "").strip(),
            tenants_copy=env.get("TENANTS_ACCEPTED", "").strip() if env.get("TENANTS", "").strip() else "",
            log_format=env.get("LOG_FORMAT", "").strip().lower() or "text",
            log_hash_key=env.get("LOG_HASH_KEY", "").strip(),
            metrics_token=env.get("METRICS_TOKEN", "").strip(),
            # prometheus_client reads this variable itself, at import: the same name keeps both in step
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR", "").strip(),
            webhook_target=env.get("WEBHOOK_TARGET", "").strip().lower() or "http",
            webhook_url=env.get("WEBHOOK_URL", "").strip(),
            webhook_secret=env.get("WEBHOOK_SECRET", "").strip(),
            webhook_expiring_lead=_int(env, "WEBHOOK_EXPIRING_LEAD", 300, 0),
            webhook_retry_hours=_int(env, "WEBHOOK_RETRY_HOURS", 24),
            webhook_include_context=_bool(env, "WEBHOOK_INCLUDE_CONTEXT", True),
            coze_api_base=env.get("COZE_API_BASE", "").strip(),
            coze_api_token=env.get("COZE_API_TOKEN", "").strip(),
            coze_workflow_id=env.get("COZE_WORKFLOW_ID", "").strip(),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that must not run."""
        _ = self.context_schema  # a schema Coze could not show stops start-up here
        _ = self.tenants  # so does a tenants file that does not parse
        if self.max_history > spec.MAX_HISTORY:
            raise SettingsError(f"MAX_HISTORY must be at most {spec.MAX_HISTORY}")
        if self.session_timeout > self.max_timeout:
            raise SettingsError("SESSION_TIMEOUT must not exceed MAX_TIMEOUT")
        if self.history_inline > MAX_CHUNK:
            raise SettingsError(f"HISTORY_INLINE must be at most {MAX_CHUNK} (an archive chunk of 64 KiB messages)")
        if self.max_context_bytes + self.max_body_bytes > DOCUMENT_BUDGET:
            raise SettingsError(
                f"MAX_CONTEXT_BYTES + MAX_BODY_BYTES must be at most {DOCUMENT_BUDGET} bytes, so that a session "
                "document stays below MongoDB's 16 MiB"
            )
        if self.mongodb_socket_timeout_ms <= self.mongodb_wtimeout_ms:
            raise SettingsError("MONGODB_SOCKET_TIMEOUT_MS must be longer than MONGODB_WTIMEOUT_MS")
        if self.error_lang not in ("zh", "en"):
            raise SettingsError(f"ERROR_LANG must be zh or en, got {self.error_lang!r}")
        if self.public_base_url and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", self.public_base_url):
            raise SettingsError(f"PUBLIC_BASE_URL must be an http(s) URL with a host, got {self.public_base_url!r}")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT must be text or json, got {self.log_format!r}")
        if self.metrics_dir and not os.path.isdir(self.metrics_dir):
            raise SettingsError(f"PROMETHEUS_MULTIPROC_DIR must be an existing directory, got {self.metrics_dir!r}")
        self._check_events()
        if self.env == "production":
            if not self.service_tokens and not self.tenants_path:
                raise SettingsError("APP_ENV=production needs SERVICE_TOKEN or TENANTS")
            if not self.mongodb_uri:
                raise SettingsError("APP_ENV=production needs MONGODB_URI")
        if any(len(t) < 16 for t in self.service_tokens) and self.env == "production":
            raise SettingsError("SERVICE_TOKEN values must be at least 16 characters in production")
        if self.env == "production" and 0 < len(self.metrics_token) < 16:
            raise SettingsError("METRICS_TOKEN must be at least 16 characters in production")
        if self.env == "production" and 0 < len(self.log_hash_key) < 16:
            raise SettingsError("LOG_HASH_KEY must be at least 16 characters in production")

    def _check_events(self) -> None:
        """Lifecycle events: a sender that cannot work is refused here, not at the first event."""
        if self.webhook_target not in ("http", "coze_workflow"):
            raise SettingsError(f"WEBHOOK_TARGET must be http or coze_workflow, got {self.webhook_target!r}")
        if self.webhook_target == "coze_workflow":
            for name, value in (
                ("COZE_API_BASE", self.coze_api_base),
                ("COZE_API_TOKEN", self.coze_api_token),
                ("COZE_WORKFLOW_ID", self.coze_workflow_id),
            ):
                if not value:
                    raise SettingsError(f"WEBHOOK_TARGET=coze_workflow needs {name}")
            _http_url("COZE_API_BASE", self.coze_api_base)
        elif self.webhook_url:
            _http_url("WEBHOOK_URL", self.webhook_url)
            if not self.webhook_secret:
                raise SettingsError("WEBHOOK_URL needs WEBHOOK_SECRET (the key events are signed with)")
        if self.events_enabled and self.webhook_expiring_lead > self.max_timeout:
            raise SettingsError(
                f"WEBHOOK_EXPIRING_LEAD ({self.webhook_expiring_lead} s) must not exceed MAX_TIMEOUT "
                f"({self.max_timeout} s): no session would live long enough to be warned"
            )
        if self.env == "production" and 0 < len(self.webhook_secret) < 16:
            raise SettingsError("WEBHOOK_SECRET must be at least 16 characters in production")
        keyless = self.log_format == "json" and not self.log_hash_key and not self.tenants.any_clear_token
        if self.env == "production" and keyless:
            raise SettingsError(
                "LOG_FORMAT=json needs LOG_HASH_KEY when every token is a sha256: hash in TENANTS "
                "(the user hash in the log must be keyed by a secret)"
            )
