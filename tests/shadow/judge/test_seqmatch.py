"""Tests for shadow.judge.seqmatch: its opcodes are difflib's (SequenceMatcher without junk or autojunk) for every
generated pair of short sequences, and long ones go to difflib itself."""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from shadow.judge.seqmatch import SHORT, Opcode, opcodes

# Few distinct values, so that sequences share runs, repeat values and tie for the longest block.
short_lists = st.lists(st.integers(0, 4), max_size=9)


def _difflib(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[Opcode]:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(a=short_lists, b=short_lists)
def test_opcodes_are_difflibs(a: list[int], b: list[int]) -> None:
    """Generated short sequences (repeats and ties included): the same opcodes as difflib's, in the same order."""
    assert opcodes(a, b) == _difflib(a, b)


def test_ties_go_to_the_earliest_block_in_legacy_then_new() -> None:
    """[a, b] against [b, a, c]: both one-element blocks are longest; difflib takes a's first (a[0] = b[1])."""
    found = opcodes(["a", "b"], ["b", "a", "c"])
    assert found == [("insert", 0, 0, 0, 1), ("equal", 0, 1, 1, 2), ("replace", 1, 2, 2, 3)]
    assert found == _difflib(["a", "b"], ["b", "a", "c"])


def test_empty_and_equal_sequences() -> None:
    """No elements: no opcodes; equal sequences: one equal block."""
    assert opcodes([], []) == []
    assert opcodes([1, 2], [1, 2]) == [("equal", 0, 2, 0, 2)]
    assert opcodes([], [1]) == [("insert", 0, 0, 0, 1)]


def test_sequences_past_the_short_bound_are_difflibs_too() -> None:
    """Past SHORT element pairs difflib answers; the result is the same either way."""
    a = [i % 7 for i in range(SHORT)]
    b = [i % 5 for i in range(SHORT // 2)]
    assert len(a) * len(b) > SHORT
    assert opcodes(a, b) == _difflib(a, b)
