"""Tests for shadow.judge.jsondiff: the structural walk agrees with deepdiff on grouped paths and kinds (generated
pairs), and its own rules (numbers, booleans, order, tolerance) hold.

Deliberate divergences from deepdiff, kept out of the generated pairs and checked on their own below:
- deepdiff before 9.2 aligns arrays of scalars with Python equality, under which true == 1 and false == 0, so
  `[true]` against `[1]` is no difference to it; the walk reports a type change (JSON has booleans apart from
  numbers), as deepdiff 9.2 does too.
- With float_tolerance, an array whose elements are equal index by index within the tolerance but not exactly
  (`[4, 4.0001]` against `[4.0001, 4]`) is no difference to the walk; the old path called it reordered, because its
  order check ran before the tolerance was applied.
"""

from __future__ import annotations

import copy
from importlib.metadata import version

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config.model import Compare
from shadow.judge.compare import _json_differences
from shadow.judge.jsondiff import ALIGN_BUDGET
from shadow.judge.jsondiff import json_differences as walk
from shadow.judge.reference import deepdiff_differences
from shadow.values import Difference

# Small value pools, so that generated documents share keys and values and differ in a few places, the way two
# answers of the same API do. Integers start at 2 and floats avoid 0 and 1: see the divergence in the docstring.
KEYS = ("a", "b", "c", "id")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(2, 5),
    st.sampled_from([2.0, 2.5, 3.0, 3.25, 4.0001]),
    st.sampled_from(["x", "y", "z", ""]),
)
docs = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(KEYS), kids, max_size=4),
    max_leaves=10,
)
Pair = tuple[object, object]


def _dict_pair(entries: list[tuple[str, Pair, str]]) -> Pair:
    a: dict[str, object] = {}
    b: dict[str, object] = {}
    for key, (x, y), where in entries:
        if where in ("both", "legacy"):
            a[key] = x
        if where in ("both", "new"):
            b[key] = y
    return a, b


def _list_pair(items: list[Pair], extra: object, at: int, edit: str) -> Pair:
    a, b = [x for x, _ in items], [y for _, y in items]
    at = min(at, len(b))
    if edit == "insert":
        b.insert(at, extra)
    elif edit == "delete" and b:
        del b[min(at, len(b) - 1)]
    elif edit == "reverse":
        b.reverse()
    elif edit == "shuffled copy":
        b = list(reversed(a))
    return a, b


def _extend(pairs: st.SearchStrategy[Pair]) -> st.SearchStrategy[Pair]:
    dicts = st.lists(
        st.tuples(st.sampled_from(KEYS), pairs, st.sampled_from(["both", "both", "legacy", "new"])),
        max_size=4,
        unique_by=lambda e: e[0],
    ).map(_dict_pair)
    lists = st.builds(
        _list_pair,
        st.lists(pairs, max_size=5),
        docs,
        st.integers(0, 5),
        st.sampled_from(["none", "insert", "delete", "reverse", "shuffled copy"]),
    )
    return dicts | lists


same = docs.map(lambda d: (d, copy.deepcopy(d)))
pairs = st.recursive(same | st.tuples(scalars, scalars) | st.tuples(docs, docs), _extend, max_leaves=12)
rules = st.sampled_from(
    [
        Compare(),
        Compare(float_tolerance=0.01),
        Compare(ignore_order=True),
        Compare(ignore_order=("$.a", "$.b[*]", "$.c.a")),
        Compare(ignore_order=True, float_tolerance=0.01),
    ]
)


def kinds(diffs: list[Difference]) -> set[tuple[str, str]]:
    return {(d.group, d.kind) for d in diffs}


