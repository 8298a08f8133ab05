"""Differences of bodies compared as text (line by line) or as bytes (a fingerprint), and how every difference
value is written: JSON text, cut at MAX_VALUE_CHARS (pure, thread-safe).

Every differing line is one difference, at its legacy line number (`body:line 12`), grouped by its line signature
(`shadow.judge.textlines.line_signature`), so two legacy calls and a legacy/new pair that differ only in a volatile part
of a line land in the same group; lines are first aligned as they are, then, inside each changed hunk, by signature.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter, defaultdict, deque
from collections.abc import Sequence

import orjson

from shadow.judge.normalize import charset
from shadow.judge.textlines import SIGNATURE_PREFIX, is_html, line_signature, respelled, text_lines
from shadow.values import Difference, DiffKind

MAX_VALUE_CHARS = 200  # a Difference value is JSON text of at most this many characters
MAX_TEXT_LINES = 2_000  # differing lines per side past which lines are compared as sets (the line diff is quadratic)
ORDER_GROUP = f"{SIGNATURE_PREFIX}(line order)"  # the same lines in another order, past MAX_TEXT_LINES


def text_differences(
    a: bytes, b: bytes, content_type: str | None, notes: list[str], new_content_type: str | None = None
) -> list[Difference]:
    """Every line that differs between two text bodies (HTML on the lines of its markup), one difference each.

    Each side is decoded with the charset its own Content-Type declares (`new_content_type` for new, legacy's when
    not given), so a page re-encoded in another charset is the same text: the charset change is the Content-Type
    header's difference, not a garbled line of the body."""
    html = is_html(content_type)
    lines_a = text_lines(_decode_text(a, charset(content_type)), html=html, respell=False)
    lines_b = text_lines(_decode_text(b, charset(new_content_type or content_type)), html=html, respell=False)
    if html:
        # HTML tags are compared in one spelling. Lines equal as written at both ends need none (equal lines respell
        # equally), so only the rest is respelled: a page whose footer alone changed costs one line, not every tag.
        head, tail = _common_ends(lines_a, lines_b)
        done: dict[str, str] = {}
        end_a, end_b = len(lines_a) - tail, len(lines_b) - tail
        lines_a = lines_a[:head] + respelled(lines_a[head:end_a], done) + lines_a[end_a:]
        lines_b = lines_b[:head] + respelled(lines_b[head:end_b], done) + lines_b[end_b:]
    if lines_a == lines_b:
        return []
    # The line diff is quadratic at worst: cut the common head and tail first, and past MAX_TEXT_LINES compare the
    # rest as sets of lines (linear), so a page that is too different still names every line that differs.
    head, tail = _common_ends(lines_a, lines_b)
    mid_a, mid_b = lines_a[head : len(lines_a) - tail], lines_b[head : len(lines_b) - tail]
    if max(len(mid_a), len(mid_b)) > MAX_TEXT_LINES:
        counts = f"{len(mid_a)} vs {len(mid_b)} differing lines"
        notes.append(f"text too different for a line diff ({counts}): lines compared as a set")
        return _unordered_differences(mid_a, mid_b, head)
    out: list[Difference] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False).get_opcodes():
        if tag != "equal":
            out.extend(_hunk_differences(mid_a[i1:i2], mid_b[j1:j2], head + i1))
    return out


def _hunk_differences(old: Sequence[str], new: Sequence[str], first: int) -> list[Difference]:
    """The differences of one changed hunk (legacy lines from index `first`), its lines paired by signature.

    A legacy line pairs with a new line of the same signature (a volatile part changed: grouped by that signature,
    as legacy↔legacy pairs are); other lines pair in order as rewritten lines, grouped by the new line's signature
    (so a reworded volatile line is not hidden in the volatile group); the rest are removed or added.
    """
    sig_old, sig_new = [line_signature(x) for x in old], [line_signature(x) for x in new]
    out: list[Difference] = []
    for tag, i1, i2, j1, j2 in _opcodes(sig_old, sig_new):
        paired = min(i2 - i1, j2 - j1) if tag in ("equal", "replace") else 0
        for k in range(paired):
            i, j = i1 + k, j1 + k
            if old[i] != new[j]:
                out.append(_line_difference(first + i, sig_new[j], "changed", old[i], new[j]))
        out.extend(_line_difference(first + i, sig_old[i], "removed", old[i], None) for i in range(i1 + paired, i2))
        out.extend(_line_difference(first + i2, sig_new[j], "added", None, new[j]) for j in range(j1 + paired, j2))
    return out


