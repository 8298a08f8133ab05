"""Tests for text bodies compared by line: line signatures (shadow.judge.textlines) and line differences
(shadow.judge.textdiff), alone and through shadow.judge.compare."""

from __future__ import annotations

import pytest

from proxy.config.model import Compare
from shadow.judge.compare import MAX_DIFFERENCES, compare_responses
from shadow.judge.textdiff import MAX_TEXT_LINES, text_differences
from shadow.judge.textlines import MAX_SIGNATURE_CHARS, html_lines, line_signature, text_lines
from shadow.values import Comparison, Difference
from tests.shadow.judge.test_compare import snap

PLAIN = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"


def compare_text(legacy: str, new: str, content_type: str = PLAIN) -> Comparison:
    return compare_responses(
        snap(legacy.encode(), content_type=content_type),
        snap(new.encode(), content_type=content_type, side="new"),
        Compare(),
    )


def diffs(legacy: str, new: str, content_type: str = PLAIN) -> list[tuple[str, str, str]]:
    return [(d.path, d.group, d.kind) for d in compare_text(legacy, new, content_type).differences]


# --- signatures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "signature"),
    [
        ("Queries took 0.53ms", 'text: "Queries took #ms"'),
        ("Queries took 12ms", 'text: "Queries took #ms"'),
        ("Generated at 2026-12-06T12:57:18.123Z by web-3", 'text: "Generated at # by web-#"'),
        ("Date: Sun, 06 Dec 2026 12:57:18 GMT", 'text: "Date: #"'),
        ("request 123e4567-e89b-12d3-a456-426614174000 done", 'text: "request # done"'),
        ("build deadbeef0042 (a3f9b2c1)", 'text: "build # (#)"'),
        ('<meta name="csrf" content="Ab3dE9fG2hJ4kL6mN8pQ0rS2tU4vW6xY">', 'text: "<meta name="csrf" content="#">"'),
        ("<h1>Orders</h1>", 'text: "<h1>Orders</h1>"'),
        ("  total:   1,234.50   EUR", 'text: "total: # EUR"'),
        ("", 'text: ""'),
    ],
)
def test_line_signature_masks_volatile_parts(line: str, signature: str) -> None:
    """Numbers, hex runs, UUIDs, timestamps and nonces become '#'; tag names and words stay; spaces collapse."""
    assert line_signature(line) == signature


def test_line_signature_is_capped() -> None:
    """A long line's signature is cut to MAX_SIGNATURE_CHARS characters of text, ending in '…'."""
    signature = line_signature("word " * 100)
    assert signature.startswith('text: "word word')
    assert len(signature) <= MAX_SIGNATURE_CHARS + len('text: ""')
    assert signature.endswith('…"')


def test_text_lines_ignore_line_endings_and_trailing_space() -> None:
    """CRLF, CR and LF end lines alike; trailing spaces and trailing blank lines are dropped."""
    assert text_lines("a  \r\nb\rc\t\n\n\n", html=False) == ["a", "b", "c"]
    assert text_lines("a\nb", html=False) == ["a", "b"]


def test_html_lines_break_at_block_tags() -> None:
    """HTML served as one long line still yields one line per block element; whitespace runs collapse."""
    page = (
        "<!DOCTYPE html><html><head><title>Orders</title></head><body><h1>Orders</h1><table>"
        "<tr><td>Alice</td>   <td>3</td></tr><tr><td>Bob</td><td>5</td></tr></table>"
        "<p>Hello <b>world</b><br>again</p><footer>Queries\n   took 0.53ms</footer></body></html>"
    )
    assert html_lines(page) == [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        "<title>Orders</title>",
        "</head>",
        "<body>",
        "<h1>Orders</h1>",
        "<table>",
        "<tr><td>Alice</td> <td>3</td></tr>",
        "<tr><td>Bob</td><td>5</td></tr>",
        "</table>",
        "<p>Hello <b>world</b><br>",
        "again</p>",
        "<footer>Queries took 0.53ms</footer>",
        "</body>",
        "</html>",
    ]


def test_html_reformatting_is_no_difference() -> None:
    """The same markup indented differently (or on one line) is a match."""
    one_line = "<ul><li>a</li><li>b</li></ul>"
    indented = "<ul>\r\n  <li>a</li>\r\n  <li>b</li>\r\n</ul>\r\n"
    assert compare_text(one_line, indented, HTML).outcome == "match"
    assert compare_text(one_line, indented.replace("b", "c"), "application/xhtml+xml").outcome == "mismatch"


