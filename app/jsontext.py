"""JSON text in and out, exactly: big integers kept, NaN/Infinity and duplicate keys refused. Pure.

The standard library parser is used on purpose: orjson turns integers past 64 bits into floats,
which would silently change a caller's context.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 100


class JSONTextError(ValueError):
    """The text is not acceptable JSON; `reason` is a key of spec.REASONS."""

    def __init__(self, reason: str, expected: Any = "") -> None:
        super().__init__(reason)
        self.reason, self.expected = reason, expected


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise JSONTextError("json_text")
    return out


def _no_constant(name: str) -> Any:
    raise JSONTextError("json_text")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON text, but no JSON encoder can write it back
        raise JSONTextError("json_text")
    return value


_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(text: str | bytes, depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text; raises JSONTextError (never RecursionError) on anything unacceptable."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise JSONTextError("json_text") from None
    try:
        value = _decoder.decode(text)
    except RecursionError:
        raise JSONTextError("nesting", depth) from None
    except ValueError as exc:
        if isinstance(exc, JSONTextError):
            raise
        raise JSONTextError("json_text") from None
    check_depth(value, depth)
    return value


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse values nested deeper than `limit`, and strings no UTF-8 encoder can write.

    Iterative, because deep input must not recurse. Lone surrogates ("\\ud800") are valid JSON
    escapes but not Unicode text: BSON, and any UTF-8 reader after us, would choke on them.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise JSONTextError("nesting", limit)
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise JSONTextError("json_text")
        elif isinstance(item, dict):
            for k, v in item.items():
                if _SURROGATE.search(k):
                    raise JSONTextError("json_text")
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept: the form whose UTF-8 size the context limit counts."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: objects merge, null deletes, anything else replaces.

    The result's compact text is never longer than the target's and the patch's together, which
    lets a patch be stored unapplied under a size bound (the context's patch log: `cp` and `csz` in
    storage.layout, written by storage.updates.plan).
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def fold(base: str, patches: list[str] | tuple[str, ...]) -> str:
    """The JSON text of `base` with the merge patches applied in order."""
    if not patches:
        return base
    value = loads(base)
    for patch in patches:
        value = merge_patch(value, loads(patch))
    return dumps(value)
