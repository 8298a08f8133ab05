"""Every difference between two parsed JSON documents, in one walk over both trees (pure, thread-safe).

It gives what deepdiff gave for the same documents (concrete path, grouped path, kind, both values) at a small
fraction of the cost, and never stops early: counting stays exact however many differences a pair has. Rules:
- numbers compare as numbers (1 == 1.0), within `float_tolerance` (math.isclose with that absolute tolerance, as
  deepdiff's math_epsilon); a boolean is not a number (true vs 1 is a type change), nor is null;
- objects: keys only on one side are added / removed, shared keys are walked;
- ordered arrays: the same elements in another order are one "order" difference at the array; otherwise elements
  are paired by index (extra ones added / removed at the end), except arrays of scalars, which are aligned by
  difflib's sequence diff (`shadow.judge.seqmatch` for short ones) when that gives fewer differences (a value
  inserted at the front is one addition, not a change of every element): deepdiff's rule, kept so both give the
  same kinds;
- arrays that `ignore_order` names: equal as multisets of canonical elements means equal; when they differ, they
  go to the `unordered` callback (`shadow.judge.unordered` for scalars deepdiff would not pair, deepdiff for the
  rest: similarity pairing).

Where deepdiff and this walk deliberately disagree (tests/shadow/judge/test_jsondiff.py checks both): deepdiff before
9.2 aligns arrays of scalars with Python equality, under which true == 1, so it misses a boolean turned into 1 inside
an array (9.2 reports the type change, as the walk does); and elements equal index by index within float_tolerance are
equal here in any order. Long arrays of scalars are aligned within ALIGN_BUDGET (the sequence diff is quadratic at
worst), deepdiff aligned them whatever it cost.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shadow.judge.jsonpath import format_path, group_path, is_order_insensitive
from shadow.judge.normalize import canonical_json
from shadow.judge.seqmatch import opcodes
from shadow.judge.textdiff import render_value
from shadow.values import Difference, DiffKind

Path = list[str | int]
# Differences of two arrays compared without regard to order, at `path` (the walk found them not equal).
Unordered = Callable[[list[object], list[object], Sequence[str | int]], list[Difference]]


@dataclass(frozen=True, slots=True)
class _Rules:
    tolerance: float
    ignore_order: bool | tuple[str, ...]
    unordered: Unordered


def json_differences(
    a: object,
    b: object,
    *,
    float_tolerance: float,
    ignore_order: bool | tuple[str, ...],
    unordered: Unordered,
    at: Sequence[str | int] = (),
) -> list[Difference]:
    """Every difference between documents `a` (legacy) and `b` (new), ignored fields already removed; `at`: where
    the two sit in their documents (for `ignore_order` paths), the root by default."""
    found: list[_Found] = []
    _walk(a, b, list(at), _Rules(float_tolerance, ignore_order, unordered), found)
    return [item if isinstance(item, Difference) else difference(*item) for item in found]


# A difference as the walk finds it, written out (paths formatted, values rendered) only once it is kept: the
# alignment of scalar arrays and the order check discard some. Differences from `unordered` come written.
_Found = tuple[tuple[str | int, ...], DiffKind, object, object] | Difference


def difference(path: tuple[str | int, ...], kind: DiffKind, a: object, b: object) -> Difference:
    """One difference written out: its concrete and grouped path, and both values rendered (none for the side an
    addition or a removal lacks)."""
    concrete = "$" + "".join(map(_step_text, path))
    return Difference(
        concrete,
        group_path(concrete),
        kind,
        None if kind == "added" else render_value(a),
        None if kind == "removed" else render_value(b),
    )


@functools.lru_cache(maxsize=4096)
def _step_text(step: str | int) -> str:
    """One step of a concrete path as `format_path` writes it (object keys repeat across rows: cached)."""
    return f"[{step}]" if isinstance(step, int) else format_path([step])[1:]


# JSON types by Python class; int and float are one type, bool its own (exact class checks: parsed JSON holds plain
# builtins, and `isinstance(True, int)` would make a boolean a number).
_NUMBER, _BOOL, _TEXT, _NULL, _OBJECT, _ARRAY = range(6)
_TYPES: dict[type, int] = {
    int: _NUMBER,
    float: _NUMBER,
    bool: _BOOL,
    str: _TEXT,
    type(None): _NULL,
    dict: _OBJECT,
    list: _ARRAY,
}


def _walk(a: object, b: object, path: Path, rules: _Rules, out: list[_Found]) -> None:
    kind_a, kind_b = _TYPES.get(type(a), -1), _TYPES.get(type(b), -1)
    if kind_a != kind_b:
        out.append((tuple(path), "type_changed", a, b))
    elif kind_a == _OBJECT:
        _walk_object(a, b, path, rules, out)  # type: ignore[arg-type]
    elif kind_a == _ARRAY:
        _walk_array(a, b, path, rules, out)  # type: ignore[arg-type]
    elif kind_a == _NUMBER:
        if not same_number(a, b, rules.tolerance):  # type: ignore[arg-type]
            out.append((tuple(path), "changed", a, b))
    elif a != b:
        out.append((tuple(path), "changed", a, b))


def _same(a: object, b: object) -> bool:
    """A quick "certainly equal" that lets the walk skip a subtree; False means walk it to know.

    Python's `==` runs in C but says true == 1 (also inside arrays and objects): containers it calls equal are
    confirmed by their canonical bytes, which tell a boolean from a number."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b) or a != b:
        return False
    return (kind is not dict and kind is not list) or canonical_json(a) == canonical_json(b)


