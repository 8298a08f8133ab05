"""reports.bodydiff: the JSON diff view of `diffs show`, folded around the differing paths when bodies are large."""

from __future__ import annotations

import gzip
import json

from reports.bodydiff import FULL_HINT, SHOWN_DIFFERING_ITEMS, body_diff, json_diff, shorten, text_diff
from shadow.values import StoredBody

JSON = (("content-type", "application/json"),)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_changed_removed_and_added_fields_are_marked() -> None:
    """A changed value shows as - legacy / + new; a removed key only -, an added key only +."""
    out = _lines(json_diff({"a": 1, "phone": "1", "b": 2}, {"a": 2, "b": 2, "phone_number": "1"},
                           ["$.a", "$.phone", "$.phone_number"]).plain)  # fmt: skip
    assert '-   "a": 1' in out
    assert '+   "a": 2' in out
    assert '-   "phone": "1"' in out
    assert '+   "phone_number": "1"' in out
    assert '    "b": 2' in out


def test_large_bodies_fold_around_the_differing_path() -> None:
    """Only the subtree of the difference is opened; long arrays and other objects are elided with counts."""
    legacy = {"items": [{"sku": i, "price": 1.0, "tags": ["x"] * 5} for i in range(100)], "meta": {"page": 1}}
    new = json.loads(json.dumps(legacy))
    new["items"][42]["price"] = 1.5
    out = _lines(json_diff(legacy, new, ["$.items[42].price"]).plain)
    assert len(out) < 20
    assert "      … 42 more" in out
    assert "      … 57 more" in out
    assert '-       "price": 1.0' in out
    assert '+       "price": 1.5' in out
    assert '        "tags": [… 5 items]' in out
    assert '    "meta": {… 1 key}' in out


def test_small_bodies_are_shown_whole_unless_folding_is_forced() -> None:
    """Under FOLD_LINES the whole document is shown; fold=True folds it anyway."""
    legacy, new = {"a": {"b": [1, 2]}, "c": 1}, {"a": {"b": [1, 2]}, "c": 2}
    assert "1," in json_diff(legacy, new, ["$.c"]).plain
    assert '"a": {… 1 key}' in json_diff(legacy, new, ["$.c"], fold=True).plain


def test_gzip_bodies_are_decoded_and_text_bodies_line_diffed() -> None:
    """Stored gzip JSON is decoded before diffing; text bodies get a unified diff."""
    gz = (*JSON, ("content-encoding", "gzip"))
    legacy = StoredBody(gzip.compress(b'{"a": 1}'), 30, False)
    new = StoredBody(gzip.compress(b'{"a": 2}'), 30, False)
    assert '+   "a": 2' in _lines(body_diff(legacy, new, gz, gz, ["$.a"]).plain)
    diff = text_diff("one\ntwo\n", "one\nthree\n").plain
    assert "-two" in diff
    assert "+three" in diff


def test_missing_and_truncated_bodies_are_explained() -> None:
    """No stored bodies says why; a truncated JSON body falls back to a text diff with a note."""
    assert "no bodies stored" in body_diff(None, None, JSON, JSON, []).plain
    cut = StoredBody(b'{"a": [1, 2', 5000, True)
    whole = StoredBody(b'{"a": [1, 3]}', 13, False)
    out = body_diff(cut, whole, JSON, JSON, ["$.a[1]"]).plain
    assert "legacy body truncated at 11 of 5000 bytes" in out


def test_root_type_change_is_both_bodies_minus_and_plus() -> None:
    """A document that changed from a list to an object (path `$`) is the legacy list in - lines, the new object in
    + lines, and no unchanged context."""
    out = _lines(json_diff([{"id": 1}], {"items": [{"id": 1}]}, ["$"]).plain)
    assert out[0] == "- ["
    assert "+ {" in out
    assert '+   "items": [' in out
    assert all(line[:1] in "-+" for line in out)


def test_removed_key_missing_from_the_stored_paths_is_still_removed() -> None:
    """A key only legacy has is a - line even when the (capped) stored paths do not name it; unstored value changes
    are not context when the list is known to be incomplete."""
    legacy, new = {"a": 1, "b": 1, "table": "orders"}, {"a": 2, "b": 2}
    out = _lines(json_diff(legacy, new, ["$.a"]).plain)
    assert '-   "table": "orders"' in out
    assert '    "b": 1' in out  # the stored list is complete: b is unchanged context
    out = _lines(json_diff(legacy, new, ["$.a"], complete=False).plain)
    assert '-   "b": 1' in out
    assert '+   "b": 2' in out


def test_folded_arrays_open_a_few_differing_items_and_count_the_rest() -> None:
    """Past SHOWN_DIFFERING_ITEMS, differing items are counted as differing (not as unchanged), the removed key
    after them is shown, and the view ends with the --full hint; fold=False shows every item."""
    legacy = {"rows": [{"id": i, "p": i} for i in range(150)], "table": "t"}
    new = {"rows": [{"id": i, "p": i + 1} for i in range(150)]}
    paths = [f"$.rows[{i}].p" for i in range(100)]
    out = _lines(json_diff(legacy, new, paths, complete=False).plain)
    assert len(out) < 60
    assert f"      … {150 - SHOWN_DIFFERING_ITEMS} more ({150 - SHOWN_DIFFERING_ITEMS} differ)" in out
    assert '-   "table": "t"' in out
    assert out[-1] == FULL_HINT
    full = json_diff(legacy, new, paths, fold=False).plain
    assert '"id": 149' in full
    assert FULL_HINT not in full


def test_long_keys_paths_and_lines_are_shortened_in_the_middle() -> None:
    """`shorten` keeps the start and more of the end; long keys and text lines are shortened unless shown whole."""
    assert shorten("abcdef", 10) == "abcdef"
    cut = shorten("$." + "k" * 5000 + ".leaf", 60)
    assert len(cut) == 60
    assert cut.startswith("$.kkk")
    assert cut.endswith("kk.leaf")
    assert "…" in cut
    key = "x" * 5000
    assert key not in json_diff({key: 1}, {key: 2}, [f"$.{key}"]).plain
    assert key in json_diff({key: 1}, {key: 2}, [f"$.{key}"], fold=False).plain
    assert "y" * 5000 not in text_diff("a\n" + "y" * 5000, "a\nz").plain
    assert "y" * 5000 in text_diff("a\n" + "y" * 5000, "a\nz", full=True).plain
