"""Tests for shadow.judge.unordered: an order-blind array of scalars that deepdiff would not pair is judged without
it, and gives exactly deepdiff's report (concrete paths, kinds and both values) on generated arrays; arrays it would
pair still go to deepdiff."""

from __future__ import annotations

import json
import random

from deepdiff.diff import CUTOFF_INTERSECTION_FOR_PAIRS_DEFAULT
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config.model import Compare
from proxy.events import ResponseSnapshot
from shadow.judge.compare import compare_responses, deepdiff_report
from shadow.judge.unordered import (
    MATCH_BUDGET,
    PAIRING_CUTOFF,
    matched_elements,
    matched_numbers,
    unpaired_differences,
)
from shadow.values import Difference

# Values whose deepdiff hashes are easy to get wrong: 0, 0.0 and -0.0 (the two floats share a hash), 1 and 1.0 (they
# do not), true and 1, a string that looks like a number, a float past an int's exactness, a long integer.
TRICKY = (0, 0.0, -0.0, 1, 1.0, True, False, None, "", "1", "gift", "express", 2.5, 1e16, 10**16, 2**70, float("inf"))
arrays = st.lists(st.sampled_from(TRICKY), max_size=7)


def _rows(diffs: list[Difference]) -> list[tuple[str, str, str, str | None, str | None]]:
    return sorted((d.path, d.group, d.kind, d.legacy, d.new) for d in diffs)


def _snapshot(side: str, doc: object) -> ResponseSnapshot:
    headers = (("Content-Type", "application/json"),)
    return ResponseSnapshot(
        "legacy" if side == "legacy" else "new", side, 200, headers, json.dumps(doc).encode(), True, 0.01
    )


@settings(max_examples=600, deadline=None, derandomize=True)
@given(a=arrays, b=arrays, pair=st.booleans(), tolerance=st.sampled_from([0.0, 0.001]))
def test_its_report_is_deepdiffs_whenever_it_answers(
    a: list[object], b: list[object], pair: bool, tolerance: float
) -> None:
    """Generated scalar arrays: where the walk answers, its differences equal deepdiff's exactly (values too)."""
    found = unpaired_differences(a, b, ("l",), pair=pair)
    if found is None:
        return
    rules = Compare(ignore_order=True, float_tolerance=tolerance)
    assert _rows(found) == _rows(deepdiff_report(a, b, rules, ("l",), pair=pair))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(a=arrays, extra=st.lists(st.sampled_from(TRICKY), min_size=1, max_size=3), seed=st.randoms())
def test_values_only_added_or_only_removed_never_need_deepdiff(
    a: list[object], extra: list[object], seed: random.Random
) -> None:
    """An array that only gained (or only lost) values, in any order, is always judged without deepdiff."""
    b = [*a, *extra]
    seed.shuffle(b)
    assert unpaired_differences(a, b, ("l",), pair=True) is not None
    assert unpaired_differences(b, a, ("l",), pair=True) is not None


def test_an_enum_list_that_gained_a_value_is_judged_without_deepdiff() -> None:
    """The common case (an order-blind list of flags gained one) is one addition, and no array went to deepdiff."""
    rules = Compare(ignore_order=("$.flags",))
    result = compare_responses(
        _snapshot("legacy", {"flags": ["gift", "express"]}),
        _snapshot("new", {"flags": ["express", "gift", "fragile"]}),
        rules,
    )
    assert [(d.path, d.kind, d.new) for d in result.differences] == [("$.flags[2]", "added", '"fragile"')]
    assert result.deepdiff_arrays == ()


def test_a_replaced_value_still_goes_to_deepdiff_to_be_paired() -> None:
    """One value removed and one added, few against the rest: deepdiff pairs them, so the array goes to it."""
    a, b = ["gift", "express", "fragile"], ["express", "gift", "heavy"]
    assert unpaired_differences(a, b, ("flags",), pair=True) is None
    rules = Compare(ignore_order=("$.flags",))
    result = compare_responses(_snapshot("legacy", {"flags": a}), _snapshot("new", {"flags": b}), rules)
    assert result.deepdiff_arrays == ("$.flags",)