def same_number(a: float, b: float, tolerance: float) -> bool:
    """Two JSON numbers are equal: as numbers (1 and 1.0), within `float_tolerance` when one is set."""
    if tolerance > 0:
        return math.isclose(a, b, abs_tol=tolerance)
    return a == b


def _walk_object(a: dict[str, object], b: dict[str, object], path: Path, rules: _Rules, out: list[_Found]) -> None:
    for key, value in a.items():
        if key in b:
            other = b[key]
            if not _same(value, other):
                _walk(value, other, [*path, key], rules, out)
        else:
            out.append(((*path, key), "removed", value, None))
    for key, value in b.items():
        if key not in a:
            out.append(((*path, key), "added", None, value))


def _walk_array(a: list[object], b: list[object], path: Path, rules: _Rules, out: list[_Found]) -> None:
    if is_order_insensitive(path, rules.ignore_order):
        if len(a) != len(b) or _canonical_elements(a) != _canonical_elements(b):
            out.extend(rules.unordered(a, b, tuple(path)))
        return
    found: list[_Found] = []
    if _all_scalars(a) and _all_scalars(b):
        _align_scalars(a, b, path, rules, found)
    else:
        _pair_by_index(a, b, 0, len(a), 0, len(b), path, rules, found)
    if found and len(a) == len(b) and _canonical_elements(a) == _canonical_elements(b):
        # The same elements in another order: one difference at the array, not one per shifted element.
        out.append((tuple(path), "order", a, b))
    else:
        out.extend(found)


def _canonical_elements(items: list[object]) -> list[bytes]:
    return sorted(map(canonical_json, items))


_SCALARS = frozenset({int, float, bool, str, type(None)})


def _all_scalars(items: list[object]) -> bool:
    return all(type(x) in _SCALARS for x in items)


def _pair_by_index(
    a: list[object],
    b: list[object],
    a_from: int,
    a_to: int,
    b_from: int,
    b_to: int,
    path: Path,
    rules: _Rules,
    out: list[_Found],
) -> None:
    """Elements a[a_from:a_to] and b[b_from:b_to] paired in order; the longer side's extra ones are added or
    removed. Paths use legacy's index for a pair and a removal, new's for an addition, as deepdiff's do."""
    shared = min(a_to - a_from, b_to - b_from)
    for offset in range(shared):
        x, y = a[a_from + offset], b[b_from + offset]
        if not _same(x, y):
            _walk(x, y, [*path, a_from + offset], rules, out)
    for offset in range(shared, a_to - a_from):
        out.append(((*path, a_from + offset), "removed", a[a_from + offset], None))
    for offset in range(shared, b_to - b_from):
        out.append(((*path, b_from + offset), "added", None, b[b_from + offset]))


