"""The service's one exception family: each class carries its stable code and HTTP status. Pure."""

from __future__ import annotations

from typing import Any

from app.spec import DOCUMENT_TOO_LARGE, ERRORS, METRICS_UNAUTHORIZED, REASONS, UNKNOWN_OUTCOME


class ServiceError(Exception):
    """Base of every error a caller can see; `session` optionally carries the session's state."""

    code = "INTERNAL"

    def __init__(self, session: Any = None, **params: Any) -> None:
        super().__init__(self.code)
        self.session = session
        self.params = params

    @property
    def http_status(self) -> int:
        return ERRORS[self.code].http_status

    def message(self, lang: str = "zh") -> str:
        e = ERRORS[self.code]
        return (e.en if lang == "en" else e.zh).format(**self.params)


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, reason: str, expected: Any = "") -> None:
        super().__init__()
        self.field, self.reason, self.expected = field, reason, expected

    def message(self, lang: str = "zh") -> str:
        zh, en = REASONS[self.reason]
        template = en if lang == "en" else zh
        reason = template.format(expected=self.expected)
        e = ERRORS[self.code]
        return (e.en if lang == "en" else e.zh).format(field=self.field or "body", reason=reason)


class UnreadableBody(InvalidArgument):
    """The request body could not be read: a malformed transfer encoding, a client gone mid-body, or
    one too slow (BODY_READ_TIMEOUT). Not a node's business outcome: HTTP 400, not 200."""

    http_status = 400

    def __init__(self) -> None:
        super().__init__("body", "unreadable")


class OutOfRange(ServiceError):
    """A value the stored state refuses (compact past the last message), named in the domain (`value`);
    validation.field_error names the caller's field for it."""

    code = "INVALID_ARGUMENT"

    def __init__(self, value: str, reason: str, expected: Any = "") -> None:
        super().__init__()
        self.value, self.reason, self.expected = value, reason, expected


class SessionNotFound(ServiceError):
    code = "SESSION_NOT_FOUND"


class SessionExpired(ServiceError):
    code = "SESSION_EXPIRED"


class SessionClosed(ServiceError):
    code = "SESSION_CLOSED"


class SessionLimitExceeded(ServiceError):
    code = "SESSION_LIMIT_EXCEEDED"


class ContextTooLarge(ServiceError):
    code = "CONTEXT_TOO_LARGE"


class HistoryLimit(ServiceError):
    """The history is full (`limit` messages), or with `document`, MongoDB refused a document past 16 MiB."""

    code = "HISTORY_LIMIT"

    def message(self, lang: str = "zh") -> str:
        if self.params.get("document"):
            zh, en = DOCUMENT_TOO_LARGE
            return en if lang == "en" else zh
        return super().message(lang)


class VersionConflict(ServiceError):
    code = "VERSION_CONFLICT"


class SessionLocked(ServiceError):
    code = "SESSION_LOCKED"


class LockNotHeld(ServiceError):
    code = "LOCK_NOT_HELD"


class Unauthorized(ServiceError):
    """A wrong or missing service token; with `metrics`, a wrong or missing METRICS_TOKEN."""

    code = "UNAUTHORIZED"

    def message(self, lang: str = "zh") -> str:
        if self.params.get("metrics"):
            zh, en = METRICS_UNAUTHORIZED
            return en if lang == "en" else zh
        return super().message(lang)


class PayloadTooLarge(ServiceError):
    code = "PAYLOAD_TOO_LARGE"


class StorageUnavailable(ServiceError):
    """The database did not answer; with `unknown_outcome`, a write was sent and may have been applied."""

    code = "STORAGE_UNAVAILABLE"

    def message(self, lang: str = "zh") -> str:
        if self.params.get("unknown_outcome"):
            zh, en = UNKNOWN_OUTCOME
            return en if lang == "en" else zh
        return super().message(lang)


class Internal(ServiceError):
    code = "INTERNAL"