def test_past_the_pairing_share_both_sides_are_reported_unpaired() -> None:
    """Most values replaced (more than deepdiff's pairing share): removals at legacy's indexes, additions at new's."""
    found = unpaired_differences(["a", "b"], ["c", "d"], ("l",), pair=True)
    assert found is not None
    assert _rows(found) == [
        ("$.l[0]", "$.l[*]", "added", None, '"c"'),
        ("$.l[0]", "$.l[*]", "removed", '"a"', None),
        ("$.l[1]", "$.l[*]", "added", None, '"d"'),
        ("$.l[1]", "$.l[*]", "removed", '"b"', None),
    ]


def test_a_repeat_count_change_is_one_change_at_legacys_first_index() -> None:
    """["a", "a", "b"] against ["b", "a"]: one change at $.l[0] from the run of two to the run of one."""
    found = unpaired_differences(["a", "a", "b"], ["b", "a"], ("l",), pair=True)
    assert found is not None
    assert _rows(found) == [("$.l[0]", "$.l[*]", "changed", '["a","a"]', '["a"]')]


def test_hashes_follow_deepdiff_zero_floats_share_one_int_and_float_do_not() -> None:
    """-0.0 is 0.0 (one more of it is a repeat), 1.0 is not 1, true is not 1."""
    repeat = unpaired_differences([0.0], [0.0, -0.0], ("l",), pair=True)
    assert repeat is not None
    assert [(d.path, d.kind) for d in repeat] == [("$.l[0]", "changed")]
    for a, b in (([1], [1, 1.0]), ([1], [1, True])):
        found = unpaired_differences(a, b, ("l",), pair=True)
        assert found is not None
        assert [(d.path, d.kind) for d in found] == [("$.l[1]", "added")]


def test_arrays_with_objects_or_nan_go_to_deepdiff() -> None:
    """Only scalars are judged here, and NaN (unequal to itself, one hash to deepdiff) is left to deepdiff."""
    assert unpaired_differences([{"a": 1}], [{"a": 1}, 2], ("l",), pair=True) is None
    assert unpaired_differences([1.0], [1.0, float("nan")], ("l",), pair=True) is None


def test_the_pairing_share_is_deepdiffs_default() -> None:
    """The share passed to deepdiff and used here is deepdiff's own default: changing one without the other fails."""
    assert PAIRING_CUTOFF == CUTOFF_INTERSECTION_FOR_PAIRS_DEFAULT


def test_floats_that_all_moved_within_tolerance_are_no_difference_in_an_order_blind_array() -> None:
    """Every element within float_tolerance, in another order: a match (deepdiff alone, pairing nothing past its
    share, reported three removed and three added)."""
    rules = Compare(ignore_order=("$.p",), float_tolerance=0.001)
    result = compare_responses(
        _snapshot("legacy", {"p": [1.0, 2.0, 3.0]}), _snapshot("new", {"p": [2.0004, 1.0004, 3.0004]}), rules
    )
    assert (result.outcome, result.differences) == ("match", ())


def test_integers_written_as_floats_are_no_difference_in_an_order_blind_array() -> None:
    """1 and 1.0 are equal in an order-blind array as everywhere else, however many elements changed form."""
    result = compare_responses(
        _snapshot("legacy", {"p": [1, 2, 3]}), _snapshot("new", {"p": [2.0, 1.0, 3.0]}), Compare(ignore_order=True)
    )
    assert (result.outcome, result.differences) == ("match", ())


