"""Tests for shadow.judge.compare: what a legacy/new pair's differences are, and when deepdiff runs."""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor

import brotli
import orjson
import pytest

from proxy.config.model import Compare
from proxy.events import Headers, ResponseSnapshot
from shadow.judge import compare
from shadow.judge.compare import MAX_DIFFERENCES, compare_responses, is_fast_match, judge_pair
from shadow.judge.textdiff import MAX_VALUE_CHARS
from shadow.values import Comparison, Difference

JSON = "application/json"


def snap(
    body: bytes | object | None,
    *,
    status: int = 200,
    content_type: str | None = JSON,
    headers: Headers = (),
    complete: bool = True,
    side: str = "legacy",
) -> ResponseSnapshot:
    """A captured response; non-bytes bodies are serialised as JSON."""
    data = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
    all_headers = ((("Content-Type", content_type),) if content_type else ()) + tuple(headers)
    return ResponseSnapshot(
        side="legacy" if side == "legacy" else "new",
        upstream=side,
        status=status,
        headers=all_headers,
        body=data,
        body_complete=complete,
        latency=0.01,
    )


def run(legacy: ResponseSnapshot, new: ResponseSnapshot, rules: Compare | None = None) -> Comparison:
    return compare_responses(legacy, new, rules or Compare())


def by_path(result: Comparison) -> dict[str, Difference]:
    return {d.path: d for d in result.differences}


ORDER = {
    "id": 42,
    "status": "shipped",
    "total": 99.5,
    "paid": True,
    "items": [{"sku": "A", "qty": 1, "updated_at": "t1"}, {"sku": "B", "qty": 2, "updated_at": "t2"}],
    "tags": ["gift", "express"],
    "meta": {"generated_at": "2024-01-01T00:00:00Z"},
}


# --- fast path --------------------------------------------------------------------------------------------------


def test_identical_bodies_match_without_deepdiff() -> None:
    """Byte-equal responses match and deepdiff never runs."""
    result = run(snap(ORDER), snap(ORDER, side="new"))
    assert result.outcome == "match"
    assert result.differences == ()
    assert result.seconds >= 0
    assert result.deepdiff_arrays == ()


def test_semantically_equal_json_matches_without_deepdiff() -> None:
    """Other key order, whitespace and ignored fields still match on the fast path (no deepdiff call)."""
    new_doc = json.loads(json.dumps(ORDER))
    new_doc["meta"]["generated_at"] = "2024-06-06T06:06:06Z"
    for item in new_doc["items"]:
        item["updated_at"] = "later"
    new_body = json.dumps(dict(reversed(list(new_doc.items()))), indent=2).encode()
    rules = Compare(ignore_fields=("$.meta.generated_at", "$.items[*].updated_at"))
    result = run(snap(ORDER), snap(new_body, side="new"), rules)
    assert result.outcome == "match"
    assert result.deepdiff_arrays == ()
    assert is_fast_match(snap(ORDER), snap(new_body, side="new"), rules)


def test_numbers_equal_across_int_and_float() -> None:
    """1 and 1.0 are the same JSON number: no difference."""
    assert run(snap({"n": 1}), snap({"n": 1.0}, side="new")).outcome == "match"


def test_bool_is_not_a_number() -> None:
    """true vs 1 is a type change even though Python says True == 1."""
    result = run(snap({"paid": True, "n": 0}), snap({"paid": 1, "n": False}, side="new"))
    assert result.outcome == "mismatch"
    found = by_path(result)
    assert found["$.paid"].kind == "type_changed"
    assert (found["$.paid"].legacy, found["$.paid"].new) == ("true", "1")
    assert found["$.n"].kind == "type_changed"


def test_mismatch_never_runs_deepdiff() -> None:
    """A differing JSON pair is judged by the structural walk alone: deepdiff does not run."""
    result = run(snap({**ORDER, "id": 43, "items": []}), snap(ORDER, side="new"))
    assert {(d.group, d.kind) for d in result.differences} == {("$.id", "changed"), ("$.items[*]", "added")}
    assert result.deepdiff_arrays == ()


