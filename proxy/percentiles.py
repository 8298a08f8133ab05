"""Percentiles by nearest rank: the one definition every figure in strangler uses (report, store, /stats, watch).

The q-percentile of n values is the value at rank ceil(q × n) (1-based) in ascending order: always one of the
values, never an interpolation, so a percentile read from stored rows can be checked against those rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T", int, float)


def nearest_rank(q: float, total: int) -> int:
    """The 1-based rank of the q-quantile (0 < q <= 1) among `total` values; 0 when there are none."""
    if total <= 0:
        return 0
    return min(total, max(1, math.ceil(q * total)))


def percentile(ordered: Sequence[T], q: float) -> T | None:
    """The q-quantile of values sorted ascending, by nearest rank; None when there are none."""
    rank = nearest_rank(q, len(ordered))
    return ordered[rank - 1] if rank else None


def bucket_of_rank(counts: Sequence[float], q: float) -> int | None:
    """The index of the histogram bucket (non-cumulative counts, in bound order) holding the q-quantile's nearest
    rank; None for an empty histogram."""
    rank = nearest_rank(q, math.ceil(sum(counts)))
    if not rank:
        return None
    seen = 0.0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return i
    return len(counts) - 1