# --- line differences -------------------------------------------------------------------------------------------


def test_text_bodies_line_diff() -> None:
    """Changed, added and removed lines at their legacy line numbers, grouped by the line's signature."""
    legacy = "<html>\n<h1>Orders</h1>\n<p>3 items</p>\n<footer>v1</footer>\n</html>\n"
    new = "<html>\n<h1>Orders</h1>\n<p>4 items</p>\n<footer>v1</footer>\n<script></script>\n</html>\n"
    result = compare_text(legacy, new)
    assert result.differences == (
        Difference("body:line 3", 'text: "<p># items</p>"', "changed", '"<p>3 items</p>"', '"<p>4 items</p>"'),
        Difference("body:line 5", 'text: "<script></script>"', "added", None, '"<script></script>"'),
    )
    removed = compare_text(new, legacy).differences
    assert [(d.path, d.kind, d.legacy, d.new) for d in removed][1] == (
        "body:line 5",
        "removed",
        '"<script></script>"',
        None,
    )


def test_every_changed_line_counts() -> None:
    """Every changed line is a difference (no cap on hunks): 10 changed lines give 10 differences, counted exactly."""
    legacy = "\n".join(f"line {i}" for i in range(40))
    new = "\n".join(f"line {i}" if i % 4 else f"LINE {i}" for i in range(40))
    result = compare_text(legacy, new)
    assert [d.path for d in result.differences] == [f"body:line {i + 1}" for i in range(0, 40, 4)]
    assert result.note is None
    assert result.total == 10
    assert [(f.group, f.kind, f.count) for f in result.fields] == [('text: "LINE #"', "changed", 10)]


def test_line_endings_and_trailing_space_are_no_difference() -> None:
    """Texts that differ only in line endings or trailing whitespace match."""
    assert compare_text("a\nb\n", "a\r\nb\r\n").outcome == "match"
    assert compare_text("a\nb", "a  \nb\t\n\n").outcome == "match"


def test_volatile_line_pairs_with_its_counterpart_in_a_hunk() -> None:
    """Inside a hunk, lines pair by signature: a volatile footer keeps its group beside a real added line."""
    legacy = "<h1>Orders</h1>\n<p>Queries took 0.53ms</p>\n"
    new = "<h1>Orders</h1>\n<p>Rows: 4</p>\n<p>Queries took 0.61ms</p>\n"
    assert diffs(legacy, new) == [
        ("body:line 2", 'text: "<p>Rows: #</p>"', "added"),
        ("body:line 2", 'text: "<p>Queries took #ms</p>"', "changed"),
    ]


def test_rewritten_line_groups_under_its_new_signature() -> None:
    """A line whose text (not just its volatile part) changed is grouped by the new line: never the volatile
    group it came from, so rewording a volatile line is not hidden as noise."""
    assert diffs("Queries took 0.53ms\n", "Query time: 0.61ms\n") == [
        ("body:line 1", 'text: "Query time: #ms"', "changed")
    ]


def test_same_signature_on_noise_and_candidate_pairs() -> None:
    """legacy↔legacy and legacy↔new pairs that differ only in the volatile part land in the same group."""
    legacy_a = "<p>Hello</p>\n<footer>Queries took 0.53ms</footer>\n"
    legacy_b = "<p>Hello</p>\n<footer>Queries took 0.71ms</footer>\n"
    new = "<p>Hello</p>\n<footer>Queries took 1.2ms</footer>\n"
    assert diffs(legacy_a, legacy_b, HTML) == diffs(legacy_a, new, HTML)


def test_stored_differences_keep_every_group() -> None:
    """Past the storage cap, the stored differences still hold one of every differing group (the rest in order),
    so a real line after 150 volatile ones is stored and the pair is never taken for noise only."""
    rows = [f"row {i} took 0.{i}ms" for i in range(150)]
    legacy = "\n".join([*rows, "Total: 3"])
    new = "\n".join([*(r.replace("took 0.", "took 1.") for r in rows), "Total: three"])
    result = compare_text(legacy, new)
    assert len(result.differences) == MAX_DIFFERENCES
    assert result.total == 151
    assert result.differences[-1] == Difference(
        "body:line 151", 'text: "Total: three"', "changed", '"Total: 3"', '"Total: three"'
    )
    assert [d.path for d in result.differences[:-1]] == [f"body:line {i + 1}" for i in range(MAX_DIFFERENCES - 1)]
    assert result.note == "51 more differences not listed"


