"""routes.yaml's keys for editors and readers: the JSON Schema and the README key table, with every default.

Each key is declared once. `proxy.config.schema` gives its type, constraints and description; its default is the typed
default of the field of the same name in the `proxy.config.model` dataclass the loader builds from that section.
`keys()` walks the key tables alongside the dataclasses' type hints to pair them, so a key added to a table and to
its dataclass shows up here, in docs/routes.schema.json and in README.md after `make schema`:

    python -m proxy.config.keydocs --json               # the JSON Schema, as docs/routes.schema.json holds it
    python -m proxy.config.keydocs --markdown           # the key table, as README.md holds it between its markers
    python -m proxy.config.keydocs --readme README.md   # rewrite that table in place
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.config.model import Config, Route
from proxy.config.scalars import JsonObject, Scalar
from proxy.config.schema import TOP, Either, ListOf, MapOf, Section, Spec

BEGIN, END = "<!-- keys:begin -->", "<!-- keys:end -->"

# Route fields without a default of their own: they take the value of another key.
_INHERITED: Mapping[tuple[type, str], str] = {
    (Route, "upstream"): "defaults.new",
    (Route, "legacy"): "defaults.legacy",
}


@dataclass(frozen=True, slots=True)
class Key:
    """One row of the key table: a section or a leaf value, its default written as routes.yaml would write it."""

    path: str  # e.g. "routes[].timeouts.read": list items are `[]`, user-chosen names `NAME`
    spec: Spec
    default: object = None  # None: no default (required, or leaving it out turns the feature off)
    inherited: str | None = None  # the key this one takes its default from, e.g. "defaults.new"
    same_as: str | None = None  # a section listed earlier with the same keys (a route's timeouts)
    required: bool = False


def is_leaf(spec: Spec) -> bool:
    """A key that holds values rather than more keys: a scalar, or a list or map of scalars."""
    if isinstance(spec, ListOf):
        return isinstance(spec.item, Scalar)
    if isinstance(spec, MapOf):
        return isinstance(spec.value, Scalar)
    if isinstance(spec, Either):
        return spec.mapping is None
    return isinstance(spec, Scalar)


def _model_in(hint: object) -> type | None:
    """The config dataclass a field holds: itself, or inside `X | None`, `tuple[X, ...]`, `Mapping[str, X]`."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    return next((found for arg in typing.get_args(hint) if (found := _model_in(arg)) is not None), None)


def _child_model(model: type | None, key: str) -> type | None:
    return None if model is None else _model_in(typing.get_type_hints(model).get(key))


def _typed_default(model: type | None, key: str) -> object:
    for field in dataclasses.fields(model) if model is not None else ():
        if field.name == key:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
    return None


def _spell(spec: Spec, value: object) -> object:
    """A typed default (seconds, a frozenset, pairs) as routes.yaml writes it ("2s", a sorted list, a mapping)."""
    if value is None:
        return None
    if isinstance(spec, Scalar):
        return spec.spell(value)
    if isinstance(spec, ListOf) and isinstance(spec.item, Scalar) and isinstance(value, tuple | frozenset):
        items = [spec.item.spell(item) for item in value]
        return sorted(items, key=str) if spec.as_set else items
    if isinstance(spec, MapOf) and isinstance(spec.value, Scalar):
        pairs = value.items() if isinstance(value, Mapping) else value if isinstance(value, tuple) else ()
        return {str(name): spec.value.spell(item) for name, item in pairs}
    if isinstance(spec, Either):
        if isinstance(value, tuple) and spec.sequence is not None:
            return _spell(spec.sequence, value)
        return None if spec.scalar is None else _spell(spec.scalar, value)
    return None


def _inner(spec: Spec) -> tuple[Section | None, str]:
    """The section a non-leaf key opens, and how its keys' paths continue (`[]` for list items)."""
    if isinstance(spec, Section):
        return spec, ""
    if isinstance(spec, ListOf) and isinstance(spec.item, Section):
        return spec.item, "[]"
    if isinstance(spec, MapOf) and isinstance(spec.value, Section):
        return spec.value, ".NAME"
    if isinstance(spec, Either):
        return spec.mapping, ""
    return None, ""


def _default_at(path: str) -> object:
    """The default of a key outside lists and maps, e.g. "defaults.new"."""
    section: Section | None = TOP
    model: type | None = Config
    *parents, last = path.split(".")
    for name in parents:
        assert section is not None, path
        section, model = _inner(section.keys[name])[0], _child_model(model, name)
    assert section is not None, path
    return _spell(section.keys[last], _typed_default(model, last))


