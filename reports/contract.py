"""Contract drift: the JSON shape of each side of a route learned from its stored bodies (every field path with its
types, how often it is present, and its values when they look like an enum), the shape differences between the
sides apart from value differences, and a JSON Schema per side.

Shapes are learned from the bodies the store keeps: every mismatching pair's and a sample (`store.sample_matches`)
of matching ones. A matching pair's bodies count `1 / sample` times so presence estimates the traffic rather than
the mismatches; bodies cut at `store.body_cap` and bodies that are not JSON are left out. Pure apart from nothing:
documents in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

Drift = Literal["none", "added", "removed", "type_changed", "optionality_changed", "values_changed"]
DRIFTS: tuple[Drift, ...] = ("none", "added", "removed", "type_changed", "optionality_changed", "values_changed")

REQUIRED = 0.999  # presence at or above this is "always there"
ENUM_MAX = 12  # distinct strings at most for a field to look like an enum ...
ENUM_REPEAT = 3  # ... each seen this many times on average
_STRINGS_KEPT = ENUM_MAX + 1  # past this, a field's strings are no longer tracked
_NUMBERS = frozenset({"integer", "number"})
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


@dataclass(slots=True)
class ShapeNode:
    """What was seen at one path: `seen` weighted occurrences (of its parent, for presence), by type; object
    members and array items below it; the distinct strings while they are few."""

    seen: float = 0.0
    types: dict[str, float] = field(default_factory=dict)
    members: dict[str, ShapeNode] = field(default_factory=dict)
    items: ShapeNode | None = None
    strings: dict[str, int] | None = field(default_factory=dict)  # unweighted; None once too many distinct

    def add(self, value: Any, weight: float) -> None:
        kind = json_type(value)
        self.seen += weight
        self.types[kind] = self.types.get(kind, 0.0) + weight
        if kind == "object":
            for key, member in value.items():
                self.members.setdefault(key, ShapeNode()).add(member, weight)
        elif kind == "array":
            if self.items is None:
                self.items = ShapeNode()
            for item in value:
                self.items.add(item, weight)
        elif kind == "string" and self.strings is not None:
            self.strings[value] = self.strings.get(value, 0) + 1
            if len(self.strings) > _STRINGS_KEPT:
                self.strings = None


def json_type(value: Any) -> str:
    """The JSON Schema type name of a parsed JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass(slots=True)
class Shape:
    """One side's shape: the root node and how many documents (weighted, and as stored) it was learned from."""

    root: ShapeNode = field(default_factory=ShapeNode)
    documents: int = 0
    weight: float = 0.0
    skipped: int = 0  # bodies left out: truncated or not JSON


def learn_shape(bodies: Iterable[tuple[bytes, float, bool]]) -> Shape:
    """The shape of (body, weight, truncated) documents; truncated and non-JSON bodies are counted as skipped."""
    shape = Shape()
    for data, weight, truncated in bodies:
        if truncated:
            shape.skipped += 1
            continue
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            shape.skipped += 1
            continue
        shape.root.add(value, weight)
        shape.documents += 1
        shape.weight += weight
    return shape


@dataclass(frozen=True, slots=True)
class FieldShape:
    types: tuple[str, ...]  # sorted
    presence: float  # share of its parent's occurrences that have it (1.0 for the root and array items)
    values: tuple[str, ...] | None  # the distinct strings when they look like an enum, else None


@dataclass(frozen=True, slots=True)
class FieldDrift:
    path: str
    legacy: FieldShape | None
    new: FieldShape | None
    drift: Drift


def _flatten(node: ShapeNode, path: str, parent_seen: float, out: dict[str, FieldShape]) -> None:
    out[path] = FieldShape(
        types=tuple(sorted(node.types)),
        presence=min(1.0, node.seen / parent_seen) if parent_seen else 0.0,
        values=_enum(node),
    )
    objects = node.types.get("object", 0.0)
    for key, member in node.members.items():
        _flatten(member, f"{path}.{key}" if key.isidentifier() else f"{path}[{orjson.dumps(key).decode()}]",
                 objects, out)  # fmt: skip
    if node.items is not None:
        _flatten(node.items, f"{path}[*]", node.items.seen, out)


def _enum(node: ShapeNode) -> tuple[str, ...] | None:
    """The distinct strings of a field when they look like an enum: few, code-like (a word of letters, digits and
    `_-.:`, so names and phone numbers are not), and each seen several times on average (counted unweighted, so a
    sampled body counts once)."""
    strings = node.strings
    if strings is None or not 0 < len(strings) <= ENUM_MAX or sum(strings.values()) < ENUM_REPEAT * len(strings):
        return None
    if not all(_CODE.fullmatch(value) for value in strings):
        return None
    return tuple(sorted(strings))


def field_shapes(shape: Shape) -> dict[str, FieldShape]:
    """Every field path (`$`, `$.items[*].id`) of a shape with its types, presence and enum values."""
    out: dict[str, FieldShape] = {}
    if shape.documents:
        _flatten(shape.root, "$", shape.root.seen, out)
    return out


