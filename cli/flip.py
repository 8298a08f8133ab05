"""Edit one route of routes.yaml in place: flip its mode, set its canary weight, add compare ignore fields.

The file is the source of truth and people keep comments, order and their own formatting in it, so edits are
surgical: only the span of each changed value is rewritten (or one short line inserted), by the text surgery of
`cli.routes_text`, which also holds the error tree re-exported here. The edited text is validated with
`proxy.config.loader.parse_config` before anything is written, and written atomically (temp file in the same directory,
then `os.replace`), keeping the file's permission bits. Each edit reports the route's entry (`route_text`) before
and after, so `restore_route` can later write the earlier text back byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from cli.routes_text import (
    FlipError,
    InvalidEditError,
    RouteEditedError,
    Splice,
    UnknownRouteError,
    apply_splices,
    disable_entry,
    end_of_line,
    insert_entry,
    mapping_entry,
    mapping_value,
    newline_of,
    read_text,
    route_node,
    route_span,
    route_text,
    scalar_text,
    set_scalar,
    write_atomic,
)
from proxy.config.loader import parse_config
from proxy.config.model import MODES, Config, ConfigError, Mode, Route
from proxy.modes import KEY_MODES, key_allowed

__all__ = [
    "FlipChange",
    "FlipError",
    "InvalidEditError",
    "RouteEditedError",
    "UnknownRouteError",
    "add_ignore_fields",
    "flip_route",
    "format_number",
    "restore_route",
    "route_text",
    "set_weight",
]


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

    def edit(text: str, node: MappingNode, route: Route) -> list[Splice]:
        if to_mode == "canary" and weight is None and _canary_weight_node(node) is None:
            raise InvalidEditError(f"route '{route.id}' has no canary weight: pass --weight N to flip it to canary")
        splices = [] if route.mode == to_mode else [set_scalar(text, node, "mode", to_mode, after="id")]
        if weight is not None:
            splices.extend(_set_weight_splices(text, node, weight))
        for key in _disallowed_keys(node, to_mode):
            splices.extend(disable_entry(text, node, key))
            disabled.append(key)
        return splices

    change = _edit(path, route_id, edit)
    return replace(change, commented_out=tuple(disabled))


def _disallowed_keys(route: MappingNode, mode: str) -> list[str]:
    """Route keys the loader rejects under `mode` (`proxy.modes.KEY_MODES`)."""
    found = [
        key
        for key in KEY_MODES
        if key != "fallback" and mapping_entry(route, key) is not None and not key_allowed(key, cast(Mode, mode))
    ]
    if not key_allowed("fallback", cast(Mode, mode)) and scalar_text(mapping_value(route, "fallback")) == "legacy":
        found.append("fallback")
    return found


def set_weight(path: Path, route_id: str, weight: float) -> FlipChange:
    """Set the canary weight of a route in mode canary."""

    def edit(text: str, node: MappingNode, route: Route) -> list[Splice]:
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

    def edit(text: str, node: MappingNode, route: Route) -> list[Splice]:
        present = set(route.compare.ignore_fields)
        compare = mapping_value(node, "compare")
        if isinstance(compare, MappingNode) and isinstance(
            existing := mapping_value(compare, "ignore_fields"), SequenceNode
        ):
            present |= {str(item.value) for item in existing.value if isinstance(item, ScalarNode)}
        for f in fields:
            if f not in present and f not in added:
                added.append(f)
        return _append_ignore_fields(text, node, added) if added else []

    _edit(path, route_id, edit)
    return tuple(added)


def restore_route(path: Path, route_id: str, expected: str, restored: str, *, overwrite: bool = False) -> FlipChange:
    """Replace the route's entry, which must read `expected` (what the change being undone wrote), by `restored`.

    A route edited since (its text is not `expected`) is refused unless `overwrite`, which loses those edits.
    """

    def edit(text: str, node: MappingNode, route: Route) -> list[Splice]:
        start, end = route_span(text, node)
        if text[start:end] != expected and not overwrite:
            raise RouteEditedError(
                f"route '{route.id}' was edited since the change being reverted (its entry in {path.name} is not "
                "what that change wrote); nothing changed"
            )
        return [] if text[start:end] == restored else [Splice(start, end, restored)]

    return _edit(path, route_id, edit)


# --- the edit cycle --------------------------------------------------------------------------------------------


def _edit(path: Path, route_id: str, plan: Callable[[str, MappingNode, Route], list[Splice]]) -> FlipChange:
    text = read_text(path)
    before = validate_text(text, path, "is invalid before the edit")
    route = before.route(route_id)
    if route is None:
        raise UnknownRouteError(route_id, tuple(r.id for r in before.routes))
    node = route_node(text, route_id)
    start, end = route_span(text, node)
    splices = plan(text, node, route)
    if not splices:
        return _change(route, route, text[start:end], text[start:end])
    new_text = apply_splices(text, splices)
    after = validate_text(new_text, path, "would be invalid after the edit")
    new_route = after.route(route_id)
    if new_route is None:  # an edit never renames a route; seeing this means a splice went astray
        raise InvalidEditError(f"route '{route_id}' disappeared from {path.name} during the edit")
    new_start, new_end = route_span(new_text, route_node(new_text, route_id))
    write_atomic(path, text, new_text)
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


def validate_text(text: str, path: Path, state: str) -> Config:
    """The config `text` would load as; InvalidEditError (naming `state`) with its issues when it would not."""
    try:
        return parse_config(text, path)
    except ConfigError as exc:
        raise InvalidEditError(f"{path.name} {state}", tuple(str(i) for i in exc.issues)) from exc


def _canary_weight_node(route: MappingNode) -> ScalarNode | None:
    canary = mapping_value(route, "canary")
    weight = mapping_value(canary, "weight") if canary is not None else None
    return weight if isinstance(weight, ScalarNode) else None


# --- splices of the edits --------------------------------------------------------------------------------------


def _set_weight_splices(text: str, route: MappingNode, weight: float) -> list[Splice]:
    if not 0 <= weight <= 100:
        raise InvalidEditError(f"canary weight must be between 0 and 100, got {format_number(weight)}")
    number = format_number(weight)
    canary = mapping_value(route, "canary")
    if canary is None:
        return [insert_entry(text, route, "mode", f"canary: {{weight: {number}}}")]
    if isinstance(canary, MappingNode):
        if not canary.value:  # `canary: {}`
            return [Splice(canary.start_mark.index, canary.end_mark.index, f"{{weight: {number}}}")]
        return [set_scalar(text, canary, "weight", number, after=str(canary.value[0][0].value))]
    if isinstance(canary, ScalarNode) and canary.value in ("", "~", "null", "Null", "NULL"):  # `canary:` left empty
        prefix = " " if canary.start_mark.index == canary.end_mark.index else ""
        return [Splice(canary.start_mark.index, canary.end_mark.index, f"{prefix}{{weight: {number}}}")]
    raise InvalidEditError("'canary:' is not a mapping; edit it by hand")


def _append_ignore_fields(text: str, route: MappingNode, fields: list[str]) -> list[Splice]:
    quoted = [json.dumps(f) for f in fields]  # always quoted: JSONPath has '[', '*' and ','
    compare = mapping_value(route, "compare")
    if compare is None:
        return [insert_entry(text, route, "mode", f"compare: {{ignore_fields: [{', '.join(quoted)}]}}")]
    if not isinstance(compare, MappingNode):
        raise InvalidEditError("'compare:' is not a mapping; edit it by hand")
    existing = mapping_value(compare, "ignore_fields")
    if existing is None:
        line = f"ignore_fields: [{', '.join(quoted)}]"
        if not compare.value:  # `compare: {}`
            return [Splice(compare.start_mark.index, compare.end_mark.index, "{" + line + "}")]
        return [insert_entry(text, compare, None, line)]
    if not isinstance(existing, SequenceNode):
        raise InvalidEditError("'compare.ignore_fields:' is not a list; edit it by hand")
    if existing.flow_style:
        close = existing.end_mark.index - 1  # the ']'
        sep = ", " if existing.value else ""
        return [Splice(close, close, sep + ", ".join(quoted))]
    last = existing.value[-1]
    line_start = text.rfind("\n", 0, last.start_mark.index) + 1
    prefix = text[line_start : last.start_mark.index]  # e.g. "      - "
    at = end_of_line(text, last.end_mark.index)
    nl = newline_of(text)
    return [Splice(at, at, "".join(nl + prefix + q for q in quoted))]
