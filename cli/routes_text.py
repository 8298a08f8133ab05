"""Text surgery on routes.yaml: find a route's nodes and their exact character spans, and splice new text in.

pyyaml composes the document (`yaml.compose`, the parser `proxy.config.loader` uses); every node carries start and end
marks (`index`, `line`, `column`) into the text, so a value is changed by rewriting its span, and a key is added or
commented out by inserting short lines, leaving every other byte as it was (comments, order, quoting, `\r\n`).
A block collection's end mark lies at the next token (past comments and blank lines) and a block scalar's at the
start of the line after it, so where a value's own text ends is found from its last descendant and last character
(`content_end`); an empty value (`key:`) is marked right after its colon.

Errors (the one tree for editing routes.yaml; `cli.flip` raises them too): `FlipError` (base) ->
`UnknownRouteError` (no route with that id) and `InvalidEditError` (the file is invalid before the edit, the edit
itself is not allowed, or the result would not validate) -> `RouteEditedError` (a revert found the route's entry
changed since the change it undoes).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


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
class Splice:
    """Replace text[start:end] with `text` (an insertion when start == end)."""

    start: int
    end: int
    text: str


def route_text(path: Path, route_id: str) -> str:
    """The route's entry in the file, byte for byte (see `route_span`): what a flip records and a revert restores."""
    text = read_text(path)
    start, end = route_span(text, route_node(text, route_id))
    return text[start:end]


