"""Tenants: the TENANTS file, which token opens which tenant, the stored user key. Pure (reads the file only).

A tenant's users are stored under the key "<tenant>\\x1f<user_id>" (ASCII unit separator): user ids
cannot hold control characters (spec.USER_ID_PATTERN) and tenant names are `a-z 0-9 _ -`, so such a key
never equals a plain user id nor another tenant's key. The tenant `default` (SERVICE_TOKEN) keeps the
plain user id: a single-token deployment's data is read as it always was. Everything the storage keys
by user (session ids, request ids, locks, slots, exports, erasure) is therefore per tenant, and every
command is still targeted by that one key (the shard key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

from app import spec

DEFAULT = "default"  # SERVICE_TOKEN's tenant: plain user ids
SEPARATOR = "\x1f"
NAME = re.compile(r"^[a-z0-9_-]{1,32}\Z")
HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})\Z")
LIMITS = ("max_sessions", "timeout", "max_timeout", "max_history", "max_context_bytes")
KEYS = ("name", "tokens", *LIMITS)
MIN_PRODUCTION_TOKEN = 16


class TenantsError(ValueError):
    """The TENANTS file cannot be used; the message says where and why."""


def user_key(tenant: str, user_id: str) -> str:
    """The stored user key of `user_id` in `tenant` (the plain user id in the default tenant)."""
    return user_id if tenant == DEFAULT else f"{tenant}{SEPARATOR}{user_id}"


def split_user_key(key: str) -> tuple[str, str]:
    """(tenant, user_id) of a stored user key: the one way back from what `user_key` made."""
    tenant, sep, user_id = key.partition(SEPARATOR)
    return (tenant, user_id) if sep else (DEFAULT, key)


def key_range(tenant: str) -> dict | None:
    """A filter on the stored user key that holds exactly a named tenant's users (an index range);
    None for the default tenant, whose plain user ids no range separates from the others."""
    if tenant == DEFAULT:
        return None
    return {"$gte": f"{tenant}{SEPARATOR}", "$lt": f"{tenant}{chr(ord(SEPARATOR) + 1)}"}


@dataclass(frozen=True)
class Tenant:
    """One tenant: its name, its tokens ((hashed, bytes): the token itself or its SHA-256) and its limits."""

    name: str
    tokens: tuple[tuple[bool, bytes], ...]
    max_sessions: int
    timeout: int
    max_timeout: int
    max_history: int
    max_context_bytes: int

    def limits(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in LIMITS}


class Tenants:
    """Every tenant; `pick` finds the one a request's token opens."""

    def __init__(self, tenants: Iterable[Tenant]) -> None:
        self.all = tuple(tenants)
        self.by_name = {t.name: t for t in self.all}
        self.open = not any(t.tokens for t in self.all)  # no token at all: development, unauthenticated

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.all)

    def pick(self, header: str) -> Tenant | None:
        """The tenant whose token the header (`Bearer <token>` or the bare token) presents, else None.

        Every token of every tenant is compared, each in constant time, whichever matches: the time
        taken tells nothing about which tenant, or which part of a token, was right.
        """
        if self.open:
            return self.by_name[DEFAULT]
        presented = header[7:] if header[:7].lower() == "bearer " else header
        raw = presented.strip().encode("utf-8", "surrogateescape")
        digest = hashlib.sha256(raw).digest()
        found = None
        for tenant in self.all:
            for hashed, value in tenant.tokens:
                if hmac.compare_digest(digest if hashed else raw, value) and found is None:
                    found = tenant
        return found

    def log_seed(self) -> bytes:
        """Secret material to derive the log hash key from when LOG_HASH_KEY is not set: the first clear
        token of each tenant (a sha256: token is no secret, it is written in the file)."""
        return b"\0".join(next((v for hashed, v in t.tokens if not hashed), b"") for t in self.all)

    @property
    def any_clear_token(self) -> bool:
        return any(not hashed for t in self.all for hashed, _ in t.tokens)


def single(service_tokens: tuple[str, ...], limits: dict[str, int]) -> Tenants:
    """SERVICE_TOKEN as the one tenant, `default` (no token: open, for development)."""
    return Tenants([_tenant(DEFAULT, [(False, t.encode()) for t in service_tokens], limits)])


def _tenant(name: str, tokens: list[tuple[bool, bytes]], limits: dict[str, int]) -> Tenant:
    return Tenant(name, tuple(tokens), **{n: limits[n] for n in LIMITS})