def _common_ends(a: Sequence[str], b: Sequence[str]) -> tuple[int, int]:
    """How many items the two sequences share at their start, and then at their end."""
    shortest = min(len(a), len(b))
    head = 0
    while head < shortest and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shortest - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return head, tail


def _opcodes(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib opcodes of two sequences, their common ends taken first: linear when only volatile parts changed
    (every signature equal), where the matcher alone is quadratic on so many equal items."""
    head, tail = _common_ends(a, b)
    ops = [("equal", 0, head, 0, head)] if head else []
    middle = difflib.SequenceMatcher(None, a[head : len(a) - tail], b[head : len(b) - tail], autojunk=False)
    ops.extend((tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle.get_opcodes())
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    return ops


def _unordered_differences(old: Sequence[str], new: Sequence[str], first: int) -> list[Difference]:
    """`_hunk_differences` for texts too long to align: lines compared as multisets, then paired by signature."""
    left_old, left_new = _unmatched(old, new), _unmatched(new, old)
    if not left_old and not left_new:
        return [Difference(f"body:line {first + 1}", ORDER_GROUP, "order", render_value(old[0]), render_value(new[0]))]
    waiting: defaultdict[str, deque[int]] = defaultdict(deque)
    for j in left_new:
        waiting[line_signature(new[j])].append(j)
    out: list[Difference] = []
    for i in left_old:
        signature = line_signature(old[i])
        if waiting[signature]:
            j = waiting[signature].popleft()
            out.append(_line_difference(first + i, signature, "changed", old[i], new[j]))
        else:
            out.append(_line_difference(first + i, signature, "removed", old[i], None))
    out.extend(
        _line_difference(first + min(j, len(old)), signature, "added", None, new[j])
        for signature, rest in waiting.items()
        for j in rest
    )
    return out


def _unmatched(lines: Sequence[str], other: Sequence[str]) -> list[int]:
    """Indexes of `lines` left over once each line of `other` has taken one equal line."""
    available = Counter(other)
    out = []
    for i, line in enumerate(lines):
        if available[line] > 0:
            available[line] -= 1
        else:
            out.append(i)
    return out


def _line_difference(index: int, group: str, kind: DiffKind, legacy: str | None, new: str | None) -> Difference:
    return Difference(f"body:line {index + 1}", group, kind, render_optional(legacy), render_optional(new))


def _decode_text(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")


def binary_differences(a: bytes, b: bytes) -> list[Difference]:
    if a == b:
        return []
    return [Difference("body", "body", "changed", render_value(_fingerprint(a)), render_value(_fingerprint(b)))]


def _fingerprint(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]}… ({len(data)} bytes)"


def _dumps(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits from the json fallback
        return json.dumps(value, ensure_ascii=False)


def render_value(value: object) -> str:
    """JSON text of `value`, at most MAX_VALUE_CHARS; long strings stay valid JSON strings ending in '…'."""
    text = _dumps(value)
    if len(text) <= MAX_VALUE_CHARS:
        return text
    if isinstance(value, str):
        keep = MAX_VALUE_CHARS - 3
        while keep > 0:
            text = _dumps(value[:keep] + "…")
            if len(text) <= MAX_VALUE_CHARS:
                return text
            keep -= max(1, len(text) - MAX_VALUE_CHARS)
    return text[: MAX_VALUE_CHARS - 1] + "…"


def render_optional(value: str | None) -> str | None:
    return None if value is None else render_value(value)
