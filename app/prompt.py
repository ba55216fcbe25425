"""What an LLM prompt gets from a history: a page that fits a budget, a transcript, a token estimate. Pure.

The estimate is deterministic and needs no vocabulary: each CJK character (Han, kana, Hangul, CJK
and full-width punctuation) counts one token, every other run of text one token per four
characters (rounded up), and each message MESSAGE_OVERHEAD more for its role and separators.
Against OpenAI's cl100k_base tokenizer it stays within the factor the tests state (docs/workflows.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from app.model import Message, Session

MESSAGE_OVERHEAD = 4  # role, separators, the line break: what chat formats add per message
_CJK = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f]"
)


def text_tokens(text: str) -> int:
    """The estimated tokens of a text."""
    cjk = len(_CJK.findall(text))
    other = len(text) - cjk
    return cjk + (other + 3) // 4


def message_tokens(m: Message) -> int:
    return text_tokens(m.content) + MESSAGE_OVERHEAD


def summary_tokens(summary: str) -> int:
    return text_tokens(summary) + MESSAGE_OVERHEAD if summary else 0


def transcript(messages: list[Message] | tuple[Message, ...], summary: str = "") -> str:
    """One "role: content" line per message, oldest first, after a "summary: ..." line if given."""
    lines = [f"summary: {summary}"] if summary else []
    lines += [f"{m.role}: {m.content}" for m in messages]
    return "\n".join(lines)


def page(
    read: Callable[[int, int], list[Message]],
    s: Session,
    last: int,
    *,
    limit: int,
    roles: set[str],
    budget: int | None,
    as_text: bool,
) -> dict[str, Any]:
    """The newest `limit` messages up to seq `last` of `roles` (all if empty) that fit `budget` (a
    message bigger than the whole budget is skipped); the summary heads the page when it reaches the
    oldest kept message and fits too. `read(low, high)`
    gives the messages with seqs in that range, oldest first. The Outcome fields of a history page."""
    found: list[Message] = []
    tokens, stop, high = 0, 0, last
    while high >= s.first_seq and len(found) < limit and not stop:
        low = max(s.first_seq, high - (max(2 * limit, 50) if roles else limit) + 1)
        for m in reversed(read(low, high)):
            if roles and m.role not in roles:
                continue
            if budget is not None and tokens + message_tokens(m) > budget:
                # the next page starts with what did not fit; one bigger than the whole budget is
                # skipped, or a paging loop would ask for it forever
                stop = m.seq + 1 if found else m.seq
                break
            found.insert(0, m)
            tokens += message_tokens(m)
            if len(found) == limit:
                break
        high = low - 1
    oldest = found[0].seq if found else last + 1
    more = str(stop) if stop else str(oldest) if len(found) == limit and oldest > s.first_seq else ""
    fits = budget is None or tokens + summary_tokens(s.summary) <= budget
    summary = s.summary if not more and fits else ""
    return {
        "messages": tuple(found),
        "next_cursor": more,
        "transcript": transcript(found, summary) if as_text else "",
        "tokens": tokens + summary_tokens(summary),
    }