def read_text(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as f:  # newline="": keep \r\n files as they are
        return f.read()


def write_atomic(path: Path, original: str, new_text: str) -> None:
    """Replace the file in one step; refuse when someone else changed it while we were editing."""
    if read_text(path) != original:
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


def apply_splices(text: str, splices: list[Splice]) -> str:
    for s in sorted(splices, key=lambda s: s.start, reverse=True):
        text = text[: s.start] + s.text + text[s.end :]
    return text


# --- finding nodes ---------------------------------------------------------------------------------------------


def route_node(text: str, route_id: str) -> MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # parse_config accepted the text, so this is unexpected; report it all the same
        raise InvalidEditError(f"cannot read the YAML structure: {exc}") from exc
    routes = mapping_value(root, "routes") if isinstance(root, MappingNode) else None
    if isinstance(routes, SequenceNode):
        for item in routes.value:
            if isinstance(item, MappingNode) and scalar_text(mapping_value(item, "id")) == route_id:
                return item
    # The loader knows the route but it is not written as a plain mapping under routes: (anchors, merges).
    raise InvalidEditError(f"route '{route_id}' is not a plain mapping under routes:; edit it by hand")


def route_span(text: str, route: MappingNode) -> tuple[int, int]:
    """Where the route's entry lies in `text`: from its first key (after `- `) to the end of its last line, then on
    over the comment lines indented like its keys that follow (keys a flip commented out), but not over trailing
    blank lines or a comment that belongs to the next entry (indented less)."""
    start = int(route.start_mark.index)
    end = end_of_line(text, content_end(text, route))
    if route.flow_style:
        return start, end
    column = route.start_mark.column
    at = end
    while at < len(text):
        line_start = text.find("\n", at) + 1
        if line_start == 0:
            break
        line_end = end_of_line(text, line_start)
        line = text[line_start:line_end]
        if not line.strip():
            at = line_end
            continue
        if len(line) - len(line.lstrip(" ")) < column or not line.lstrip(" ").startswith("#"):
            break
        end = at = line_end
    return start, end


def mapping_entry(node: MappingNode, key: str) -> tuple[ScalarNode, Node] | None:
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def mapping_value(node: Node, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    entry = mapping_entry(node, key)
    return entry[1] if entry else None


def scalar_text(node: Node | None) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


# --- building splices ------------------------------------------------------------------------------------------


def render_scalar(value: str, like: ScalarNode | None) -> str:
    """`value` as a scalar in the quoting style of the scalar it replaces."""
    style = like.style if like is not None else None
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(value)
    return value


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def end_of_line(text: str, index: int) -> int:
    """Index of the line break ending the line that holds `index` (len(text) on the last line)."""
    end = text.find("\n", index)
    if end == -1:
        return len(text)
    return end - 1 if end > 0 and text[end - 1] == "\r" else end


def insert_entry(text: str, mapping: MappingNode, after_key: str | None, line: str) -> Splice:
    """Insert `key: value` into `mapping`, right after the entry `after_key` (or after the first entry)."""
    anchor = mapping_entry(mapping, after_key) if after_key else None
    key, value = anchor or mapping.value[0]
    if mapping.flow_style:
        return Splice(value.end_mark.index, value.end_mark.index, f", {line}")
    indent = " " * key.start_mark.column
    if isinstance(value, ScalarNode) and value.style not in ("|", ">"):
        at = end_of_line(text, value.end_mark.index)
        return Splice(at, at, newline_of(text) + indent + line)
    # A nested block's end is not reliably marked; go before the first key instead, when it starts its own line.
    first = mapping.value[0][0]
    line_start = text.rfind("\n", 0, first.start_mark.index) + 1
    if text[line_start : first.start_mark.index].strip():
        raise InvalidEditError(f"cannot find a place for '{line}'; edit it by hand")
    return Splice(line_start, line_start, indent + line + newline_of(text))


def set_scalar(text: str, mapping: MappingNode, key: str, value: str, *, after: str) -> Splice:
    """Replace the scalar value of `key`, or add `key: value` after the entry `after` when the key is missing."""
    entry = mapping_entry(mapping, key)
    if entry is None:
        return insert_entry(text, mapping, after, f"{key}: {value}")
    _, node = entry
    if not isinstance(node, ScalarNode):
        raise InvalidEditError(f"'{key}:' is not a plain value; edit it by hand")
    if node.start_mark.index == node.end_mark.index:  # `key:` with an empty value
        return Splice(node.start_mark.index, node.end_mark.index, " " + value)
    return Splice(node.start_mark.index, node.end_mark.index, render_scalar(value, node))


def content_end(text: str, node: Node) -> int:
    """Where a value's own text ends. A block collection's end mark lies at the next token, past any comments
    and blank lines that follow it, so use its last descendant instead; a block scalar's (`|`, `>`) lies past its
    line breaks, at the start of the next line, so use its last character that is not white space."""
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        start = int(node.start_mark.index)
        return start + len(text[start : node.end_mark.index].rstrip())
    if isinstance(node, ScalarNode) or getattr(node, "flow_style", False):
        return int(node.end_mark.index)
    if isinstance(node, MappingNode) and node.value:
        return max(content_end(text, v) for _, v in node.value)
    if isinstance(node, SequenceNode) and node.value:
        return max(content_end(text, v) for v in node.value)
    return int(node.start_mark.index)


def disable_entry(text: str, mapping: MappingNode, key: str) -> list[Splice]:
    """Turn `key: ...` into comments (block style), or remove it (flow style, where comments cannot go)."""
    entries = mapping.value
    position = next(i for i, (k, _) in enumerate(entries) if isinstance(k, ScalarNode) and k.value == key)
    key_node, value = entries[position]
    if mapping.flow_style:
        if position > 0:
            start = content_end(text, entries[position - 1][1])
            return [Splice(start, content_end(text, value), "")]
        end = entries[1][0].start_mark.index if len(entries) > 1 else content_end(text, value)
        return [Splice(key_node.start_mark.index, end, "")]
    column = key_node.start_mark.column
    line_start = key_node.start_mark.index - column
    if text[line_start : key_node.start_mark.index].strip():
        raise InvalidEditError(f"cannot comment out '{key}:' (it shares a line with '-'); edit it by hand")
    end = content_end(text, value)
    splices = []
    while line_start <= end:
        line_end = end_of_line(text, line_start)
        if line_end - line_start > column:  # blank lines inside the block stay blank
            splices.append(Splice(line_start + column, line_start + column, "# "))
        line_start = text.find("\n", line_start) + 1
        if line_start == 0:
            break
    return splices