def load(
    path: str,
    *,
    service_tokens: tuple[str, ...],
    defaults: dict[str, int],
    max_context_bytes: int,
    production: bool,
) -> Tenants:
    """The tenants of the file at `path` (YAML or JSON: a list), plus `default` for SERVICE_TOKEN if set.

    `defaults` are the server's limits, which a tenant's own override; `max_context_bytes` is the
    largest context a tenant may allow (the document budget).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TenantsError(f"cannot read {path}: {exc}") from None
    return parse(
        text,
        service_tokens=service_tokens,
        defaults=defaults,
        max_context_bytes=max_context_bytes,
        production=production,
    )


def parse(
    text: str,
    *,
    service_tokens: tuple[str, ...] = (),
    defaults: dict[str, int],
    max_context_bytes: int,
    production: bool = False,
) -> Tenants:
    """The tenants `text` declares (see `load`); TenantsError naming the entry and the reason."""
    try:
        entries = yaml.safe_load(text)  # YAML 1.1, of which JSON is a subset
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise TenantsError(f"not valid YAML or JSON{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(entries, list) or not entries:
        raise TenantsError("must be a non-empty list of tenants (a top-level list, each with name and tokens)")
    tenants: list[Tenant] = []
    owner: dict[bytes, str] = {}  # every token's SHA-256 -> its tenant, to refuse one token in two tenants
    if service_tokens:
        tenants.append(_tenant(DEFAULT, [(False, t.encode()) for t in service_tokens], defaults))
        owner.update((hashlib.sha256(t.encode()).digest(), f"{DEFAULT} (SERVICE_TOKEN)") for t in service_tokens)
    for i, entry in enumerate(entries):
        tenant = _entry(i, entry, defaults, max_context_bytes, production)
        if tenant.name in {t.name for t in tenants}:
            also = " (SERVICE_TOKEN is the tenant default)" if tenant.name == DEFAULT and service_tokens else ""
            raise TenantsError(f"tenant {tenant.name!r} is declared twice{also}")
        for hashed, value in tenant.tokens:
            digest = value if hashed else hashlib.sha256(value).digest()
            if digest in owner:
                raise TenantsError(f"tenant {tenant.name!r}: a token is also a token of tenant {owner[digest]}")
            owner[digest] = repr(tenant.name)
        tenants.append(tenant)
    return Tenants(tenants)


def _entry(i: int, entry: object, defaults: dict[str, int], max_context_bytes: int, production: bool) -> Tenant:
    where = f"tenant #{i + 1}"
    if not isinstance(entry, dict):
        raise TenantsError(f"{where}: must be a mapping with name and tokens")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise TenantsError(f"{where}: name must be 1-32 characters of a-z 0-9 _ -, got {name!r}")
    where = f"tenant {name!r}"
    unknown = sorted(str(k) for k in entry if k not in KEYS)
    if unknown:
        raise TenantsError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    raw_tokens = entry.get("tokens")
    if not isinstance(raw_tokens, list) or not raw_tokens or not all(isinstance(t, str) for t in raw_tokens):
        raise TenantsError(f"{where}: tokens must be a non-empty list of strings")
    tokens = [_token(where, t.strip(), production) for t in raw_tokens]
    limits = dict(defaults)
    for limit in LIMITS:
        if limit in entry:
            value = entry[limit]
            if type(value) is not int or value < 1:
                raise TenantsError(f"{where}: {limit} must be a positive integer, got {value!r}")
            limits[limit] = value
    if limits["max_history"] > spec.MAX_HISTORY:
        raise TenantsError(f"{where}: max_history must be at most {spec.MAX_HISTORY}")
    if limits["timeout"] > limits["max_timeout"]:
        raise TenantsError(
            f"{where}: timeout ({limits['timeout']}) must not exceed max_timeout ({limits['max_timeout']})"
        )
    if limits["max_context_bytes"] > max_context_bytes:
        raise TenantsError(
            f"{where}: max_context_bytes must be at most {max_context_bytes} (MAX_CONTEXT_BYTES + MAX_BODY_BYTES "
            "must keep a session document below MongoDB's 16 MiB)"
        )
    return _tenant(name, tokens, limits)


def _token(where: str, token: str, production: bool) -> tuple[bool, bytes]:
    if not token:
        raise TenantsError(f"{where}: a token is empty")
    hashed = HASHED.match(token)
    if hashed:
        return True, bytes.fromhex(hashed.group(1))
    if token.lower().startswith("sha256:"):
        raise TenantsError(f"{where}: a sha256: token must be followed by 64 hex digits (the token's SHA-256)")
    if production and len(token) < MIN_PRODUCTION_TOKEN:
        raise TenantsError(f"{where}: tokens must be at least {MIN_PRODUCTION_TOKEN} characters in production")
    return False, token.encode("utf-8")