# derandomize: the same 300 examples every run, so a CI run cannot fail on a case no earlier run saw; probes with
# random seeds (24,000+ examples) found only the divergences tested below. A later probe of 15,000 random arrays of
# scalars (replacements, insertions, deletions) found two more, both fixed and tested below: an addition inside a
# replaced run named by a wrong index, and a deletion and insertion at one index that deepdiff calls one change.
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(pair=pairs, compare=rules)
def test_walk_agrees_with_deepdiff_on_paths_and_kinds(pair: Pair, compare: Compare) -> None:
    """On generated pairs of JSON documents, the walk and deepdiff find the same (grouped path, kind) set."""
    a, b = pair
    walked = _json_differences(copy.deepcopy(a), copy.deepcopy(b), compare)
    reference = deepdiff_differences(copy.deepcopy(a), copy.deepcopy(b), compare)
    expected = kinds(reference)
    if compare.float_tolerance:  # the second divergence in the module docstring
        groups = {group for group, _ in kinds(walked)}
        expected = {(group, kind) for group, kind in expected if kind != "order" or group in groups}
    assert kinds(walked) == expected, (a, b)


# Arrays of scalars, the second the first with a few elements replaced, values appended or dropped at the end, and
# maybe one inserted or deleted: the shapes of the common changes (which the walk pairs by index without a sequence
# diff when that is provably the alignment's answer) and of the alignment's own.
plain_scalars = st.one_of(st.none(), st.integers(2, 5), st.sampled_from([2.5, 3.25]), st.sampled_from(["x", "y", ""]))


@st.composite
def edited_arrays(draw: st.DrawFn) -> Pair:
    a = draw(st.lists(plain_scalars, max_size=6))
    b = list(a)
    for at in draw(st.lists(st.integers(0, 5), max_size=3)):
        if b:
            b[at % len(b)] = draw(plain_scalars)
    end = draw(st.integers(-2, 2))
    b = b[: len(b) + end] if end < 0 else b + draw(st.lists(plain_scalars, min_size=end, max_size=end))
    if draw(st.booleans()):  # and a value inserted or deleted somewhere: the alignment's own cases
        at = draw(st.integers(0, 6))
        if draw(st.booleans()):
            b.insert(min(at, len(b)), draw(plain_scalars))
        elif b:
            del b[at % len(b)]
    return {"l": a}, {"l": b}


@settings(max_examples=400, deadline=None, derandomize=True)
@given(pair=edited_arrays())
def test_edited_scalar_arrays_agree_with_deepdiff_on_concrete_paths(pair: Pair) -> None:
    """Arrays of scalars with a few elements replaced, appended or dropped at the end, inserted or deleted: the walk
    and deepdiff find the same concrete paths and kinds (which index changed, not only which group)."""
    a, b = pair
    walked = _json_differences(copy.deepcopy(a), copy.deepcopy(b), Compare())
    reference = deepdiff_differences(copy.deepcopy(a), copy.deepcopy(b), Compare())
    assert sorted((d.path, d.kind) for d in walked) == sorted((d.path, d.kind) for d in reference), (a, b)


_DEEPDIFF = tuple(int(part) for part in version("deepdiff").split(".")[:2])


def diff(a: object, b: object, compare: Compare | None = None) -> list[tuple[str, str, str | None, str | None]]:
    return [(d.path, d.kind, d.legacy, d.new) for d in _json_differences(a, b, compare or Compare())]


def test_boolean_is_not_one_inside_arrays() -> None:
    """`[true, 0]` against `[1, false]` is two type changes (deepdiff before 9.2, by Python equality, finds none;
    9.2 finds the walk's)."""
    assert diff({"l": [True, 0]}, {"l": [1, False]}) == [
        ("$.l[0]", "type_changed", "true", "1"),
        ("$.l[1]", "type_changed", "0", "false"),
    ]
    assert diff({"o": {"x": [True]}}, {"o": {"x": [1]}}) == [("$.o.x[0]", "type_changed", "true", "1")]
    by_deepdiff = [
        (d.path, d.kind, d.legacy, d.new) for d in deepdiff_differences({"l": [True]}, {"l": [1]}, Compare())
    ]
    if _DEEPDIFF < (9, 2):
        assert by_deepdiff == []  # the divergence, as it stands there
    else:
        assert by_deepdiff == [("$.l[0]", "type_changed", "true", "1")]  # no divergence left: deepdiff agrees


