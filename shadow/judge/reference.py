"""The reference the structural walk is checked against (tests/shadow/judge/test_jsondiff.py) and measured against
(benchmarks.compare_bench): the same differences as `shadow.judge.compare`'s walk, from deepdiff over the whole
documents. Not used to judge live pairs.

The walk's rules that deepdiff does not have are applied to the documents first, each from its one home: an array
that differs only in order is one "order" difference, and in order-blind arrays elements equal by the JSON rules are
one element (`shadow.judge.unordered.matched_elements`, with two elements judged by deepdiff here).
"""

from __future__ import annotations

from proxy.config.model import Compare
from shadow.judge.compare import deepdiff_report
from shadow.judge.jsonpath import format_path, group_path, is_order_insensitive
from shadow.judge.normalize import canonical_json
from shadow.judge.textdiff import render_value
from shadow.judge.unordered import matched_elements
from shadow.values import Difference


def deepdiff_differences(doc_a: object, doc_b: object, rules: Compare) -> list[Difference]:
    """The same differences as `compare._json_differences`, from deepdiff over the whole documents."""
    order_diffs: list[Difference] = []
    # Arrays that hold the same elements in another order become one "order" difference (and legacy's order, so
    # deepdiff does not also report every shifted element); order-blind arrays get the walk's number matching.
    doc_b = _take_order(doc_a, doc_b, [], rules, order_diffs)
    if canonical_json(doc_a) == canonical_json(doc_b):
        return order_diffs
    return order_diffs + deepdiff_report(doc_a, doc_b, rules)


def _take_order(a: object, b: object, path: list[str | int], rules: Compare, found: list[Difference]) -> object:
    """`b` with arrays that differ from `a` only in order replaced by `a`'s, recording an "order" difference, and
    with the elements of order-blind arrays that equal `a`'s written as `a`'s (`unordered.matched_elements`, as the
    walk does, judging two elements by deepdiff here)."""
    ignore_order = rules.ignore_order
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, object] | None = None
        for key in a.keys() & b.keys():
            child = _take_order(a[key], b[key], [*path, key], rules, found)
            if child is not b[key]:
                out = dict(b) if out is None else out
                out[key] = child
        return b if out is None else out
    if isinstance(a, list) and isinstance(b, list):
        if is_order_insensitive(path, ignore_order):
            return matched_elements(
                a, b, rules.float_tolerance, lambda x, y, i: not deepdiff_report(x, y, rules, (*path, i))
            )
        if len(a) == len(b) and a != b and sorted(map(canonical_json, a)) == sorted(map(canonical_json, b)):
            concrete = format_path(path)
            found.append(Difference(concrete, group_path(concrete), "order", render_value(a), render_value(b)))
            return a
        items = [_take_order(x, y, [*path, i], rules, found) for i, (x, y) in enumerate(zip(a, b, strict=False))]
        if all(x is y for x, y in zip(items, b, strict=False)):
            return b
        return items + b[len(items) :]
    return b