def test_only_a_differing_order_blind_array_runs_deepdiff() -> None:
    """deepdiff runs once for an order-blind array whose elements differ, at that array's path, and not for the
    rest of the document."""
    rules = Compare(ignore_order=("$.items",))
    legacy = {"id": 1, "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}
    new = {"id": 2, "items": [{"sku": "B", "qty": 2}, {"sku": "A", "qty": 5}]}
    result = run(snap(legacy), snap(new, side="new"), rules)
    assert result.deepdiff_arrays == ("$.items",)
    assert [(d.path, d.kind, d.legacy, d.new) for d in result.differences] == [
        ("$.id", "changed", "1", "2"),
        ("$.items[0].qty", "changed", "1", "5"),
    ]


# --- status and headers -----------------------------------------------------------------------------------------


def test_status_difference() -> None:
    """A different status code is one 'status' difference with both codes."""
    result = run(snap(ORDER), snap(ORDER, status=500, side="new"))
    assert result.outcome == "mismatch"
    assert result.differences == (Difference("status", "status", "changed", "200", "500"),)
    assert not is_fast_match(snap(ORDER), snap(ORDER, status=500, side="new"), Compare())


def test_headers_compared_only_on_allow_list() -> None:
    """Allow-listed headers are compared (added/removed/changed); others may differ freely."""
    rules = Compare(headers=frozenset({"content-type", "x-api-version", "cache-control", "x-added"}))
    legacy = snap(ORDER, headers=(("X-Api-Version", "1"), ("Cache-Control", "no-store"), ("X-Free", "a")))
    new = snap(
        ORDER,
        content_type="application/json; charset=iso-8859-1",
        headers=(("x-api-version", "2"), ("X-Added", "yes"), ("X-Free", "b")),
        side="new",
    )
    found = by_path(run(legacy, new, rules))
    assert set(found) == {"header.content-type", "header.x-api-version", "header.cache-control", "header.x-added"}
    assert found["header.x-api-version"] == Difference(
        "header.x-api-version", "header.x-api-version", "changed", '"1"', '"2"'
    )
    assert found["header.cache-control"].kind == "removed"
    assert found["header.cache-control"].new is None
    assert found["header.x-added"].kind == "added"
    assert found["header.x-added"].legacy is None


def test_volatile_headers_ignored_even_when_allow_listed() -> None:
    """Date, Server, ETag, X-Request-Id and friends never produce differences, nor do ignore_headers."""
    rules = Compare(
        headers=frozenset({"content-type", "date", "server", "etag", "x-request-id", "x-mine"}),
        ignore_headers=frozenset({"x-mine"}),
    )
    legacy = snap(
        ORDER, headers=(("Date", "a"), ("Server", "old"), ("ETag", "1"), ("X-Request-Id", "r1"), ("X-Mine", "1"))
    )
    new = snap(
        ORDER,
        headers=(("Date", "b"), ("Server", "new"), ("ETag", "2"), ("X-Request-Id", "r2"), ("X-Mine", "2")),
        side="new",
    )
    assert run(legacy, new, rules).outcome == "match"


def test_set_cookie_values_ignored_but_new_cookie_name_reported() -> None:
    """Cookie values may differ; a cookie only the new side sets is a header.set-cookie difference."""
    legacy = snap(ORDER, headers=(("Set-Cookie", "sid=LEGACYSECRET; Path=/"),))
    same_names = snap(ORDER, headers=(("Set-Cookie", "sid=NEWSECRET; Path=/; HttpOnly"),), side="new")
    assert run(legacy, same_names).outcome == "match"
    extra = snap(ORDER, headers=(("Set-Cookie", "sid=NEWSECRET"), ("Set-Cookie", "tracking=1")), side="new")
    result = run(legacy, extra)
    assert result.differences == (
        Difference("header.set-cookie", "header.set-cookie", "changed", '"sid"', '"sid, tracking"'),
    )
    assert "SECRET" not in repr(result)


# --- JSON bodies ------------------------------------------------------------------------------------------------


def test_json_changed_added_removed_type_changed() -> None:
    """Each kind of field difference gets its kind, concrete path, grouped path and JSON values."""
    new_doc = json.loads(json.dumps(ORDER))
    new_doc["status"] = "delivered"  # changed
    new_doc["carrier"] = "ups"  # added
    del new_doc["paid"]  # removed
    new_doc["id"] = "42"  # type changed
    new_doc["items"][1]["qty"] = 3  # changed inside an array
    found = by_path(run(snap(ORDER), snap(new_doc, side="new")))
    assert found["$.status"] == Difference("$.status", "$.status", "changed", '"shipped"', '"delivered"')
    assert found["$.carrier"] == Difference("$.carrier", "$.carrier", "added", None, '"ups"')
    assert found["$.paid"] == Difference("$.paid", "$.paid", "removed", "true", None)
    assert found["$.id"] == Difference("$.id", "$.id", "type_changed", "42", '"42"')
    assert found["$.items[1].qty"] == Difference("$.items[1].qty", "$.items[*].qty", "changed", "2", "3")
    assert len(found) == 5


def test_array_items_added_and_removed() -> None:
    """Extra or missing array elements are added/removed at their index, grouped with [*]."""
    result = run(snap({"l": [1, 2]}), snap({"l": [1, 2, 3]}, side="new"))
    assert result.differences == (Difference("$.l[2]", "$.l[*]", "added", None, "3"),)
    result = run(snap({"l": [1, 2, 3]}), snap({"l": [1, 2]}, side="new"))
    assert result.differences == (Difference("$.l[2]", "$.l[*]", "removed", "3", None),)


def test_odd_keys_use_bracket_notation() -> None:
    """Keys that are not identifiers are written $['…'] in paths."""
    result = run(snap({"weird key": {"a.b": 1}}), snap({"weird key": {"a.b": 2}}, side="new"))
    assert [d.path for d in result.differences] == ["$['weird key']['a.b']"]


def test_grouped_paths_collapse_indexes() -> None:
    """The same field differing at many array positions shares one group."""
    legacy = {"items": [{"qty": i, "tags": [{"n": i}]} for i in range(5)]}
    new = {"items": [{"qty": i + 1, "tags": [{"n": i + 1}]} for i in range(5)]}
    result = run(snap(legacy), snap(new, side="new"))
    assert {d.group for d in result.differences} == {"$.items[*].qty", "$.items[*].tags[*].n"}
    assert [d.path for d in result.differences][:3] == ["$.items[0].qty", "$.items[0].tags[0].n", "$.items[1].qty"]


def test_reordered_array_is_one_order_difference_by_default() -> None:
    """Without ignore_order, an array with the same elements in another order is one 'order' difference."""
    result = run(snap(ORDER), snap({**ORDER, "tags": ["express", "gift"]}, side="new"))
    assert result.differences == (Difference("$.tags", "$.tags", "order", '["gift","express"]', '["express","gift"]'),)
    assert result.deepdiff_arrays == ()  # pure reordering needs no deepdiff


def test_ignore_order_paths_only_apply_there() -> None:
    """ignore_order as a list of paths makes those arrays order-blind and leaves the others ordered."""
    rules = Compare(ignore_order=("$.tags", "$.items"))
    reordered = {**ORDER, "tags": ["express", "gift"], "items": list(reversed(ORDER["items"]))}  # type: ignore[call-overload]
    matched = run(snap(ORDER), snap(reordered, side="new"), rules)
    assert (matched.outcome, matched.deepdiff_arrays) == ("match", ())
    legacy = {"tags": ["a", "b"], "other": [1, 2]}
    result = run(snap(legacy), snap({"tags": ["b", "a"], "other": [2, 1]}, side="new"), rules)
    assert [(d.path, d.kind) for d in result.differences] == [("$.other", "order")]


def test_ignore_order_path_still_reports_changed_elements() -> None:
    """Inside an order-blind array, a changed element is reported at its field, not as shifted positions."""
    rules = Compare(ignore_order=("$.items",))
    legacy = {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]}
    new = {"items": [{"id": 3, "v": "c"}, {"id": 1, "v": "CHANGED"}, {"id": 2, "v": "b"}]}
    result = run(snap(legacy), snap(new, side="new"), rules)
    assert [(d.group, d.kind, d.legacy, d.new) for d in result.differences] == [
        ("$.items[*].v", "changed", '"a"', '"CHANGED"')
    ]


