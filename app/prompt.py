"""What an LLM prompt gets from a history: a token estimate and a transcript. Pure: no I/O.

The estimate is deterministic and needs no vocabulary: each CJK character (Han, kana, Hangul, CJK
and full-width punctuation) counts one token, every other run of text one token per four
characters (rounded up), and each message MESSAGE_OVERHEAD more for its role and separators.
Against OpenAI's cl100k_base tokenizer it stays within the factor the tests state (README).
"""

from __future__ import annotations

import re

from app.model import Message

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
