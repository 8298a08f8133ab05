"""Route path templates: parsing `/api/orders/{id:int}`-style templates into segments, and the typed matchers.

A template is compiled once, when a config loads (`TemplateError` names what is wrong and a `hint`); the compiled
`Template` carries each segment's kind and the precedence rank `proxy.routing` sorts and walks by. Segments are
literal text (matched case-insensitively), `{name}`, `{name:type}` (`typed_matchers`: int, uuid), `*` (one segment)
and `**` (the rest, last only). Literal segments that hold ';' or end in a dot or space are refused: requests are
matched by their segments' keys (`proxy.paths.match_key`), which never hold them. `proxy.paths` owns the canonical
request path; this module owns the templates it is matched against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal
from urllib.parse import unquote

SegmentKind = Literal["literal", "typed", "param", "star", "doublestar"]

# Lower is more specific. END ranks a template that has run out of segments: only `**` ranks below it.
_RANK: Mapping[str, int] = MappingProxyType({"literal": 0, "typed": 1, "param": 2, "star": 3, "doublestar": 5})
_END = 4

_HEX_DIGITS = "0123456789abcdefABCDEF"


def _is_int(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    # isdigit() alone accepts non-ASCII digits such as '²'.
    return digits.isascii() and digits.isdigit()


def _is_uuid(text: str) -> bool:
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return False
    compact = text.replace("-", "")
    return len(compact) == 32 and not compact.strip(_HEX_DIGITS)


typed_matchers: Mapping[str, Callable[[str], bool]] = MappingProxyType({"int": _is_int, "uuid": _is_uuid})


class TemplateError(ValueError):
    """A route path template cannot be parsed; `hint` says how to write it instead."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class TemplateSegment:
    kind: SegmentKind
    value: str = ""  # decoded literal text, or the parameter name
    type: str = ""  # the type of a typed parameter

    @property
    def rank(self) -> int:
        return _RANK[self.kind]

    def __str__(self) -> str:
        if self.kind == "literal":
            return self.value
        if self.kind == "typed":
            return f"{{{self.value}:{self.type}}}"
        if self.kind == "param":
            return f"{{{self.value}}}"
        return "*" if self.kind == "star" else "**"


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    segments: tuple[TemplateSegment, ...]
    # Rank per segment plus END unless the template ends in `**`; tuples compare in precedence order.
    path_key: tuple[int, ...]
    params: tuple[tuple[str, int], ...]  # (name, segment position)

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The parameters bound when this template matches `segments` (decoded), else None."""
        for i, ts in enumerate(self.segments):
            if ts.kind == "doublestar":
                return self.bind(segments)
            if i >= len(segments):
                return None
            if ts.kind == "literal" and segments[i].lower() != ts.value.lower():
                return None
            if ts.kind == "typed" and not typed_matchers[ts.type](segments[i]):
                return None
        return self.bind(segments) if len(segments) == len(self.segments) else None

    def bind(self, segments: Sequence[str]) -> dict[str, str]:
        return {name: segments[pos] for name, pos in self.params}


def parse_template(template: str) -> Template:
    """Parse a path template such as `/api/orders/{id:int}` or `/static/**`; raises TemplateError."""
    if not template.startswith("/"):
        raise TemplateError(f"path template must start with '/': {template!r}", f"write '/{template}'")
    parts = template[1:].split("/")
    if parts[-1] == "":
        parts.pop()  # trailing slash: not significant for matching
    segments: list[TemplateSegment] = []
    params: list[tuple[str, int]] = []
    for pos, part in enumerate(parts):
        segment = _parse_segment(template, part)
        if segment.kind == "doublestar" and pos != len(parts) - 1:
            raise TemplateError(f"'**' must be the last segment in {template!r}", "use '*' for one segment")
        if segment.kind in ("typed", "param"):
            if any(name == segment.value for name, _ in params):
                raise TemplateError(
                    f"duplicate parameter '{segment.value}' in {template!r}", "give each parameter its own name"
                )
            params.append((segment.value, pos))
        segments.append(segment)
    key = [s.rank for s in segments]
    if not segments or segments[-1].kind != "doublestar":
        key.append(_END)
    return Template(template, tuple(segments), tuple(key), tuple(params))


def _parse_segment(template: str, part: str) -> TemplateSegment:
    if part == "":
        raise TemplateError(f"empty segment ('//') in {template!r}", "paths are matched with repeated slashes merged")
    if part in (".", ".."):
        raise TemplateError(f"dot segment '{part}' in {template!r}", "request paths never contain dot segments")
    if part == "*":
        return TemplateSegment("star")
    if part == "**":
        return TemplateSegment("doublestar")
    if part.startswith("{") and part.endswith("}"):
        name, _, type_name = part[1:-1].partition(":")
        if not name:
            raise TemplateError(f"empty parameter name in {template!r}", "write '{id}' or '{id:int}'")
        if not name.isidentifier():
            raise TemplateError(f"bad parameter name '{name}' in {template!r}", "use letters, digits and '_'")
        if ":" not in part:
            return TemplateSegment("param", name)
        if type_name not in typed_matchers:
            known = ", ".join(sorted(typed_matchers))
            raise TemplateError(f"unknown parameter type '{type_name}' in {template!r}", f"known types: {known}")
        return TemplateSegment("typed", name, type_name)
    if "{" in part or "}" in part or "*" in part:
        raise TemplateError(
            f"segment {part!r} in {template!r} mixes text with a parameter or wildcard",
            "a parameter or wildcard must be a whole segment, e.g. '/files/{name}'",
        )
    literal = unquote(part)
    if ";" in literal or literal[-1] in ". ":
        # Requests are matched with ';...' cut and trailing dots and spaces dropped (proxy.paths.match_key).
        raise TemplateError(
            f"segment {part!r} in {template!r} holds ';' or ends in a dot or space: no request can match it",
            "requests are matched without ';' parameters and trailing dots; write the segment without them",
        )
    return TemplateSegment("literal", literal)