def test_global_ignore_order_covers_nested_arrays() -> None:
    """ignore_order: true ignores order in every array, nested ones too, and reports repetition changes."""
    legacy = {"a": [1, 2, 3], "b": [{"l": ["x", "y"]}, {"l": []}]}
    new = {"a": [3, 1, 2], "b": [{"l": []}, {"l": ["y", "x"]}]}
    assert run(snap(legacy), snap(new, side="new"), Compare(ignore_order=True)).outcome == "match"
    result = run(snap({"a": [1, 1, 2]}), snap({"a": [1, 2, 2]}, side="new"), Compare(ignore_order=True))
    assert result.outcome == "mismatch"
    assert {d.group for d in result.differences} == {"$.a[*]"}


def test_float_tolerance() -> None:
    """Numbers within float_tolerance match; outside it, or with no tolerance, they differ."""
    legacy, new = snap({"total": 99.5, "n": 3}), snap({"total": 99.5004, "n": 3.0}, side="new")
    assert run(legacy, new, Compare(float_tolerance=0.001)).outcome == "match"
    assert [d.path for d in run(legacy, new).differences] == ["$.total"]
    far = snap({"total": 99.6, "n": 3}, side="new")
    assert [d.path for d in run(legacy, far, Compare(float_tolerance=0.001)).differences] == ["$.total"]


