"""Message seqs with holes: what rewind leaves behind. Pure.

Seqs are never reused, so a rewind cannot give the dropped seqs back: it records them as a gap,
an inclusive range [first, last] of seqs that hold no message. A session's gaps are ascending and
disjoint. The visible history is then the newest `count` seqs up to `last` that are in no gap.
"""

from __future__ import annotations

from bisect import bisect_right

Gaps = tuple[tuple[int, int], ...]


def first_visible(last: int, count: int, gaps: Gaps) -> int:
    """The seq of the oldest of the `count` newest seqs up to `last` outside every gap (last + 1 if none)."""
    if count <= 0:
        return last + 1
    top, left = last, count
    for first, end in reversed(gaps):
        if first > top:
            continue
        end = min(end, top)
        if top - end >= left:
            break
        left -= top - end
        top = first - 1
    return top - left + 1


def is_gap(seq: int, gaps: Gaps) -> bool:
    i = bisect_right(gaps, (seq, float("inf"))) - 1
    return i >= 0 and gaps[i][0] <= seq <= gaps[i][1]


def live_between(low: int, high: int, gaps: Gaps) -> int:
    """How many seqs in [low, high] are in no gap."""
    if high < low:
        return 0
    holes = sum(max(0, min(end, high) - max(first, low) + 1) for first, end in gaps)
    return high - low + 1 - holes


def cut(gaps: Gaps, to_seq: int, top: int, oldest: int) -> Gaps:
    """The gaps after a rewind to `to_seq` of a history whose highest seq is `top`: everything after
    `to_seq` becomes one gap; gaps wholly before `oldest` (out of view) are forgotten."""
    kept = [(f, min(e, to_seq)) for f, e in gaps if f <= to_seq and e >= oldest]
    if to_seq < top:
        if kept and kept[-1][1] == to_seq:
            kept[-1] = (kept[-1][0], top)
        else:
            kept.append((to_seq + 1, top))
    return tuple(kept)


def clip(gaps: Gaps, at: int) -> Gaps:
    """The gaps of a history cut after `at` (a fork)."""
    return tuple((f, min(e, at)) for f, e in gaps if f <= at)


def to_stored(gaps: Gaps) -> list[int]:
    """Flat [first, last, first, last, ...]: plain integers store alike in MongoDB and nx-27017."""
    return [n for gap in gaps for n in gap]


def from_stored(flat: list[int] | tuple[int, ...]) -> Gaps:
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))