def test_value_inserted_at_the_front_is_one_addition() -> None:
    """Arrays of scalars are aligned: a value inserted first is one addition, not a change at every index."""
    assert diff([2, 3, 4, 5], [9, 2, 3, 4, 5]) == [("$[0]", "added", None, "9")]
    assert diff(["a", "b", "c"], ["a", "c"]) == [("$[1]", "removed", '"b"', None)]


def test_same_length_arrays_pair_by_index_unless_an_alignment_finds_fewer() -> None:
    """Same-length arrays of scalars: two replaced values are two changes at their indexes; a shift of every value
    (one dropped first, one added last) is one removal and one addition, fewer than three changes."""
    assert diff([2, 3, 4, 5], [2, 9, 4, 8]) == [("$[1]", "changed", "3", "9"), ("$[3]", "changed", "5", "8")]
    assert diff([2, 3, 4], [3, 4, 5]) == [("$[0]", "removed", "2", None), ("$[2]", "added", None, "5")]


def test_values_appended_or_dropped_at_the_end_are_additions_and_removals_there() -> None:
    """Values appended (or dropped) at the end are added (removed) at their own indexes; with a tolerance, a value
    within it of its neighbour does not hide an insertion at the front (`[1.0]` against `[1.0005, 1.0]`)."""
    assert diff([2, 3], [2, 3, 4, 5]) == [("$[2]", "added", None, "4"), ("$[3]", "added", None, "5")]
    assert diff(["a", "b", "c"], ["a"]) == [("$[1]", "removed", '"b"', None), ("$[2]", "removed", '"c"', None)]
    assert diff([1.0], [1.0005, 1.0], Compare(float_tolerance=0.001)) == [("$[0]", "added", None, "1.0005")]


def test_a_value_added_inside_a_replaced_run_is_named_by_its_index_in_new() -> None:
    """`[2.5, 2.5, null]` against `[null, 2.5, 2, 2, null]`: the second 2 is added at new's index 3, where deepdiff
    puts it (the walk named it index 2, an index of neither array's element)."""
    assert diff([2.5, 2.5, None], [None, 2.5, 2, 2, None]) == [
        ("$[0]", "added", None, "null"),
        ("$[1]", "changed", "2.5", "2"),
        ("$[3]", "added", None, "2"),
    ]
    reference = deepdiff_differences([2.5, 2.5, None], [None, 2.5, 2, 2, None], Compare())
    assert sorted((d.path, d.kind) for d in reference) == [("$[0]", "added"), ("$[1]", "changed"), ("$[3]", "added")]


def test_a_removal_and_an_addition_at_one_index_are_one_change_as_in_deepdiff() -> None:
    """Where the alignment deletes a value and inserts another at the same index, that is one change from the old
    value to the new one (whatever their types), as deepdiff reports it; it was a removal and an addition."""
    assert diff([5, None, 2, 4, 3], [None, 2, 3, 3]) == [("$[0]", "removed", "5", None), ("$[3]", "changed", "4", "3")]
    assert diff([None, 2, None], [2, None, 2.5, None, 2]) == [
        ("$[0]", "added", None, "2"),
        ("$[1]", "added", None, "null"),
        ("$[2]", "changed", "null", "2.5"),
    ]
    for a, b in (([5, None, 2, 4, 3], [None, 2, 3, 3]), ([None, 2, None], [2, None, 2.5, None, 2])):
        walked = sorted((d.path, d.kind) for d in _json_differences(a, b, Compare()))
        assert walked == sorted((d.path, d.kind) for d in deepdiff_differences(a, b, Compare()))


def test_arrays_of_objects_pair_by_index() -> None:
    """Objects in an array are compared at the same index; the longer side's extra elements are added/removed."""
    assert diff([{"id": 1}, {"id": 2}], [{"id": 1}, {"id": 3}, {"id": 4}]) == [
        ("$[1].id", "changed", "2", "3"),
        ("$[2]", "added", None, '{"id":4}'),
    ]


