"""Stored messages: the text codec, and where each seq lives (the session document or an archive chunk). Pure.

Messages are stored as "<role>|<ts>|<content>", so stored bytes are the content's own: MongoDB's 16 MiB
counts what is stored. NUL (which nx-27017's $push truncates at) and \\x01 are escaped as \\x01\\x03 and
\\x01\\x02, after ":" instead of the first "|"; the spec counts those characters twice (message_bytes).
A message appended under a request_id carries it, "<role>|<ts>#<request id>|<content>": a repeat of
that request finds the seqs its messages got.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from app import seqs
from app.model import Session
from app.storage.layout import F

_ESCAPED = re.compile("[\x00\x01]")
_UNESCAPED = re.compile("\x01[\x02\x03]")
_HEAD = re.compile(r"([a-z]+)([|:])(\d+)(?:#([A-Za-z0-9_.:-]+))?\|")


def encode_message(role: str, content: str, ts: int, request_id: str = "") -> str:
    head = f"{ts}#{request_id}" if request_id else str(ts)
    if "\x00" in content or "\x01" in content:
        return f"{role}:{head}|" + _ESCAPED.sub(lambda m: "\x01\x03" if m.group() == "\x00" else "\x01\x02", content)
    return f"{role}|{head}|{content}"


def decode_message(text: str) -> tuple[str, str, int, str]:
    """(role, content, ts, request id or "") of a stored message text."""
    head = _HEAD.match(text)
    if head is None:
        raise ValueError("not a stored message text")
    content = text[head.end() :]
    if head[2] == ":":
        content = _UNESCAPED.sub(lambda m: "\x00" if m.group() == "\x01\x03" else "\x01", content)
    return head[1], content, int(head[3]), head[4] or ""


# What a dropped message's place holds, inline or archived: seqs are positions, and never reused.
DROPPED = "system|0|"


def text_bytes(texts: tuple[str, ...] | list[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


def inline_first(s: Session) -> int:
    """The seq of the oldest message kept in the session document."""
    return s.last_seq - s.stored.inline + 1


def inline_texts(s: Session) -> Iterator[tuple[int, str]]:
    """(seq, message text) of the messages kept in the session document (`s` read with them), oldest
    first; seqs a rewind dropped are left out."""
    start = inline_first(s)
    return ((start + i, t) for i, t in enumerate(s.stored.texts or ()) if not seqs.is_gap(start + i, s.gaps))


def chunk_texts(chunk: dict, gaps: seqs.Gaps = ()) -> Iterator[tuple[int, str]]:
    """(seq, message text) of an archive chunk's messages, oldest first, but those in `gaps`."""
    first = chunk[F.FIRST_SEQ]
    return ((first + i, t) for i, t in enumerate(chunk[F.MESSAGES]) if not seqs.is_gap(first + i, gaps))


def chunk_ranges(s: Session) -> list[tuple[int, int]]:
    """The archive chunks as (first seq, last seq), oldest first."""
    chunks = s.stored.chunks
    if not chunks:
        return []
    ends = [*chunks[1:], inline_first(s)]
    return [(first, end - 1) for first, end in zip(chunks, ends, strict=True)]