def test_ignore_fields_with_wildcards_hide_differences() -> None:
    """Fields named by ignore_fields ([*] included) are not compared; other fields still are."""
    new_doc = json.loads(json.dumps(ORDER))
    new_doc["items"][0]["updated_at"] = "x"
    new_doc["items"][1]["updated_at"] = "y"
    new_doc["items"][1]["qty"] = 7
    rules = Compare(ignore_fields=("$.items[*].updated_at",))
    result = run(snap(ORDER), snap(new_doc, side="new"), rules)
    assert [d.path for d in result.differences] == ["$.items[1].qty"]


def test_long_values_truncated_as_valid_json() -> None:
    """Values longer than MAX_VALUE_CHARS are cut; long strings stay valid JSON strings ending in '…'."""
    result = run(snap({"s": "a" * 1000, "o": {"k": "v" * 500}}), snap({"s": "b" * 1000, "o": 1}, side="new"))
    found = by_path(result)
    for diff in result.differences:
        for value in (diff.legacy, diff.new):
            assert value is not None
            assert len(value) <= MAX_VALUE_CHARS
    assert json.loads(found["$.s"].legacy or "").endswith("…")
    assert (found["$.o"].legacy or "").endswith("…")


def test_differences_capped_with_note() -> None:
    """More than MAX_DIFFERENCES differences keeps the first ones and says how many were left out."""
    count = MAX_DIFFERENCES + 20
    result = run(snap({f"k{i}": i for i in range(count)}), snap({f"k{i}": -i - 1 for i in range(count)}, side="new"))
    assert len(result.differences) == MAX_DIFFERENCES
    assert result.note == "20 more differences not listed"
    assert result.differences[0].path == "$.k0"
    assert result.differences[9].path == "$.k9"  # numeric order, not k0, k1, k10 ...


def test_invalid_json_falls_back_to_text() -> None:
    """A body labelled JSON that does not parse is compared as text, with a note."""
    result = run(snap({"a": 1}), snap(b"<html>oops</html>", side="new"))
    assert result.outcome == "mismatch"
    assert result.note == "body compared as text: not valid JSON"
    assert [d.path for d in result.differences] == ["body:line 1"]


# --- encodings, text, binary, incomplete --------------------------------------------------------------------------


def test_compressed_bodies_compared_decoded() -> None:
    """gzip, deflate and br bodies are decoded before comparing; Content-Encoding itself is no difference."""
    body = orjson.dumps(ORDER)
    legacy = snap(gzip.compress(body), headers=(("Content-Encoding", "gzip"),))
    for coding, encoded in (("br", brotli.compress(body)), ("deflate", zlib.compress(body)), ("identity", body)):
        new = snap(encoded, headers=(("Content-Encoding", coding),), side="new")
        assert run(legacy, new, Compare(headers=frozenset({"content-type", "content-encoding"}))).outcome == "match"
        assert is_fast_match(legacy, new, Compare())
    changed = snap(
        brotli.compress(orjson.dumps({**ORDER, "id": 43})), headers=(("Content-Encoding", "br"),), side="new"
    )
    assert [d.path for d in run(legacy, changed).differences] == ["$.id"]


def test_undecodable_body_compared_as_bytes() -> None:
    """A corrupt gzip body is compared by digest, with a note saying why."""
    legacy = snap(b"not gzip", headers=(("Content-Encoding", "gzip"),))
    result = run(legacy, snap(ORDER, side="new"))
    assert result.note is not None
    assert result.note.startswith("body compared as bytes")
    assert [d.path for d in result.differences] == ["body"]


