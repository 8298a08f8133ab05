"""A reviewer's view of two response bodies: a JSON diff with the differing paths highlighted, folded when large.

JSON bodies are walked side by side along the stored differences' concrete paths, plus what the documents show by
themselves (a key on one side only, a changed JSON type, the whole document included): a differing value is shown
as a red `-` line (legacy) and a green `+` line (new); the containers leading to it are opened; everything else is
shown as context, or, when the body is large, folded (`{…}`, `[… 40 items]`, `… 12 more`, `… 145 more (145
differ)`), with long keys and lines shortened in the middle. Text bodies get a unified line diff; other bodies a
size line. Returns rich `Text`; printing is the CLI's job.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.text import Text

from shadow.judge.jsonpath import BadPath, compile_path
from shadow.judge.normalize import UndecodableBody, body_kind, charset, decode_body, header_value, parse_json
from shadow.judge.textlines import is_html, text_lines
from shadow.values import StoredBody

FOLD_LINES = 40  # a body whose pretty JSON is longer than this is folded around the differing paths
SHOWN_VALUE_LINES = 12  # lines of one differing value shown before "… N more lines"
SMALL_OBJECT = 8  # objects with at most this many keys show their unchanged scalar keys when folded
SHOWN_DIFFERING_ITEMS = 5  # differing items opened per array when folded; the rest are counted
SHOWN_DIFFERING_KEYS = 20  # differing keys opened per object when folded; the rest are counted
MAX_BODY_LINES = 300  # lines of a folded JSON view, whatever its nesting
MAX_KEY_CHARS = 60  # longer keys (and paths in tables) are shortened in the middle, keeping the end
MAX_LINE_CHARS = 200  # longer lines are shortened in the middle unless shown in full
TEXT_DIFF_LINES = 200
FULL_HINT = "(folded around the differences: --full shows whole bodies)"

Steps = tuple[str | int, ...]
Headers = tuple[tuple[str, str], ...]
_ABSENT = object()  # a key or index one side does not have
_UNLISTED = re.compile(r"(\d+) more differences not listed")  # shadow.judge.compare's note when it capped the list

_STYLE = {"-": "red", "+": "green", " ": "", "~": "dim"}


@dataclass(frozen=True, slots=True)
class _Line:
    depth: int
    mark: str  # "-" legacy only, "+" new only, " " unchanged, "~" folded
    text: str
    key: str = ""  # "name": prefix, highlighted on differing lines


@dataclass(frozen=True, slots=True)
class _Walk:
    """What one JSON walk knows: the paths to open and how much to show."""

    differing: set[Steps]  # shown as - / +
    ancestors: set[Steps]  # opened, to reach a differing path
    structural: set[Steps]  # differing by key presence or type, and their ancestors: opened first when capped
    fold: bool
    full: bool  # nothing shortened or capped (`--full`)
    out: list[_Line]


def shorten(text: str, width: int = MAX_KEY_CHARS) -> str:
    """`text` cut to `width` characters with an ellipsis in the middle, keeping more of the end (a path's leaf)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def unlisted_differences(note: str | None) -> int:
    """How many differences the comparison found beyond those stored, from the exchange's note."""
    found = _UNLISTED.search(note or "")
    return int(found.group(1)) if found else 0


def body_diff(
    legacy: StoredBody | None,
    new: StoredBody | None,
    legacy_headers: Headers,
    new_headers: Headers,
    paths: Iterable[str],
    *,
    fold: bool | None = None,
    complete: bool = True,
) -> Text:
    """The diff view of two stored bodies; `fold` None folds only bodies longer than FOLD_LINES lines, False shows
    everything whole; `complete` False says `paths` were capped, so the bodies are diffed here too."""
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
            out.append_text(json_diff(docs[0], docs[1], paths, fold=fold, complete=complete))
            return out
    if "binary" in kinds:
        out.append_text(_size_line(left, right))
    else:
        content_type = header_value(legacy_headers, "content-type")
        encoding = charset(content_type)
        out.append_text(
            text_diff(_text(left, encoding), _text(right, encoding), full=fold is False, html=is_html(content_type))
        )
    for note in notes:
        out.append(f"\n({note})", "yellow")
    return out


def json_diff(
    legacy: object, new: object, paths: Iterable[str], *, fold: bool | None = None, complete: bool = True
) -> Text:
    """Two JSON documents as one indented view; `paths` are concrete difference paths like `$.items[3].qty`.

    Both are parsed documents (None is JSON null). Keys present on one side only and values whose JSON type
    changed are found from the documents themselves, so they are marked even when `paths` (capped for storage)
    miss them; with `complete` False every differing value is.
    """
    differing: set[Steps] = set()
    for p in paths:
        steps = _steps(p)
        if steps is not None:
            differing.add(steps)
    structural: set[Steps] = set()
    if legacy is _ABSENT or new is _ABSENT:
        structural.add(())  # one side has no document at all: the whole body differs
    else:
        _differing_paths(legacy, new, (), structural, differing, all_values=not complete)
    differing |= structural
    ancestors = {d[:i] for d in differing for i in range(len(d))}
    full = fold is False
    if fold is None:
        fold = max(_pretty_lines(legacy), _pretty_lines(new)) > FOLD_LINES
    walk = _Walk(
        differing=differing,
        ancestors=ancestors,
        structural=structural | {d[:i] for d in structural for i in range(len(d))},
        fold=fold,
        full=full,
        out=[],
    )
    _walk(legacy, new, (), "", 0, walk)
    lines = walk.out
    if fold and len(lines) > MAX_BODY_LINES:
        lines = [*lines[:MAX_BODY_LINES], _Line(0, "~", f"… {len(lines) - MAX_BODY_LINES} more lines")]
    text = _to_text(lines)
    if fold and any(line.mark == "~" for line in lines):
        text.append("\n" + FULL_HINT, "dim")
    return text


def text_diff(legacy: str, new: str, *, full: bool = False, html: bool = False) -> Text:
    """A unified line diff, coloured, of the lines the comparison used (so HTML shows one line per block element,
    and `body:line N` is line N here): at most TEXT_DIFF_LINES lines, long lines shortened, unless `full`."""
    lines_a, lines_b = text_lines(legacy, html=html), text_lines(new, html=html)
    diff = list(difflib.unified_diff(lines_a, lines_b, "legacy", "new", lineterm="", n=2))
    if not diff:
        return Text("(bodies are equal as text)", "dim")
    shown = diff if full else diff[:TEXT_DIFF_LINES]
    out = Text()
    for line in shown:
        style = "bold" if line.startswith(("---", "+++")) else "cyan" if line.startswith("@@") else ""
        if not style:
            style = _STYLE.get(line[:1], "")
        out.append((line if full else shorten(line, MAX_LINE_CHARS)) + "\n", style)
    if len(diff) > len(shown):
        out.append(f"… {len(diff) - len(shown)} more lines\n", "dim")
    if len(diff) > len(shown) or (not full and any(len(line) > MAX_LINE_CHARS for line in diff)):
        out.append(FULL_HINT + "\n", "dim")
    return out


# --- what differs -----------------------------------------------------------------------------------------------


def _steps(path: str) -> Steps | None:
    """A concrete difference path as walk steps; `$` is the whole document; None for headers, status, text."""
    if path == "$":
        return ()
    if not path.startswith("$"):
        return None
    try:
        steps = compile_path(path)
    except BadPath:
        return None
    if not all(isinstance(s, str | int) for s in steps):
        return None
    return tuple(s for s in steps if isinstance(s, str | int))


def _json_type(value: object) -> str:
    """The JSON type: int and float are one number type, bool is not a number."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _differing_paths(a: object, b: object, path: Steps, structural: set[Steps], values: set[Steps], *,
                     all_values: bool) -> None:  # fmt: skip
    """Add to `structural` the paths present on one side only or whose JSON type changed; with `all_values`, add
    every other differing scalar to `values` too."""
    if _json_type(a) != _json_type(b):
        structural.add(path)
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() | b.keys():
            if k in a and k in b:
                _differing_paths(a[k], b[k], (*path, k), structural, values, all_values=all_values)
            else:
                structural.add((*path, k))
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(min(len(a), len(b))):
            _differing_paths(a[i], b[i], (*path, i), structural, values, all_values=all_values)
        structural.update((*path, i) for i in range(min(len(a), len(b)), max(len(a), len(b))))
    elif all_values and a != b:
        values.add(path)


# --- the JSON walk ----------------------------------------------------------------------------------------------


def _walk(a: object, b: object, path: Steps, key: str, depth: int, w: _Walk) -> None:
    key = key if w.full else shorten(key, MAX_KEY_CHARS + 3)  # + the quotes, colon and space
    if path in w.differing or (path in w.ancestors and _json_type(a) != _json_type(b)):
        for mark, value in (("-", a), ("+", b)):
            if value is not _ABSENT:
                _value_lines(value, key, depth, mark, w)
        return
    if path in w.ancestors and isinstance(a, dict) and isinstance(b, dict):
        w.out.append(_Line(depth, " ", "{", key))
        keys = [*a, *(k for k in b if k not in a)]
        children = [(k, a.get(k, _ABSENT), b.get(k, _ABSENT), f"{json.dumps(k, ensure_ascii=False)}: ") for k in keys]
        _children(children, path, depth, w, small=len(keys) <= SMALL_OBJECT, cap=SHOWN_DIFFERING_KEYS)
        w.out.append(_Line(depth, " ", "}"))
        return
    if path in w.ancestors and isinstance(a, list) and isinstance(b, list):
        w.out.append(_Line(depth, " ", "[", key))
        n = max(len(a), len(b))
        items = [(i, a[i] if i < len(a) else _ABSENT, b[i] if i < len(b) else _ABSENT, "") for i in range(n)]
        _children(items, path, depth, w, small=False, cap=SHOWN_DIFFERING_ITEMS)
        w.out.append(_Line(depth, " ", "]"))
        return
    value = a if a is not _ABSENT else b
    if w.fold and isinstance(value, dict | list):
        w.out.append(_Line(depth, "~", _folded(value), key))
    else:
        _value_lines(value, key, depth, " ", w)


def _children(
    children: Sequence[tuple[str | int, object, object, str]],
    path: Steps,
    depth: int,
    w: _Walk,
    *,
    small: bool,
    cap: int,
) -> None:
    """Open the children on a differing path. When folding, a small object shows its other keys (containers as one
    `{… N keys}` line); arrays and larger objects collapse runs of unchanged children into `… N more`. At most
    `cap` differing children are opened (those differing by structure first); the others are counted, as
    `… N more (M differ)`, never shown as unchanged."""
    on_path = [(*path, c[0]) for c in children if (*path, c[0]) in w.differing or (*path, c[0]) in w.ancestors]
    opened = set(on_path)
    if w.fold and len(on_path) > cap:
        first = [c for c in on_path if c in w.structural][:cap]
        opened = {*first, *[c for c in on_path if c not in w.structural][: cap - len(first)]}
    hidden = hidden_differing = 0
    for step, a, b, key in children:
        child = (*path, step)
        differs = child in w.differing or child in w.ancestors
        if w.fold and (child not in opened if differs else not small):
            hidden += 1
            hidden_differing += differs
            continue
        _hidden_line(hidden, hidden_differing, depth, w)
        hidden = hidden_differing = 0
        _walk(a, b, child, key, depth + 1, w)
    _hidden_line(hidden, hidden_differing, depth, w)


def _hidden_line(hidden: int, differing: int, depth: int, w: _Walk) -> None:
    if hidden:
        w.out.append(_Line(depth + 1, "~", f"… {hidden} more" + (f" ({differing} differ)" if differing else "")))


def _value_lines(value: object, key: str, depth: int, mark: str, w: _Walk) -> None:
    lines = json.dumps(value, indent=2, ensure_ascii=False).splitlines()
    limit = SHOWN_VALUE_LINES if mark != " " and not w.full else len(lines)
    for i, line in enumerate(lines[:limit]):
        w.out.append(_Line(depth, mark, line if w.full else shorten(line, MAX_LINE_CHARS), key if i == 0 else ""))
    if len(lines) > limit:
        w.out.append(_Line(depth, mark, f"… {len(lines) - limit} more lines"))


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
