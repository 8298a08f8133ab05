"""A reviewer's view of two response bodies: a JSON diff with the differing paths highlighted, folded when large.

JSON bodies are walked side by side along the stored differences' concrete paths: a differing value is shown as a
red `-` line (legacy) and a green `+` line (new); the containers leading to it are opened; everything else is shown
as context, or, when the body is large, folded (`{…}`, `[… 40 items]`, `… 12 more`). Text bodies get a unified line
diff; other bodies a size line. Returns rich `Text`; printing is the CLI's job.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.text import Text

from shadow.jsonpath import BadPath, compile_path
from shadow.model import StoredBody
from shadow.normalize import UndecodableBody, body_kind, charset, decode_body, header_value, parse_json
from shadow.textlines import is_html, text_lines

FOLD_LINES = 40  # a body whose pretty JSON is longer than this is folded around the differing paths
SHOWN_VALUE_LINES = 12  # lines of one differing value shown before "… N more lines"
SMALL_OBJECT = 8  # objects with at most this many keys show their unchanged scalar keys when folded
TEXT_DIFF_LINES = 200

Steps = tuple[str | int, ...]
Headers = tuple[tuple[str, str], ...]
_ABSENT = object()  # a key or index one side does not have

_STYLE = {"-": "red", "+": "green", " ": "", "~": "dim"}


@dataclass(frozen=True, slots=True)
class _Line:
    depth: int
    mark: str  # "-" legacy only, "+" new only, " " unchanged, "~" folded
    text: str
    key: str = ""  # "name": prefix, highlighted on differing lines


def body_diff(
    legacy: StoredBody | None,
    new: StoredBody | None,
    legacy_headers: Headers,
    new_headers: Headers,
    paths: Iterable[str],
    *,
    fold: bool | None = None,
) -> Text:
    """The diff view of two stored bodies; `fold` None folds only bodies longer than FOLD_LINES lines."""
    if legacy is None and new is None:
        return Text("(no bodies stored for this exchange: matching exchanges keep them only for a sample)", "dim")
    notes = [
        f"{side} body truncated at {len(b.data)} of {b.length} bytes"
        for side, b in (("legacy", legacy), ("new", new))
        if b is not None and b.truncated
    ]
    kinds = {body_kind(header_value(h, "content-type")) for h in (legacy_headers, new_headers)}
    left, right = _decoded(legacy, legacy_headers), _decoded(new, new_headers)
    out = Text()
    if kinds == {"json"} and not notes:
        docs = _parse(left), _parse(right)
        if docs[0] is not _ABSENT or docs[1] is not _ABSENT:
            out.append_text(json_diff(docs[0], docs[1], paths, fold=fold))
            return out
    if "binary" in kinds:
        out.append_text(_size_line(left, right))
    else:
        content_type = header_value(legacy_headers, "content-type")
        encoding = charset(content_type)
        out.append_text(text_diff(_text(left, encoding), _text(right, encoding), html=is_html(content_type)))
    for note in notes:
        out.append(f"\n({note})", "yellow")
    return out


def json_diff(legacy: object, new: object, paths: Iterable[str], *, fold: bool | None = None) -> Text:
    """Two JSON documents as one indented view; `paths` are concrete difference paths like `$.items[3].qty`.

    Both are parsed documents (None is JSON null).
    """
    differing: set[Steps] = set()
    for p in paths:
        if p.startswith("$"):
            try:
                steps = compile_path(p)
            except BadPath:
                continue
            if all(isinstance(s, str | int) for s in steps):
                differing.add(tuple(s for s in steps if isinstance(s, str | int)))
    if legacy is _ABSENT or new is _ABSENT:
        differing.add(())  # one side has no document at all: the whole body differs
    ancestors = {d[:i] for d in differing for i in range(len(d))}
    if fold is None:
        fold = max(_pretty_lines(legacy), _pretty_lines(new)) > FOLD_LINES
    lines: list[_Line] = []
    _walk(legacy, new, (), "", 0, differing, ancestors, fold, lines)
    return _to_text(lines)


def text_diff(legacy: str, new: str, *, html: bool = False) -> Text:
    """A unified line diff (at most TEXT_DIFF_LINES lines), coloured, of the lines the comparison used (so HTML
    shows one line per block element, and `body:line N` is line N here)."""
    lines_a, lines_b = text_lines(legacy, html=html), text_lines(new, html=html)
    diff = list(difflib.unified_diff(lines_a, lines_b, "legacy", "new", lineterm="", n=2))
    if not diff:
        return Text("(bodies are equal as text)", "dim")
    out = Text()
    for line in diff[:TEXT_DIFF_LINES]:
        style = "bold" if line.startswith(("---", "+++")) else "cyan" if line.startswith("@@") else ""
        if not style:
            style = _STYLE.get(line[:1], "")
        out.append(line + "\n", style)
    if len(diff) > TEXT_DIFF_LINES:
        out.append(f"… {len(diff) - TEXT_DIFF_LINES} more lines\n", "dim")
    return out


# --- the JSON walk ----------------------------------------------------------------------------------------------


def _walk(
    a: object,
    b: object,
    path: Steps,
    key: str,
    depth: int,
    differing: set[Steps],
    ancestors: set[Steps],
    fold: bool,
    out: list[_Line],
) -> None:
    if path in differing or (path in ancestors and type(a) is not type(b)):
        for mark, value in (("-", a), ("+", b)):
            if value is not _ABSENT:
                _value_lines(value, key, depth, mark, out)
        return
    if path in ancestors and isinstance(a, dict) and isinstance(b, dict):
        out.append(_Line(depth, " ", "{", key))
        keys = [*a, *(k for k in b if k not in a)]
        children = [(k, a.get(k, _ABSENT), b.get(k, _ABSENT), f"{json.dumps(k)}: ") for k in keys]
        _children(children, path, depth, differing, ancestors, fold, out, small=len(keys) <= SMALL_OBJECT)
        out.append(_Line(depth, " ", "}"))
        return
    if path in ancestors and isinstance(a, list) and isinstance(b, list):
        out.append(_Line(depth, " ", "[", key))
        n = max(len(a), len(b))
        items = [(i, a[i] if i < len(a) else _ABSENT, b[i] if i < len(b) else _ABSENT, "") for i in range(n)]
        _children(items, path, depth, differing, ancestors, fold, out, small=False)
        out.append(_Line(depth, " ", "]"))
        return
    value = a if a is not _ABSENT else b
    if fold and isinstance(value, dict | list):
        out.append(_Line(depth, "~", _folded(value), key))
    else:
        _value_lines(value, key, depth, " ", out)


def _children(
    children: Sequence[tuple[str | int, object, object, str]],
    path: Steps,
    depth: int,
    differing: set[Steps],
    ancestors: set[Steps],
    fold: bool,
    out: list[_Line],
    *,
    small: bool,
) -> None:
    """Open the children on a differing path. When folding, a small object shows its other keys (containers as one
    `{… N keys}` line); arrays and larger objects collapse runs of unchanged children into `… N more`."""
    hidden = 0
    for step, a, b, key in children:
        child = (*path, step)
        on_path = child in differing or child in ancestors
        if fold and not on_path and not small:
            hidden += 1
            continue
        if hidden:
            out.append(_Line(depth + 1, "~", f"… {hidden} more"))
            hidden = 0
        _walk(a, b, child, key, depth + 1, differing, ancestors, fold, out)
    if hidden:
        out.append(_Line(depth + 1, "~", f"… {hidden} more"))


def _value_lines(value: object, key: str, depth: int, mark: str, out: list[_Line]) -> None:
    lines = json.dumps(value, indent=2, ensure_ascii=False).splitlines()
    limit = SHOWN_VALUE_LINES if mark != " " else len(lines)
    out.append(_Line(depth, mark, lines[0], key))
    for line in lines[1:limit]:
        out.append(_Line(depth, mark, line))
    if len(lines) > limit:
        out.append(_Line(depth, mark, f"… {len(lines) - limit} more lines"))


def _folded(value: dict[object, object] | list[object]) -> str:
    if isinstance(value, dict):
        return f"{{… {_count(len(value), 'key')}}}" if value else "{}"
    return f"[… {_count(len(value), 'item')}]" if value else "[]"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _to_text(lines: list[_Line]) -> Text:
    out = Text()
    for line in lines:
        style = _STYLE[line.mark]
        out.append(f"{line.mark if line.mark in '+-' else ' '} {'  ' * line.depth}", style)
        if line.key:
            out.append(line.key, f"bold {style}" if line.mark in "+-" else style or "bright_blue")
        out.append(line.text + "\n", style)
    out.rstrip()
    return out


def _pretty_lines(doc: object) -> int:
    return 0 if doc is _ABSENT else json.dumps(doc, indent=2).count("\n") + 1


# --- bodies -----------------------------------------------------------------------------------------------------


def _decoded(body: StoredBody | None, headers: Headers) -> bytes | None:
    if body is None:
        return None
    try:
        return decode_body(headers, body.data)
    except UndecodableBody:
        return body.data


def _parse(data: bytes | None) -> object:
    if not data:
        return _ABSENT
    try:
        return parse_json(data)
    except ValueError:
        return _ABSENT


def _text(data: bytes | None, encoding: str) -> str:
    if data is None:
        return ""
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _size_line(a: bytes | None, b: bytes | None) -> Text:
    def size(d: bytes | None) -> str:
        return "absent" if d is None else f"{len(d)} bytes"

    return Text(f"binary bodies: legacy {size(a)}, new {size(b)}", "dim")
