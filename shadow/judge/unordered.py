"""Order-blind (`ignore_order`) arrays that differ: which elements are the same one, and deepdiff's report without
deepdiff where it would pair nothing.

First, `matched_elements`: elements equal by the JSON rules but written otherwise (1 and 1.0, numbers within
`float_tolerance`, objects whose fields differ only so) are written as legacy's, one to one. deepdiff hashes them
apart and pairs removed with added elements only while few differ, so without this an order-blind list whose
numbers all changed form read as every element removed and added.

Then, for arrays of scalars: deepdiff with `ignore_order` and `report_repetition`
(`shadow.judge.compare.deepdiff_report`'s options) hashes every element and reports:
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

from collections import Counter
from collections.abc import Callable, Sequence

from shadow.judge.jsondiff import difference, same_number
from shadow.judge.normalize import canonical_json
from shadow.values import Difference

# deepdiff pairs removed with added elements only while they are at most this share of the distinct elements of both
# arrays (plus one). Its default, which shadow.judge.compare passes to it explicitly, so the two cannot drift apart.
PAIRING_CUTOFF = 0.7
_SCALARS = frozenset({int, float, bool, str, type(None)})
_NUMBERS = (int, float)  # by type, so a boolean is not one
_CONTAINERS = (dict, list)
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


# Element pairs past which containers are not matched by equality (each pair costs a comparison of the two).
MATCH_BUDGET = 2_500


def matched_elements(
    a: Sequence[object], b: Sequence[object], tolerance: float, equal: Callable[[object, object, int], bool]
) -> Sequence[object]:
    """`b` with each element that equals an element of `a` by the JSON rules, but is written otherwise, written as
    that element of `a`, one to one; `b` itself when nothing needed rewriting.

    The rules' equality is wider than deepdiff's hashes: numbers as numbers (`matched_numbers`), and objects or
    arrays whose contents differ only so (`equal(x, y, index of x)`: the comparison that judges them, asked only of
    elements without an identical partner, and of at most MATCH_BUDGET pairs). Elements identical on both sides
    are left to pair as they are."""
    b = matched_numbers(a, b, tolerance)
    if not any(type(x) in _CONTAINERS for x in a) or not any(type(y) in _CONTAINERS for y in b):
        return b  # scalars only (the common enum list): nothing more to match, and no canonical forms to build
    keys_a, keys_b = [canonical_json(x) for x in a], [canonical_json(y) for y in b]
    shared = Counter(keys_a) & Counter(keys_b)  # identical on both sides: these pair as they are
    only_a = _unmatched_containers(a, keys_a, shared.copy())
    only_b = _unmatched_containers(b, keys_b, shared)
    if not only_a or not only_b or len(only_a) * len(only_b) > MATCH_BUDGET:
        return b
    out: list[object] | None = None
    for j in only_b:
        y = b[j]
        for n, i in enumerate(only_a):
            x = a[i]
            if type(x) is type(y) and equal(x, y, i):
                out = list(b) if out is None else out
                out[j] = x
                del only_a[n]
                break
    return b if out is None else out


def _unmatched_containers(items: Sequence[object], keys: list[bytes], shared: Counter[bytes]) -> list[int]:
    """Indexes of the objects and arrays left once the identical ones (`shared`, used up here) are paired."""
    out = []
    for index, (item, key) in enumerate(zip(items, keys, strict=True)):
        if shared[key] > 0:
            shared[key] -= 1
        elif type(item) in _CONTAINERS:
            out.append(index)
    return out


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
    # deepdiff reports the first element of a hash at each of its indexes
    for key in added:
        out.extend(difference((*path, i), "added", None, b[right[key][0]]) for i in right[key])
    for key in removed:
        out.extend(difference((*path, i), "removed", a[left[key][0]], None) for i in left[key])
    for key, old in left.items():
        new = right.get(key)
        if new is not None and len(new) != len(old):
            out.append(difference((*path, old[0]), "changed", [a[old[0]]] * len(old), [b[new[0]]] * len(new)))
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