def test_a_real_change_beside_jittered_numbers_is_the_only_difference() -> None:
    """[1.0, 5.0] against [1.0004, 7.0] within 0.001: only 5.0 → 7.0 is reported, as one change."""
    rules = Compare(ignore_order=("$.p",), float_tolerance=0.001)
    result = compare_responses(_snapshot("legacy", {"p": [1.0, 5.0]}), _snapshot("new", {"p": [1.0004, 7.0]}), rules)
    assert [(d.path, d.kind, d.legacy, d.new) for d in result.differences] == [("$.p[1]", "changed", "5.0", "7.0")]


def test_numbers_are_matched_one_to_one_as_many_as_possible() -> None:
    """Sorted matching pairs every number it can (1.0 with 1.0009, 1.0009 with 1.0018), rewrites only those whose
    form differs, leaves booleans and strings alone, and returns new itself when nothing changes."""
    assert matched_numbers([1.0, 1.0009], [1.0018, 1.0009], 0.001) == [1.0009, 1.0]
    assert matched_numbers([1, "1"], [True, "1", 1.0], 0) == [True, "1", 1]
    same = [1, 2.5, "x"]
    assert matched_numbers([2.5, 1], same, 0) is same
    assert matched_numbers([1.0], [1.0, 1.0005], 0.001) == [1.0, 1.0005]  # one 1.0 on each side: one pair


def test_objects_whose_numbers_changed_form_are_no_difference_in_an_order_blind_array() -> None:
    """An order-blind list of items whose prices all turned from integers into floats, or all moved within the
    tolerance, in another order: a match (deepdiff alone reported every item removed and added)."""
    legacy = _snapshot("legacy", {"items": [{"id": 1, "price": 10}, {"id": 2, "price": 20}]})
    as_floats = _snapshot("new", {"items": [{"id": 2, "price": 20.0}, {"id": 1, "price": 10.0}]})
    jittered = _snapshot("new", {"items": [{"id": 2, "price": 20.0004}, {"id": 1, "price": 9.9996}]})
    assert compare_responses(legacy, as_floats, Compare(ignore_order=("$.items",))).outcome == "match"
    tolerant = Compare(ignore_order=("$.items",), float_tolerance=0.001)
    assert compare_responses(legacy, jittered, tolerant).outcome == "match"


def test_a_real_change_inside_one_object_is_reported_at_its_field() -> None:
    """Beside an item that only changed form, the item whose price really changed is one change at its field."""
    legacy = _snapshot("legacy", {"items": [{"id": 1, "price": 10.0}, {"id": 2, "price": 20.0}]})
    new = _snapshot("new", {"items": [{"id": 2, "price": 20.0004}, {"id": 1, "price": 12.0}]})
    result = compare_responses(legacy, new, Compare(ignore_order=("$.items",), float_tolerance=0.001))
    found = [(d.path, d.kind, d.legacy, d.new) for d in result.differences]
    assert found == [("$.items[0].price", "changed", "10.0", "12.0")]


def test_containers_are_matched_one_to_one_by_the_given_equality_within_the_budget() -> None:
    """Identical elements pair as they are; each other object takes the first equal one of legacy, once; past
    MATCH_BUDGET element pairs nothing is asked."""
    asked: list[tuple[object, object, int]] = []

    def equal(x: object, y: object, index: int) -> bool:
        asked.append((x, y, index))
        return isinstance(x, dict) and isinstance(y, dict) and x["id"] == y["id"]

    a: list[object] = [{"id": 1}, {"id": 2, "v": 1}, {"id": 2, "v": 2}]
    b: list[object] = [{"id": 2, "v": 9}, {"id": 1}, {"id": 2, "v": 8}]
    assert matched_elements(a, b, 0, equal) == [{"id": 2, "v": 1}, {"id": 1}, {"id": 2, "v": 2}]
    assert all(x != {"id": 1} for x, _, _ in asked)  # the identical pair was never compared
    many: list[object] = [{"id": i} for i in range(MATCH_BUDGET)]
    asked.clear()
    assert matched_elements([{"id": -1}, {"id": -2}], many, 0, equal) is many
    assert asked == []