def test_reordered_array_is_one_order_difference() -> None:
    """The same elements in another order are one 'order' difference at the array, objects included."""
    assert diff({"l": [{"a": 1}, {"b": 2}]}, {"l": [{"b": 2}, {"a": 1}]}) == [
        ("$.l", "order", '[{"a":1},{"b":2}]', '[{"b":2},{"a":1}]')
    ]


def test_reordered_within_tolerance_is_no_difference() -> None:
    """Elements equal index by index within float_tolerance are equal, whatever their exact order (divergence 2)."""
    assert diff([4, 4.0001], [4.0001, 4], Compare(float_tolerance=0.01)) == []
    assert [d.kind for d in deepdiff_differences([4, 4.0001], [4.0001, 4], Compare(float_tolerance=0.01))] == ["order"]


def test_numbers_and_tolerance() -> None:
    """1 and 1.0 are equal; numbers within float_tolerance are equal; null and "1" are other types."""
    assert diff({"n": 1, "m": [2.0]}, {"n": 1.0, "m": [2]}) == []
    assert diff({"n": 1.0}, {"n": 1.004}, Compare(float_tolerance=0.005)) == []
    assert diff({"n": 1.0}, {"n": 1.006}, Compare(float_tolerance=0.005)) == [("$.n", "changed", "1.0", "1.006")]
    assert diff({"n": None, "s": 1}, {"n": 0, "s": "1"}) == [
        ("$.n", "type_changed", "null", "0"),
        ("$.s", "type_changed", "1", '"1"'),
    ]


def test_order_blind_array_equal_as_multiset_skips_deepdiff() -> None:
    """An order-blind array holding the same elements needs no pairing: no difference, no deepdiff call."""
    calls: list[object] = []

    def unordered(a: list[object], b: list[object], path: object) -> list[Difference]:
        calls.append(path)
        return []

    docs_a, docs_b = {"t": [{"k": 1}, {"k": 2}], "n": 1}, {"t": [{"k": 2}, {"k": 1}], "n": 2}
    found = walk(docs_a, docs_b, float_tolerance=0, ignore_order=("$.t",), unordered=unordered)
    assert [(d.path, d.kind) for d in found] == [("$.n", "changed")]
    assert calls == []
    walk({"t": [1, 2]}, {"t": [1, 3]}, float_tolerance=0, ignore_order=True, unordered=unordered)
    assert calls == [("t",)]


def test_long_arrays_of_scalars_stay_cheap_to_align() -> None:
    """Past ALIGN_BUDGET, only the part between the common head and tail is aligned (one insertion is still one
    addition), and past it there too, elements pair by index: every difference is still counted."""
    long = list(range(2, 3002))
    assert len(long) ** 2 > ALIGN_BUDGET
    assert diff(long, [*long[:1500], 9999, *long[1500:]]) == [("$[1500]", "added", None, "9999")]
    shifted = [9999, *long[:-1]]
    shifted[-1] = -1  # no common head or tail: every element pairs with the one at its index
    found = _json_differences(long, shifted, Compare())
    assert len(found) == 3000
    assert {(d.group, d.kind) for d in found} == {("$[*]", "changed")}


def test_nested_array_in_an_order_blind_array_is_paired_not_replaced() -> None:
    """A third divergence, found by a random probe: an array inside an `ignore_order` array that differs is paired
    with its counterpart (deepdiff on that array alone pairs them) and diffed element by element, where deepdiff
    over the whole document reported the inner array removed and added. Both say the element differs."""
    rules = Compare(ignore_order=("$.a",))
    a: dict[str, object] = {"a": [[{}, False]]}
    b: dict[str, object] = {"a": [[None, {}, False]]}
    assert kinds(_json_differences(copy.deepcopy(a), copy.deepcopy(b), rules)) == {
        ("$.a[*][*]", "added"),
        ("$.a[*][*]", "type_changed"),
    }
    assert kinds(deepdiff_differences(copy.deepcopy(a), copy.deepcopy(b), rules)) == {
        ("$.a[*]", "added"),
        ("$.a[*]", "removed"),
    }