def test_huge_text_difference_compares_lines_as_a_set() -> None:
    """Past MAX_TEXT_LINES differing lines the texts are compared as sets of lines (with a note): every differing
    line is still a difference under its own signature, so a real change is never lumped with volatile lines."""
    count = MAX_TEXT_LINES + 10
    legacy = "\n".join(["same"] + [f"row {i} at 0.{i}ms" for i in range(count)] + ["end"])
    new = "\n".join(["same"] + [f"row {i} at 1.{i}ms" for i in range(count)] + ["changed end", "end"])
    result = compare_text(legacy, new)
    assert result.note is not None
    assert result.note.startswith("text too different for a line diff")
    assert result.total == count + 1
    assert {(f.group, f.kind, f.count) for f in result.fields} == {
        ('text: "row # at #ms"', "changed", count),
        ('text: "changed end"', "added", 1),
    }
    assert result.differences[0].path == "body:line 2"


def test_huge_reordered_text_is_an_order_difference() -> None:
    """Past MAX_TEXT_LINES, the same lines in another order are one 'order' difference, not a match."""
    lines = [f"row {i}" for i in range(MAX_TEXT_LINES + 10)]
    result = compare_text("\n".join(lines), "\n".join(reversed(lines)))
    assert [(d.path, d.group, d.kind) for d in result.differences] == [("body:line 1", "text: (line order)", "order")]


def test_text_differences_decode_with_the_charset() -> None:
    """The charset parameter decodes both sides; an unknown charset falls back to UTF-8."""
    notes: list[str] = []
    found = text_differences(
        "café 1".encode("latin-1"), "café 2".encode("latin-1"), "text/plain; charset=latin-1", notes
    )
    assert [(d.group, d.legacy) for d in found] == [('text: "café #"', '"café 1"')]
    assert text_differences(b"a", b"b", "text/plain; charset=nonsense", notes)[0].new == '"b"'


def test_each_side_is_decoded_with_its_own_charset() -> None:
    """A page re-encoded as Latin-1, with that charset declared, is the same text: only the Content-Type header
    differs (the body was decoded with legacy's charset, and read as a garbled changed line)."""
    page = "<p>Café crème</p>\n<p>Prix: 5 €</p>\n".replace("€", "EUR")
    legacy = snap(page.encode("utf-8"), content_type="text/html; charset=utf-8")
    new = snap(page.encode("latin-1"), content_type="text/html; charset=iso-8859-1", side="new")
    result = compare_responses(legacy, new, Compare())
    assert [(d.path, d.kind) for d in result.differences] == [("header.content-type", "changed")]


def test_text_differences_take_new_sides_charset_when_given() -> None:
    """Legacy's charset for legacy, new's for new; without new's, legacy's for both."""
    notes: list[str] = []
    utf8, latin1 = "é".encode(), "é".encode("latin-1")
    assert text_differences(utf8, latin1, "text/plain; charset=utf-8", notes, "text/plain; charset=latin-1") == []
    assert text_differences(utf8, latin1, "text/plain; charset=utf-8", notes)[0].new == '"\ufffd"'


def test_html_tags_in_another_spelling_are_no_difference() -> None:
    """Attribute order, name case, quoting and a self-closing slash are one DOM: no difference between the pages
    (they read as changed lines before)."""
    legacy = '<div class="card" id="c1">\n<IMG SRC="/a.png" alt=\'A\'/>\n<p data-id=7 class=note>Hi</p>\n</div>\n'
    new = '<div id=c1 class=card>\n<img alt="A" src=\'/a.png\'>\n<P class="note" DATA-ID="7">Hi</P>\n</div>\n'
    assert diffs(legacy, new, "text/html; charset=utf-8") == []


def test_a_changed_attribute_value_is_still_a_difference() -> None:
    """Only the spelling is normalised: another value is a changed line, shown in the one spelling."""
    found = compare_text('<p class="a" id="x">Hi</p>', '<p id="x" class="b">Hi</p>', "text/html").differences
    assert [(d.kind, d.legacy, d.new) for d in found] == [
        ("changed", '"<p class=\\"a\\" id=\\"x\\">Hi</p>"', '"<p class=\\"b\\" id=\\"x\\">Hi</p>"')
    ]


def test_a_tag_whose_attributes_cannot_be_read_is_kept_as_it_is() -> None:
    """A stray quote inside a tag: the tag is compared as written, not guessed at."""
    assert html_lines('<p weird"attr class=x>t</p>') == ['<p weird"attr class=x>t</p>']
    assert html_lines("<BR/><br />") == ["<br>", "<br>"]
