"""Each operation's options as a typed, frozen value: what validation.parse hands the core. Pure.

The fields are the spec's option names for the operation (a test holds them equal), already checked
against the spec's bounds and the server's; a cursor arrives parsed. An option the caller left
unset is its spec (or server) default, or None where there is none.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Options:
    lang: str = "zh"


@dataclass(frozen=True, kw_only=True)
class CreateOptions(Options):
    timeout: int  # seconds
    max_history: int
    auto_clean: bool
    persist: bool


@dataclass(frozen=True, kw_only=True)
class GetOptions(Options):
    resume: bool


@dataclass(frozen=True, kw_only=True)
class UpdateOptions(Options):
    persist: bool
    merge: bool
    expected_version: int | None
    resume: bool


@dataclass(frozen=True, kw_only=True)
class AppendOptions(Options):
    persist: bool
    expected_version: int | None
    on_overflow: str  # "drop" or "reject"
    resume: bool


@dataclass(frozen=True, kw_only=True)
class HistoryOptions(Options):
    limit: int
    cursor: int | None  # the page ends before this seq
    format: str  # "messages" or "transcript"
    roles: frozenset[str]  # empty: every role
    max_tokens: int | None
    resume: bool


@dataclass(frozen=True, kw_only=True)
class ClearHistoryOptions(Options):
    persist: bool
    expected_version: int | None


@dataclass(frozen=True, kw_only=True)
class TouchOptions(Options):
    timeout: int | None  # seconds; None keeps the session's
    persist: bool


@dataclass(frozen=True, kw_only=True)
class ListOptions(Options):
    limit: int
    cursor: tuple[int, str] | None  # (created, session id) the previous page ended at
    status: str


@dataclass(frozen=True, kw_only=True)
class CloseOptions(Options):
    persist: bool
    expected_version: int | None


@dataclass(frozen=True, kw_only=True)
class DeleteOptions(Options):
    persist: bool


@dataclass(frozen=True, kw_only=True)
class LockOptions(Options):
    persist: bool
    lease: int  # seconds
    wait: int  # seconds


@dataclass(frozen=True, kw_only=True)
class UnlockOptions(Options):
    persist: bool


@dataclass(frozen=True, kw_only=True)
class CompactOptions(Options):
    persist: bool
    expected_version: int | None
    upto_seq: int


BY_OPERATION: dict[str, type[Options]] = {
    "create": CreateOptions,
    "get": GetOptions,
    "update": UpdateOptions,
    "append_messages": AppendOptions,
    "history": HistoryOptions,
    "clear_history": ClearHistoryOptions,
    "touch": TouchOptions,
    "list": ListOptions,
    "close": CloseOptions,
    "delete": DeleteOptions,
    "lock": LockOptions,
    "unlock": UnlockOptions,
    "compact": CompactOptions,
}