def classify(legacy: FieldShape | None, new: FieldShape | None) -> Drift:
    """How a field changed from legacy to new, the first that applies: added, removed, type_changed (integer and
    number are one type; an array that became an object is one), optionality_changed (always there on one side,
    sometimes on the other), values_changed (an enum-like string set differs), else none."""
    if legacy is None and new is None:
        return "none"
    if legacy is None:
        return "added"
    if new is None:
        return "removed"
    if _type_set(legacy.types) != _type_set(new.types):
        return "type_changed"
    if (legacy.presence >= REQUIRED) != (new.presence >= REQUIRED):
        return "optionality_changed"
    if legacy.values is not None and new.values is not None and legacy.values != new.values:
        return "values_changed"
    return "none"


def _type_set(types: Sequence[str]) -> frozenset[str]:
    return frozenset("number" if t in _NUMBERS else t for t in types)


@dataclass(frozen=True, slots=True)
class Contract:
    route_id: str
    legacy: Shape
    new: Shape
    fields: tuple[FieldDrift, ...]  # by path


def compare_shapes(route_id: str, legacy: Shape, new: Shape) -> Contract:
    """Every path either side has, with its drift; a path under a field only one side has, or under one whose type
    changed, is left out (its parent already says added, removed or type_changed)."""
    left, right = field_shapes(legacy), field_shapes(new)
    fields: list[FieldDrift] = []
    explained: list[str] = []
    for path in sorted(set(left) | set(right)):
        if any(len(path) > len(p) and path.startswith(p) and path[len(p)] in ".[" for p in explained):
            continue
        drift = classify(left.get(path), right.get(path))
        if drift in ("added", "removed", "type_changed"):
            explained.append(path)
        fields.append(FieldDrift(path, left.get(path), right.get(path), drift))
    return Contract(route_id, legacy, new, tuple(fields))


# --- output -------------------------------------------------------------------------------------------------------


def _side(f: FieldShape | None) -> dict[str, Any] | None:
    if f is None:
        return None
    side: dict[str, Any] = {"types": list(f.types), "presence": round(f.presence, 4)}
    if f.values is not None:
        side["values"] = list(f.values)
    return side


def contract_document(contract: Contract) -> dict[str, Any]:
    """`{"route", "documents": {"legacy", "new"}, "fields": [{"path", "legacy": {"types", "presence"}, "new": ...,
    "drift"}]}`; a side is null where it lacks the field; "values" is added for enum-like strings."""
    return {
        "route": contract.route_id,
        "documents": {"legacy": contract.legacy.documents, "new": contract.new.documents},
        "skipped": {"legacy": contract.legacy.skipped, "new": contract.new.skipped},
        "fields": [
            {"path": f.path, "legacy": _side(f.legacy), "new": _side(f.new), "drift": f.drift} for f in contract.fields
        ],
    }


def json_schema(shape: Shape, title: str) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a learned shape: types, object properties with the always-present ones
    required, array items, and enum for enum-like strings."""
    schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title}
    if shape.documents:
        schema.update(_node_schema(shape.root))
    return schema


def _node_schema(node: ShapeNode) -> dict[str, Any]:
    types = sorted(node.types)
    if "integer" in types and "number" in types:
        types.remove("integer")
    out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    objects = node.types.get("object", 0.0)
    if node.members:
        out["properties"] = {key: _node_schema(member) for key, member in sorted(node.members.items())}
        required = sorted(k for k, m in node.members.items() if objects and m.seen / objects >= REQUIRED)
        if required:
            out["required"] = required
    if node.items is not None and node.items.seen:
        out["items"] = _node_schema(node.items)
    values = _enum(node)
    if values is not None and types == ["string"]:
        out["enum"] = list(values)
    return out


def _shape_text(f: FieldShape | None) -> str:
    if f is None:
        return "–"
    text = "|".join(f.types) + f" {f.presence:.0%}"
    if f.values is not None:
        shown = ", ".join(f.values[:4]) + (", …" if len(f.values) > 4 else "")
        text += f" {{{shown}}}"
    return text


_DRIFT_STYLE = {
    "added": "yellow", "removed": "red", "type_changed": "red", "optionality_changed": "yellow",
    "values_changed": "yellow", "none": "dim",
}  # fmt: skip


def render_contract(contract: Contract, *, show_all: bool = False) -> RenderableType:
    """The fields that drifted (every field with `show_all`): path, each side's types and presence, the drift."""
    shown = [f for f in contract.fields if show_all or f.drift != "none"]
    drifted = sum(1 for f in contract.fields if f.drift != "none")
    title = (
        f"Contract of {escape(contract.route_id)}: {drifted} of {len(contract.fields)} fields drifted"
        f" (from {contract.legacy.documents} legacy and {contract.new.documents} new stored bodies)"
    )
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("field", "legacy", "new", "drift"):
        table.add_column(name)
    for f in shown:
        style = _DRIFT_STYLE[f.drift]
        table.add_row(
            escape(f.path), escape(_shape_text(f.legacy)), escape(_shape_text(f.new)), f"[{style}]{f.drift}[/{style}]"
        )
    if not shown:
        return Text.from_markup(
            f"{title}\n  " + ("no shape differences" if contract.fields else "no stored JSON bodies for this route yet")
        )
    return Group(Text.from_markup(title), table)
