"""Session ids the service makes: random, or derived from a request id so a repeat names the same one. Pure."""

from __future__ import annotations

import hashlib
import secrets


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(16)


def derived_session_id(user_id: str, request_id: str) -> str:
    """The id a create under `request_id` gives its session: every repeat of it names the same one."""
    return "sess_" + hashlib.sha256(f"{user_id}\0{request_id}".encode()).hexdigest()[:32]
