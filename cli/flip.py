"""Edit one route of routes.yaml in place: flip its mode, set its canary weight, add compare ignore fields.

The file is the source of truth and people keep comments, order and their own formatting in it, so edits are
surgical: pyyaml composes the document (`yaml.compose`, the parser `proxy.loader` uses) to find the exact character
span of each value to change, and only that span is rewritten (or one short line inserted). Every other byte stays
as it was. The edited text is validated
with `proxy.loader.parse_config` before anything is written, and written atomically (temp file in the same
directory, then `os.replace`), keeping the file's permission bits. Each edit reports the route's entry (`route_text`)
before and after, so `restore_route` can later write the earlier text back byte for byte.

Errors: `FlipError` (base) -> `UnknownRouteError` (no route with that id) and `InvalidEditError` (the file is
invalid before the edit, the edit itself is not allowed, or the result would not validate) -> `RouteEditedError`
(a revert found the route's entry changed since the change it undoes).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from proxy.config import MODES, Config, ConfigError, Mode, Route
from proxy.loader import parse_config
from proxy.modes import KEY_MODES, key_allowed


class FlipError(Exception):
    """An edit of routes.yaml that cannot be made; the file is left untouched."""

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.details = details


class UnknownRouteError(FlipError):
    def __init__(self, route_id: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown route '{route_id}' (known: {', '.join(known) or 'none'})")
        self.route_id = route_id
        self.known = known


class InvalidEditError(FlipError):
    pass


class RouteEditedError(InvalidEditError):
    """A revert found the route's entry changed since the change it undoes (edited by hand, or by another tool)."""


@dataclass(frozen=True, slots=True)
class FlipChange:
    """What an edit changed on one route (weights in percent; None when the route has no canary weight)."""

    route_id: str
    from_mode: Mode
    to_mode: Mode
    from_weight: float | None
    to_weight: float | None
    commented_out: tuple[str, ...] = ()  # keys the new mode does not allow, turned into comments
    before_text: str = ""  # the route's entry in the file before the edit (`route_text`), byte for byte
    after_text: str = ""  # ... and after it

    def describe(self) -> str:
        """`orders-read: shadow → canary (weight 10)`."""
        text = f"{self.route_id}: {self.from_mode} → {self.to_mode}"
        if self.to_mode == "canary" and self.to_weight is not None:
            text += f" (weight {format_number(self.to_weight)})"
        if self.commented_out:
            text += f"; commented out: {', '.join(self.commented_out)}"
        return text


@dataclass(frozen=True, slots=True)
class _Splice:
    """Replace text[start:end] with `text` (an insertion when start == end)."""

    start: int
    end: int
    text: str


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def flip_route(path: Path, route_id: str, to_mode: str, weight: float | None = None) -> FlipChange:
    """Set the route's `mode:`; with `weight` (only with canary) also its `canary.weight`.

    Flipping to canary needs a weight: `weight`, or the one already in the route's canary block. Keys that the
    target mode does not allow (the loader would reject them) are commented out, not deleted, so nothing written by
    hand is lost: `canary:` outside canary, `shadow:` outside shadow/canary, `verify:` outside new, and
    `fallback: legacy` in legacy/shadow.
    """
    if to_mode not in MODES:
        raise InvalidEditError(f"unknown mode '{to_mode}' (known: {', '.join(MODES)})")
    if weight is not None and to_mode != "canary":
        raise InvalidEditError(f"a canary weight applies only with mode canary, not {to_mode}")
    disabled: list[str] = []

    def edit(text: str, node: MappingNode, route: Route) -> list[_Splice]:
        if to_mode == "canary" and weight is None and _canary_weight_node(node) is None:
            raise InvalidEditError(f"route '{route.id}' has no canary weight: pass --weight N to flip it to canary")
        splices = [] if route.mode == to_mode else [_set_scalar(text, node, "mode", to_mode, after="id")]
        if weight is not None:
            splices.extend(_set_weight_splices(text, node, weight))
        for key in _disallowed_keys(node, to_mode):
            splices.extend(_disable_entry(text, node, key))
            disabled.append(key)
        return splices

    change = _edit(path, route_id, edit)
    return replace(change, commented_out=tuple(disabled))


def _disallowed_keys(route: MappingNode, mode: str) -> list[str]:
    """Route keys the loader rejects under `mode` (`proxy.modes.KEY_MODES`)."""
    found = [
        key
        for key in KEY_MODES
        if key != "fallback" and _entry(route, key) is not None and not key_allowed(key, cast(Mode, mode))
    ]
    if not key_allowed("fallback", cast(Mode, mode)) and _scalar(_value(route, "fallback")) == "legacy":
        found.append("fallback")
    return found


