"""Differences of bodies compared as text (a line diff) or as bytes (a fingerprint), and how every difference value
is written: JSON text, cut at MAX_VALUE_CHARS (pure, thread-safe)."""

from __future__ import annotations

import difflib
import hashlib
import json

import orjson

from shadow.model import Difference, DiffKind

MAX_VALUE_CHARS = 200  # a Difference value is JSON text of at most this many characters
MAX_TEXT_HUNKS = 5
MAX_TEXT_LINES = 2_000  # differing lines per side past which no line diff is attempted (it is quadratic)


def text_differences(a: bytes, b: bytes, encoding: str, notes: list[str]) -> list[Difference]:
    text_a, text_b = _decode_text(a, encoding), _decode_text(b, encoding)
    lines_a, lines_b = text_a.splitlines(), text_b.splitlines()
    if lines_a == lines_b:
        # Only line endings (or a final newline) differ: show where the texts part.
        at = next(
            (i for i, (x, y) in enumerate(zip(text_a, text_b, strict=False)) if x != y), min(len(text_a), len(text_b))
        )
        start = max(0, at - 40)
        return [
            Difference(
                "body", "body", "changed", render_value(text_a[start : at + 80]), render_value(text_b[start : at + 80])
            )
        ]
    # The line diff is quadratic at worst: cut the common head and tail first, and give up past MAX_TEXT_LINES.
    head = 0
    while head < min(len(lines_a), len(lines_b)) and lines_a[head] == lines_b[head]:
        head += 1
    tail = 0
    while tail < min(len(lines_a), len(lines_b)) - head and lines_a[-1 - tail] == lines_b[-1 - tail]:
        tail += 1
    mid_a, mid_b = lines_a[head : len(lines_a) - tail], lines_b[head : len(lines_b) - tail]
    if max(len(mid_a), len(mid_b)) > MAX_TEXT_LINES:
        notes.append(f"text too different for a line diff ({len(mid_a)} vs {len(mid_b)} differing lines)")
        legacy, new = "\n".join(mid_a[:3]), "\n".join(mid_b[:3])
        return [Difference(f"body:line {head + 1}", "body", "changed", render_value(legacy), render_value(new))]
    hunks = [op for op in difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(hunks) > MAX_TEXT_HUNKS:
        notes.append(f"{len(hunks) - MAX_TEXT_HUNKS} more changed text hunks not listed")
    out = []
    for tag, i1, i2, j1, j2 in hunks[:MAX_TEXT_HUNKS]:
        kind: DiffKind = "added" if tag == "insert" else "removed" if tag == "delete" else "changed"
        legacy_text = None if kind == "added" else render_value("\n".join(mid_a[i1:i2]))
        new_text = None if kind == "removed" else render_value("\n".join(mid_b[j1:j2]))
        out.append(Difference(f"body:line {head + i1 + 1}", "body", kind, legacy_text, new_text))
    return out


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
