"""An order-blind array of scalars that differs: deepdiff's report for it, without deepdiff, when deepdiff would pair
nothing.

deepdiff with `ignore_order` and `report_repetition` (`shadow.judge.compare._deepdiff`'s options) hashes every
element and reports:
- an element whose hash is only in new as added, at each of its indexes in new;
- one whose hash is only in legacy as removed, at each of its indexes in legacy;
- one in both whose count changed as one repetition change, at its first index in legacy, with both runs as values.

Only when elements were both added and removed, and they are few against the distinct elements of both arrays
(deepdiff's `cutoff_intersection_for_pairs`, `PAIRING_CUTOFF`), does it go further and pair each removed element
with its most similar added one by its distance measure. That needs deepdiff, so those arrays still go to it
(`unpaired_differences` returns None). The rest is reproduced here (an enum list that gained or lost values, a
count that changed, an array rewritten past pairing) at a small fraction of the cost: building one DeepDiff costs
more than walking a whole 1.4 KB document.

deepdiff's hash of a scalar is its type and value (`int:1`, `float:1.0`, `bool:true`, `str:a`), and elements equal
by Python's `==` and of one type share one hash through its cache (0.0 and -0.0). So the key here is (type, value):
1 and 1.0 differ, as true and 1 do. NaN (only from the json fallback parser) is the one value unequal to itself, so
an array holding one goes to deepdiff. tests/shadow/judge/test_unordered.py checks all this against deepdiff on
generated arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

from shadow.judge.jsondiff import same_number
from shadow.judge.jsonpath import format_path, group_path
from shadow.judge.textdiff import render_value
from shadow.values import Difference

# deepdiff pairs removed with added elements only while they are at most this share of the distinct elements of both
# arrays (plus one). Its default, which shadow.judge.compare passes to it explicitly, so the two cannot drift apart.
PAIRING_CUTOFF = 0.7
_SCALARS = frozenset({int, float, bool, str, type(None)})
_NUMBERS = (int, float)  # by type, so a boolean is not one
_Key = tuple[type, object]


def matched_numbers(a: Sequence[object], b: Sequence[object], tolerance: float) -> Sequence[object]:
    """`b`, with each number that equals a number of `a` as numbers (1 and 1.0; within `tolerance` when set) written
    as that number of `a`, one to one; `b` itself when nothing needed rewriting.

    deepdiff hashes 1 and 1.0 apart, and 1.0 and 1.0004 too, so in an order-blind array it reports them removed and
    added unless it pairs them, which it does only while few elements differ (`PAIRING_CUTOFF`). An array whose
    numbers all turned from integers into floats, or all moved within `float_tolerance`, was then a real difference
    where the same numbers anywhere else were none. Matching them first makes the rule the walk's everywhere.
    Both sides' numbers are matched in sorted order, each to the first of the other's it equals: for points on a line
    and a distance, that pairs as many as any matching can."""
    nums_a = sorted((x, i) for i, x in enumerate(a) if type(x) in _NUMBERS and x == x)  # no NaN (json fallback)
    nums_b = sorted((y, j) for j, y in enumerate(b) if type(y) in _NUMBERS and y == y)
    out: list[object] | None = None
    i = j = 0
    while i < len(nums_a) and j < len(nums_b):
        x, y = nums_a[i][0], nums_b[j][0]
        if same_number(x, y, tolerance):  # type: ignore[arg-type]
            if type(x) is not type(y) or x != y:
                out = list(b) if out is None else out
                out[nums_b[j][1]] = x
            i += 1
            j += 1
        elif x < y:  # type: ignore[operator]
            i += 1
        else:
            j += 1
    return b if out is None else out


def unpaired_differences(
    a: Sequence[object], b: Sequence[object], path: Sequence[str | int], *, pair: bool
) -> list[Difference] | None:
    """What deepdiff reports for order-blind arrays of scalars `a` (legacy) and `b` (new) at `path`, or None when it
    would pair removed elements with added ones (or an element is not a scalar, or is NaN). `pair=False`: deepdiff
    is told never to pair (`compare.PAIRING_BUDGET`)."""
    left = _indexes(a)
    right = _indexes(b)
    if left is None or right is None:
        return None
    added = [key for key in right if key not in left]
    removed = [key for key in left if key not in right]
    if added and removed and pair:
        share = (len(added) + len(removed)) / (len(left) + len(right) + 1)
        if share <= PAIRING_CUTOFF:
            return None  # deepdiff would look for pairs by similarity
    out: list[Difference] = []
    for key in added:
        indexes = right[key]
        value = render_value(b[indexes[0]])  # deepdiff reports the first element of a hash at each of its indexes
        out.extend(_difference(path, i, "added", None, value) for i in indexes)
    for key in removed:
        indexes = left[key]
        value = render_value(a[indexes[0]])
        out.extend(_difference(path, i, "removed", value, None) for i in indexes)
    for key, old in left.items():
        new = right.get(key)
        if new is not None and len(new) != len(old):
            legacy_run = render_value([a[old[0]]] * len(old))
            new_run = render_value([b[new[0]]] * len(new))
            out.append(_difference(path, old[0], "changed", legacy_run, new_run))
    return out


def _indexes(items: Sequence[object]) -> dict[_Key, list[int]] | None:
    """Each distinct element's indexes, by deepdiff's hash of it, in order of first appearance; None when an element
    is not a scalar or is NaN."""
    found: dict[_Key, list[int]] = {}
    for index, item in enumerate(items):
        kind = type(item)
        if kind not in _SCALARS or item != item:  # NaN is the one value unequal to itself
            return None
        key = (kind, item)
        seen = found.get(key)
        if seen is None:
            found[key] = [index]
        else:
            seen.append(index)
    return found


def _difference(path: Sequence[str | int], index: int, kind: str, legacy: str | None, new: str | None) -> Difference:
    concrete = format_path([*path, index])
    return Difference(concrete, group_path(concrete), kind, legacy, new)  # type: ignore[arg-type]