def set_weight(path: Path, route_id: str, weight: float) -> FlipChange:
    """Set the canary weight of a route in mode canary."""

    def edit(text: str, node: MappingNode, route: Route) -> list[_Splice]:
        if route.mode != "canary":
            raise InvalidEditError(
                f"route '{route.id}' is mode {route.mode}; a weight applies only to mode canary "
                "(flip it with --to canary --weight N)"
            )
        return _set_weight_splices(text, node, weight)

    return _edit(path, route_id, edit)


def add_ignore_fields(path: Path, route_id: str, fields: list[str]) -> tuple[str, ...]:
    """Append `fields` to the route's `compare.ignore_fields`, skipping those already there; returns the added."""
    added: list[str] = []

    def edit(text: str, node: MappingNode, route: Route) -> list[_Splice]:
        present = set(route.compare.ignore_fields)
        compare = _value(node, "compare")
        if isinstance(compare, MappingNode) and isinstance(existing := _value(compare, "ignore_fields"), SequenceNode):
            present |= {str(item.value) for item in existing.value if isinstance(item, ScalarNode)}
        for f in fields:
            if f not in present and f not in added:
                added.append(f)
        return _append_ignore_fields(text, node, added) if added else []

    _edit(path, route_id, edit)
    return tuple(added)


def route_text(path: Path, route_id: str) -> str:
    """The route's entry in the file, byte for byte (see `_route_span`): what a flip records and a revert restores."""
    text = _read(path)
    start, end = _route_span(text, _route_node(text, route_id))
    return text[start:end]


def restore_route(path: Path, route_id: str, expected: str, restored: str, *, overwrite: bool = False) -> FlipChange:
    """Replace the route's entry, which must read `expected` (what the change being undone wrote), by `restored`.

    A route edited since (its text is not `expected`) is refused unless `overwrite`, which loses those edits.
    """

    def edit(text: str, node: MappingNode, route: Route) -> list[_Splice]:
        start, end = _route_span(text, node)
        if text[start:end] != expected and not overwrite:
            raise RouteEditedError(
                f"route '{route.id}' was edited since the change being reverted (its entry in {path.name} is not "
                "what that change wrote); nothing changed"
            )
        return [] if text[start:end] == restored else [_Splice(start, end, restored)]

    return _edit(path, route_id, edit)


# --- the edit cycle --------------------------------------------------------------------------------------------


def _edit(path: Path, route_id: str, plan: Callable[[str, MappingNode, Route], list[_Splice]]) -> FlipChange:
    text = _read(path)
    before = _parse(text, path, "is invalid before the edit")
    route = before.route(route_id)
    if route is None:
        raise UnknownRouteError(route_id, tuple(r.id for r in before.routes))
    node = _route_node(text, route_id)
    start, end = _route_span(text, node)
    splices = plan(text, node, route)
    if not splices:
        return _change(route, route, text[start:end], text[start:end])
    new_text = _apply(text, splices)
    after = _parse(new_text, path, "would be invalid after the edit")
    new_route = after.route(route_id)
    if new_route is None:  # an edit never renames a route; seeing this means a splice went astray
        raise InvalidEditError(f"route '{route_id}' disappeared from {path.name} during the edit")
    new_start, new_end = _route_span(new_text, _route_node(new_text, route_id))
    _write_atomic(path, text, new_text)
    return _change(route, new_route, text[start:end], new_text[new_start:new_end])


def _change(before: Route, after: Route, before_text: str, after_text: str) -> FlipChange:
    return FlipChange(
        route_id=before.id,
        from_mode=before.mode,
        to_mode=after.mode,
        from_weight=_weight_of(before),
        to_weight=_weight_of(after),
        before_text=before_text,
        after_text=after_text,
    )


def _weight_of(route: Route) -> float | None:
    return route.canary.weight if route.canary is not None else None