def test_binary_bodies_compared_by_digest() -> None:
    """Binary bodies differ as one 'body' difference naming sha256 prefix and size of each side."""
    result = run(
        snap(b"\x89PNG\x00\x01", content_type="image/png"),
        snap(b"\x89PNG\x00\x02\x03", content_type="image/png", side="new"),
    )
    (diff,) = result.differences
    assert (diff.path, diff.group, diff.kind) == ("body", "body", "changed")
    assert diff.legacy is not None
    assert diff.new is not None
    assert json.loads(diff.legacy).startswith("sha256:")
    assert json.loads(diff.legacy).endswith("(6 bytes)")
    assert json.loads(diff.new).endswith("(7 bytes)")
    same = snap(b"\x89PNG", content_type="image/png")
    assert run(same, snap(b"\x89PNG", content_type="image/png", side="new")).outcome == "match"


def test_incomplete_or_missing_body_not_compared() -> None:
    """A cut or uncaptured body is noted instead of compared; status and headers still are."""
    result = run(snap(ORDER), snap(b'{"id": 4', complete=False, side="new"))
    assert result.outcome == "match"
    assert result.note == "body not compared: new body incomplete"
    result = run(snap(None, status=200), snap(ORDER, status=404, side="new"))
    assert result.note == "body not compared: legacy body not captured"
    assert [d.path for d in result.differences] == ["status"]
    assert not is_fast_match(snap(None), snap(None, side="new"), Compare())


def test_empty_bodies_match() -> None:
    """Two empty bodies (HEAD, 204) match."""
    assert (
        run(snap(b"", content_type=None, status=204), snap(b"", content_type=None, status=204, side="new")).outcome
        == "match"
    )


def test_concurrent_comparisons_from_threads_agree() -> None:
    """compare_responses gives the same answers when run from many threads at once."""
    pairs = [
        (snap({"i": i, "tags": ["a", "b"]}), snap({"i": i if i % 2 else -i, "tags": ["b", "a"]}, side="new"))
        for i in range(40)
    ]
    expected = [run(a, b, Compare(ignore_order=("$.tags",))).differences for a, b in pairs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda p: run(p[0], p[1], Compare(ignore_order=("$.tags",))).differences, pairs))
    assert got == expected
    assert expected[1] == ()
    assert [d.path for d in expected[2]] == ["$.i"]


@pytest.mark.parametrize("ignore_order", [False, True, ("$.a",)])
def test_is_fast_match_agrees_with_compare_on_equal_pairs(ignore_order: bool | tuple[str, ...]) -> None:
    """is_fast_match says True exactly for pairs compare_responses calls a match without deepdiff."""
    rules = Compare(ignore_order=ignore_order)
    legacy, new = snap({"a": [1, 2], "b": 1}), snap({"b": 1, "a": [1, 2]}, side="new")
    assert is_fast_match(legacy, new, rules)
    assert not is_fast_match(legacy, snap({"a": [1, 2], "b": 2}, side="new"), rules)


def _pair_side(side: str, status: int, *, error: str | None = None, complete: bool = True) -> ResponseSnapshot:
    body = b"" if error else b'{"a": 1}'
    return ResponseSnapshot(side, side, status, (("Content-Type", "application/json"),), body, complete, 0.01, error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("primary", "candidate", "expected"),
    [
        (_pair_side("legacy", 200), _pair_side("new", 200), ("match", None)),
        (_pair_side("legacy", 200), _pair_side("new", 0, error="timeout"), ("candidate_error", "timeout")),
        (_pair_side("legacy", 200), _pair_side("new", 503), ("candidate_error", "status_503")),
        (_pair_side("legacy", 500), _pair_side("new", 500), ("match", None)),
        (_pair_side("legacy", 0, error="reset"), _pair_side("new", 200), ("skipped", "primary_reset")),
        (_pair_side("legacy", 200, complete=False), _pair_side("new", 200), ("skipped", "response_too_large")),
    ],
)
def test_judge_pair_applies_the_shared_outcome_rules(
    primary: ResponseSnapshot, candidate: ResponseSnapshot, expected: tuple[str, str | None]
) -> None:
    """Live shadowing and replay share one rule set: failed or 5xx-only candidates are errors, broken primaries skip."""
    outcome, reason, _ = judge_pair(primary, candidate, Compare())
    assert (outcome, reason) == expected


# --- exact counting (issue 8 item 2), library warnings (item 16) ----------------------------------------------------


def _rows_body(rows: int, *, value: str, table: bool) -> dict[str, object]:
    doc: dict[str, object] = {
        "rows": [{"id": i, "name": f"row {i}", "value": f"{value}{i}", "seen": i * 2} for i in range(rows)]
    }
    if table:
        doc["table"] = "orders"
    return doc


