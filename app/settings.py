"""Configuration: the only module that reads the environment. Bad values fail at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from app import spec


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


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with safe defaults (see the README's configuration table)."""

    env: str = "development"
    mongodb_uri: str = ""
    mongodb_db: str = "coze_sessions"
    mongodb_collection: str = "sessions"
    mongodb_timeout_ms: int = 5000
    service_tokens: tuple[str, ...] = ()
    auth_header: str = "Authorization"
    max_sessions: int = spec.MAX_SESSIONS
    session_timeout: int = spec.TIMEOUT
    max_timeout: int = spec.MAX_TIMEOUT
    max_history: int = spec.MAX_HISTORY
    max_context_bytes: int = spec.MAX_CONTEXT_BYTES
    max_body_bytes: int = 8 * 1024 * 1024
    history_inline: int = 50
    purge_grace: int = 300
    expired_retention: int = 7 * 24 * 3600
    public_base_url: str = "http://127.0.0.1:8080"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        app_env = env.get("APP_ENV", "development").strip() or "development"
        if app_env not in ("development", "production", "test"):
            raise SettingsError(f"APP_ENV must be development, production or test, got {app_env!r}")
        tokens = tuple(t.strip() for t in env.get("SERVICE_TOKEN", "").split(",") if t.strip())
        settings = cls(
            env=app_env,
            mongodb_uri=env.get("MONGODB_URI", "").strip(),
            mongodb_db=env.get("MONGODB_DB", "").strip() or "coze_sessions",
            mongodb_collection=env.get("MONGODB_COLLECTION", "").strip() or "sessions",
            mongodb_timeout_ms=_int(env, "MONGODB_TIMEOUT_MS", 5000, 100),
            service_tokens=tokens,
            auth_header=env.get("AUTH_HEADER", "").strip() or "Authorization",
            max_sessions=_int(env, "MAX_SESSIONS", spec.MAX_SESSIONS),
            session_timeout=_int(env, "SESSION_TIMEOUT", spec.TIMEOUT),
            max_timeout=_int(env, "MAX_TIMEOUT", spec.MAX_TIMEOUT),
            max_history=_int(env, "MAX_HISTORY", spec.MAX_HISTORY),
            max_context_bytes=_int(env, "MAX_CONTEXT_BYTES", spec.MAX_CONTEXT_BYTES),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 8 * 1024 * 1024, 1024),
            history_inline=_int(env, "HISTORY_INLINE", 50),
            purge_grace=_int(env, "PURGE_GRACE", 300),
            expired_retention=_int(env, "EXPIRED_RETENTION", 7 * 24 * 3600),
            public_base_url=env.get("PUBLIC_BASE_URL", "").strip() or "http://127.0.0.1:8080",
            log_level=env.get("LOG_LEVEL", "").strip().upper() or "INFO",
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that must not run."""
        if self.max_history > spec.MAX_HISTORY:
            raise SettingsError(f"MAX_HISTORY must be at most {spec.MAX_HISTORY}")
        if self.session_timeout > self.max_timeout:
            raise SettingsError("SESSION_TIMEOUT must not exceed MAX_TIMEOUT")
        if self.env == "production":
            if not self.service_tokens:
                raise SettingsError("APP_ENV=production needs SERVICE_TOKEN")
            if not self.mongodb_uri:
                raise SettingsError("APP_ENV=production needs MONGODB_URI")
        if any(len(t) < 16 for t in self.service_tokens) and self.env == "production":
            raise SettingsError("SERVICE_TOKEN values must be at least 16 characters in production")