def _read(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as f:  # newline="": keep \r\n files as they are
        return f.read()


def _parse(text: str, path: Path, state: str) -> Config:
    try:
        return parse_config(text, path)
    except ConfigError as exc:
        raise InvalidEditError(f"{path.name} {state}", tuple(str(i) for i in exc.issues)) from exc


def _write_atomic(path: Path, original: str, new_text: str) -> None:
    """Replace the file in one step; refuse when someone else changed it while we were editing."""
    if _read(path) != original:
        raise InvalidEditError(f"{path} changed while it was being edited; nothing written, try again")
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _apply(text: str, splices: list[_Splice]) -> str:
    for s in sorted(splices, key=lambda s: s.start, reverse=True):
        text = text[: s.start] + s.text + text[s.end :]
    return text


# --- finding nodes ---------------------------------------------------------------------------------------------


def _route_node(text: str, route_id: str) -> MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # parse_config accepted the text, so this is unexpected; report it all the same
        raise InvalidEditError(f"cannot read the YAML structure: {exc}") from exc
    routes = _value(root, "routes") if isinstance(root, MappingNode) else None
    if isinstance(routes, SequenceNode):
        for item in routes.value:
            if isinstance(item, MappingNode) and _scalar(_value(item, "id")) == route_id:
                return item
    # The loader knows the route but it is not written as a plain mapping under routes: (anchors, merges).
    raise InvalidEditError(f"route '{route_id}' is not a plain mapping under routes:; edit it by hand")


def _route_span(text: str, route: MappingNode) -> tuple[int, int]:
    """Where the route's entry lies in `text`: from its first key (after `- `) to the end of its last line, then on
    over the comment lines indented like its keys that follow (keys a flip commented out), but not over trailing
    blank lines or a comment that belongs to the next entry (indented less)."""
    start = int(route.start_mark.index)
    end = _line_end(text, _content_end(route))
    if route.flow_style:
        return start, end
    column = route.start_mark.column
    at = end
    while at < len(text):
        line_start = text.find("\n", at) + 1
        if line_start == 0:
            break
        line_end = _line_end(text, line_start)
        line = text[line_start:line_end]
        if not line.strip():
            at = line_end
            continue
        if len(line) - len(line.lstrip(" ")) < column or not line.lstrip(" ").startswith("#"):
            break
        end = at = line_end
    return start, end


def _entry(node: MappingNode, key: str) -> tuple[ScalarNode, Node] | None:
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def _value(node: Node, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    entry = _entry(node, key)
    return entry[1] if entry else None


def _scalar(node: Node | None) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def _canary_weight_node(route: MappingNode) -> ScalarNode | None:
    canary = _value(route, "canary")
    weight = _value(canary, "weight") if canary is not None else None
    return weight if isinstance(weight, ScalarNode) else None


# --- building splices ------------------------------------------------------------------------------------------


def _render(value: str, like: ScalarNode | None) -> str:
    """`value` as a scalar in the quoting style of the scalar it replaces."""
    style = like.style if like is not None else None
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(value)
    return value


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _line_end(text: str, index: int) -> int:
    """Index of the line break ending the line that holds `index` (len(text) on the last line)."""
    end = text.find("\n", index)
    if end == -1:
        return len(text)
    return end - 1 if end > 0 and text[end - 1] == "\r" else end


def _insert_entry(text: str, mapping: MappingNode, after_key: str | None, line: str) -> _Splice:
    """Insert `key: value` into `mapping`, right after the entry `after_key` (or after the first entry)."""
    anchor = _entry(mapping, after_key) if after_key else None
    key, value = anchor or mapping.value[0]
    if mapping.flow_style:
        return _Splice(value.end_mark.index, value.end_mark.index, f", {line}")
    indent = " " * key.start_mark.column
    if isinstance(value, ScalarNode) and value.style not in ("|", ">"):
        at = _line_end(text, value.end_mark.index)
        return _Splice(at, at, _newline(text) + indent + line)
    # A nested block's end is not reliably marked; go before the first key instead, when it starts its own line.
    first = mapping.value[0][0]
    line_start = text.rfind("\n", 0, first.start_mark.index) + 1
    if text[line_start : first.start_mark.index].strip():
        raise InvalidEditError(f"cannot find a place for '{line}'; edit it by hand")
    return _Splice(line_start, line_start, indent + line + _newline(text))


def _set_scalar(text: str, mapping: MappingNode, key: str, value: str, *, after: str) -> _Splice:
    """Replace the scalar value of `key`, or add `key: value` after the entry `after` when the key is missing."""
    entry = _entry(mapping, key)
    if entry is None:
        return _insert_entry(text, mapping, after, f"{key}: {value}")
    _, node = entry
    if not isinstance(node, ScalarNode):
        raise InvalidEditError(f"'{key}:' is not a plain value; edit it by hand")
    if node.start_mark.index == node.end_mark.index:  # `key:` with an empty value
        return _Splice(node.start_mark.index, node.end_mark.index, " " + value)
    return _Splice(node.start_mark.index, node.end_mark.index, _render(value, node))


def _set_weight_splices(text: str, route: MappingNode, weight: float) -> list[_Splice]:
    if not 0 <= weight <= 100:
        raise InvalidEditError(f"canary weight must be between 0 and 100, got {format_number(weight)}")
    number = format_number(weight)
    canary = _value(route, "canary")
    if canary is None:
        return [_insert_entry(text, route, "mode", f"canary: {{weight: {number}}}")]
    if isinstance(canary, MappingNode):
        if not canary.value:  # `canary: {}`
            return [_Splice(canary.start_mark.index, canary.end_mark.index, f"{{weight: {number}}}")]
        return [_set_scalar(text, canary, "weight", number, after=str(canary.value[0][0].value))]
    if isinstance(canary, ScalarNode) and canary.value in ("", "~", "null", "Null", "NULL"):  # `canary:` left empty
        prefix = " " if canary.start_mark.index == canary.end_mark.index else ""
        return [_Splice(canary.start_mark.index, canary.end_mark.index, f"{prefix}{{weight: {number}}}")]
    raise InvalidEditError("'canary:' is not a mapping; edit it by hand")


def _append_ignore_fields(text: str, route: MappingNode, fields: list[str]) -> list[_Splice]:
    quoted = [json.dumps(f) for f in fields]  # always quoted: JSONPath has '[', '*' and ','
    compare = _value(route, "compare")
    if compare is None:
        return [_insert_entry(text, route, "mode", f"compare: {{ignore_fields: [{', '.join(quoted)}]}}")]
    if not isinstance(compare, MappingNode):
        raise InvalidEditError("'compare:' is not a mapping; edit it by hand")
    existing = _value(compare, "ignore_fields")
    if existing is None:
        line = f"ignore_fields: [{', '.join(quoted)}]"
        if not compare.value:  # `compare: {}`
            return [_Splice(compare.start_mark.index, compare.end_mark.index, "{" + line + "}")]
        return [_insert_entry(text, compare, None, line)]
    if not isinstance(existing, SequenceNode):
        raise InvalidEditError("'compare.ignore_fields:' is not a list; edit it by hand")
    if existing.flow_style:
        close = existing.end_mark.index - 1  # the ']'
        sep = ", " if existing.value else ""
        return [_Splice(close, close, sep + ", ".join(quoted))]
    last = existing.value[-1]
    line_start = text.rfind("\n", 0, last.start_mark.index) + 1
    prefix = text[line_start : last.start_mark.index]  # e.g. "      - "
    at = _line_end(text, last.end_mark.index)
    nl = _newline(text)
    return [_Splice(at, at, "".join(nl + prefix + q for q in quoted))]


def _content_end(node: Node) -> int:
    """Where a value's own text ends. A block collection's end mark lies at the next token, past any comments
    and blank lines that follow it, so use its last descendant instead."""
    if isinstance(node, ScalarNode) or getattr(node, "flow_style", False):
        return int(node.end_mark.index)
    if isinstance(node, MappingNode) and node.value:
        return max(_content_end(v) for _, v in node.value)
    if isinstance(node, SequenceNode) and node.value:
        return max(_content_end(v) for v in node.value)
    return int(node.start_mark.index)


def _disable_entry(text: str, mapping: MappingNode, key: str) -> list[_Splice]:
    """Turn `key: ...` into comments (block style), or remove it (flow style, where comments cannot go)."""
    entries = mapping.value
    position = next(i for i, (k, _) in enumerate(entries) if isinstance(k, ScalarNode) and k.value == key)
    key_node, value = entries[position]
    if mapping.flow_style:
        if position > 0:
            start = _content_end(entries[position - 1][1])
            return [_Splice(start, _content_end(value), "")]
        end = entries[1][0].start_mark.index if len(entries) > 1 else _content_end(value)
        return [_Splice(key_node.start_mark.index, end, "")]
    column = key_node.start_mark.column
    line_start = key_node.start_mark.index - column
    if text[line_start : key_node.start_mark.index].strip():
        raise InvalidEditError(f"cannot comment out '{key}:' (it shares a line with '-'); edit it by hand")
    end = _content_end(value)
    splices = []
    while line_start <= end:
        line_end = _line_end(text, line_start)
        if line_end - line_start > column:  # blank lines inside the block stay blank
            splices.append(_Splice(line_start + column, line_start + column, "# "))
        line_start = text.find("\n", line_start) + 1
        if line_start == 0:
            break
    return splices