def test_removed_key_counted_however_many_rows_differ() -> None:
    """100 changed rows plus a removed top-level key: the key is in `fields` as removed, and `total` is exact."""
    legacy = snap(_rows_body(100, value="old", table=True))
    new = snap(_rows_body(100, value="new", table=False), side="new")
    result = run(legacy, new)
    fields = {f.group: f for f in result.fields}
    assert fields["$.table"].kind == "removed"
    assert fields["$.table"].count == 1
    assert fields["$.rows[*].value"].count == 100
    assert result.total == 101
    assert len(result.differences) == MAX_DIFFERENCES
    assert result.note == f"{101 - MAX_DIFFERENCES} more differences not listed"


def test_field_counts_do_not_move_when_other_fields_are_ignored() -> None:
    """Ignoring one field removes only that field's counts; every other field keeps its exact count and kind."""
    legacy = _rows_body(150, value="old", table=True)
    new = _rows_body(150, value="new", table=False)
    for row in new["rows"]:  # type: ignore[attr-defined]
        row["seen"] += 1
    plain = {f.group: (f.kind, f.count) for f in run(snap(legacy), snap(new, side="new")).fields}
    ignoring = {
        f.group: (f.kind, f.count)
        for f in run(snap(legacy), snap(new, side="new"), Compare(ignore_fields=("$.rows[*].seen",))).fields
    }
    assert plain == {
        "$.rows[*].value": ("changed", 150),
        "$.rows[*].seen": ("changed", 150),
        "$.table": ("removed", 1),
    }
    assert ignoring == {"$.rows[*].value": ("changed", 150), "$.table": ("removed", 1)}


def test_many_differences_log_no_library_warning(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A pair with hundreds of differences (deepdiff's old "max number of diffs" warning) logs nothing at WARNING
    and writes nothing to stderr, whether the document is compared in order or order-blind with a tolerance."""
    legacy = {"rows": [{"id": i, "v": i} for i in range(600)], "table": "t"}
    new = {"rows": [{"id": i, "v": -i - 1} for i in range(600)]}
    caplog.set_level(logging.DEBUG)
    for rules in (Compare(), Compare(ignore_order=True, float_tolerance=0.01), Compare(ignore_order=("$.rows",))):
        result = run(snap(legacy), snap(new, side="new"), rules)
        assert {f.group for f in result.fields} >= {"$.table"}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert capfd.readouterr().err == ""


def test_deeply_nested_json_is_compared_as_text_with_a_note() -> None:
    """JSON nested deeper than the walk can follow is compared as text (with a note) instead of failing."""
    depth = 1000
    legacy = ("[" * depth + "1" + "]" * depth).encode()
    new = ("[" * depth + "2" + "]" * depth).encode()
    result = run(snap(legacy), snap(new, side="new"))
    assert result.outcome == "mismatch"
    assert result.note == "body compared as text: JSON nested too deeply"
    shallow = run(snap({"a": [[[[1]]]]}), snap({"a": [[[[2]]]]}, side="new"))
    assert [d.path for d in shallow.differences] == ["$.a[0][0][0][0]"]


def test_large_order_blind_array_is_not_paired_but_fully_counted() -> None:
    """An order-blind array with more removed × added elements than PAIRING_BUDGET reports them removed and added
    (each counted, with a note); a smaller one pairs them into changed fields."""
    rules = Compare(ignore_order=("$.rows",))
    legacy = {"rows": [{"id": i, "v": i} for i in range(200)]}

    def changed(every: int) -> dict[str, object]:
        return {"rows": [{"id": i, "v": i + 1000 if i % every == 0 else i} for i in reversed(range(200))]}

    few = run(snap(legacy), snap(changed(20), side="new"), rules)  # 10 × 10: paired
    assert [(f.group, f.kind, f.count) for f in few.fields] == [("$.rows[*].v", "changed", 10)]
    assert few.note is None
    many = run(snap(legacy), snap(changed(3), side="new"), rules)  # 67 × 67 > PAIRING_BUDGET
    assert compare.PAIRING_BUDGET < 67 * 67
    assert [(f.group, f.kind, f.count) for f in many.fields] == [("$.rows[*]", "mixed", 134)]
    assert many.note == "$.rows: 67 removed and 67 added elements, too many to pair; 34 more differences not listed"