def _leaf_default(model: type | None, name: str, spec: Spec) -> tuple[object, str | None]:
    """A leaf's default as written, and the key it is taken from when it has none of its own."""
    inherited = None if model is None else _INHERITED.get((model, name))
    if inherited is not None:
        return _default_at(inherited), inherited
    return _spell(spec, _typed_default(model, name)), None


def _walk(section: Section, model: type | None, path: str, seen: dict[int, str]) -> Iterator[Key]:
    for name, spec in section.keys.items():
        at = f"{path}.{name}" if path else name
        required = name in section.required
        if is_leaf(spec):
            default, inherited = _leaf_default(model, name, spec)
            yield Key(at, spec, default, inherited, required=required)
            continue
        inner, more = _inner(spec)
        first = None if inner is None else seen.get(id(inner))
        yield Key(at, spec, same_as=first, required=required)
        if inner is not None and first is None:
            seen[id(inner)] = at
            yield from _walk(inner, _child_model(model, name), at + more, seen)


def keys() -> tuple[Key, ...]:
    """Every key of routes.yaml in file order; a section met again (a route's `timeouts`) is listed once more
    with `same_as`, not key by key."""
    return tuple(_walk(TOP, Config, "", {}))


def _render(spec: Spec, model: type | None) -> JsonObject:
    out: JsonObject
    if isinstance(spec, Scalar):
        out = dict(spec.json)
    elif isinstance(spec, Section):
        properties = {}
        for name, child in spec.keys.items():
            properties[name] = rendered = _render(child, _child_model(model, name))
            default = _leaf_default(model, name, child)[0] if is_leaf(child) else None
            if default is not None:
                rendered["default"] = default
        out = {"type": "object", "additionalProperties": False, "properties": properties}
        if spec.required:
            out["required"] = list(spec.required)
        if spec.extensions:
            out["patternProperties"] = {"^x-": {"description": "Ignored: a place for YAML anchors"}}
    elif isinstance(spec, ListOf):
        out = {"type": "array", "items": _render(spec.item, model)}
        if spec.as_set:
            out["uniqueItems"] = True
    elif isinstance(spec, MapOf):
        out = {"type": "object", "additionalProperties": _render(spec.value, model)}
        if spec.key_pattern is not None:
            out["propertyNames"] = {"pattern": spec.key_pattern}
    else:
        shapes = (spec.scalar, spec.mapping, spec.sequence)
        out = {"anyOf": [_render(shape, model) for shape in shapes if shape is not None]}
    out["description"] = spec.description
    return out


def json_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of routes.yaml, from the loader's own key tables, with every default."""
    schema = _render(TOP, Config)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "strangler routes.yaml"
    return schema


def render_json() -> str:
    """The schema as written to docs/routes.schema.json: stable key order, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{name}: {_yaml(item)}" for name, item in value.items()) + "}"
    return str(value)


def _row(key: Key) -> str:
    meaning = key.spec.meaning if isinstance(key.spec, Scalar) else key.spec.description
    if key.same_as:
        meaning += f" Keys as in `{key.same_as}`."
    if key.default is not None:
        default = f"`{_yaml(key.default)}`" + (f" (from `{key.inherited}`)" if key.inherited else "")
    else:
        default = "required" if key.required else ""
    escaped = meaning.replace("|", "\\|")
    return f"| `{key.path}` | {escaped} | {default} |"


def markdown() -> str:
    """The README key table: every key's path, meaning and default."""
    rows = [_row(key) for key in keys()]
    return "\n".join(["| key | meaning | default |", "|---|---|---|", *rows]) + "\n"


def splice(readme: str, table: str) -> str:
    """`readme` with the text between its key-table markers replaced by `table`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    return f"{readme[: start + len(BEGIN)]}\n\n{table}\n{readme[end:]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m proxy.config.keydocs", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--json", action="store_true", help="print the JSON Schema")
    group.add_argument("--markdown", action="store_true", help="print the README key table")
    group.add_argument("--readme", type=Path, metavar="FILE", help="rewrite the key table in FILE")
    args = parser.parse_args(argv)
    if args.readme is not None:
        path: Path = args.readme
        path.write_text(splice(path.read_text(encoding="utf-8"), markdown()), encoding="utf-8")
    else:
        sys.stdout.write(render_json() if args.json else markdown())


if __name__ == "__main__":
    main()