def _scalar_key(value: object) -> tuple[int, object]:
    # Hashable and equal exactly when the two JSON scalars are equal: 1 and 1.0 alike, true and 1 not.
    return _TYPES[type(value)], value


# Elements compared by the sequence diff of two arrays of scalars (it is quadratic at worst): past this product
# only the part between their common head and tail is aligned, and past it there too, elements pair by index.
ALIGN_BUDGET = 1_000_000


def _align_scalars(a: list[object], b: list[object], path: Path, rules: _Rules, out: list[_Found]) -> None:
    """Arrays of scalars aligned by a sequence diff (deletions and insertions at their own indexes, replaced runs
    paired in order), unless pairing the whole arrays by index gives no more differences."""
    # The common changes need no sequence diff; pairing by index is then provably the alignment's answer:
    # - same length, at most two differences by index: an alignment whose blocks all have equal sizes on both sides
    #   starts every block at the same index on both, which is pairing by index; one with a block of unequal sizes
    #   needs another to even the lengths out, each giving at least one difference, so it finds at least two, and
    #   pairing by index wins a tie (below);
    # - values appended or dropped at the end (by index, only the extra elements differ) and no tolerance: the
    #   shorter array is then the longer one's start, exactly, which is the sequence diff's longest block (it takes
    #   the earliest), so it too finds only the extra elements. (With a tolerance, equal-within-tolerance values are
    #   different to the sequence diff, which may then align them elsewhere.)
    by_index: list[_Found] = []
    _pair_by_index(a, b, 0, len(a), 0, len(b), path, rules, by_index)
    extra = abs(len(a) - len(b))
    if (not extra and len(by_index) <= 2) or (len(by_index) == extra and not rules.tolerance):
        out.extend(by_index)
        return
    keys_a, keys_b = list(map(_scalar_key, a)), list(map(_scalar_key, b))
    head = tail = 0
    if len(a) * len(b) > ALIGN_BUDGET:
        shorter = min(len(a), len(b))
        while head < shorter and keys_a[head] == keys_b[head]:
            head += 1
        while tail < shorter - head and keys_a[-1 - tail] == keys_b[-1 - tail]:
            tail += 1
        if (len(a) - head - tail) * (len(b) - head - tail) > ALIGN_BUDGET:
            out.extend(by_index)
            return
    aligned: list[_Found] = []
    for tag, a_from, a_to, b_from, b_to in opcodes(keys_a[head : len(a) - tail], keys_b[head : len(b) - tail]):
        a_from, a_to, b_from, b_to = a_from + head, a_to + head, b_from + head, b_to + head
        if tag == "replace":
            _pair_by_index(a, b, a_from, a_to, b_from, b_to, path, rules, aligned)
        elif tag == "delete":
            aligned.extend(((*path, i), "removed", a[i], None) for i in range(a_from, a_to))
        elif tag == "insert":
            aligned.extend(((*path, j), "added", None, b[j]) for j in range(b_from, b_to))
    if len(aligned) > 1 and len(by_index) <= len(aligned):
        aligned = by_index
    out.extend(_replacements(aligned))


def _replacements(found: list[_Found]) -> list[_Found]:
    """A removal and an addition at one index (a deleted value, and another inserted where it was) as one change
    there, from the removed value to the added one: what deepdiff reports for them, whatever their types."""
    removed = {item[0]: item for item in found if isinstance(item, tuple) and item[1] == "removed"}
    if not removed:
        return found
    added = {item[0]: item for item in found if isinstance(item, tuple) and item[1] == "added"}
    both = removed.keys() & added.keys()
    if not both:
        return found
    out: list[_Found] = []
    for item in found:
        if not isinstance(item, tuple) or item[0] not in both:
            out.append(item)
        elif item[1] == "removed":
            out.append((item[0], "changed", item[2], added[item[0]][3]))
    return out
