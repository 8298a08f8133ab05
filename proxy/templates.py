"""Route path templates: parsing `/api/orders/{id:int}`-style templates into segments, and the typed matchers.

A template is compiled once, when a config loads (`TemplateError` names what is wrong and a `hint`); the compiled
`Template` carries each segment's kind and the precedence rank `proxy.routing` sorts and walks by. Segments are
literal text (matched case-insensitively), `{name}`, `{name:type}` (`typed_matchers`: int, uuid), `*` (one segment)
and `**` (the rest, last only). A mixed segment joins literal text and parameters, `{name}.json`, `v{n:int}`,
`{id:int}.{format}`: a literal must stand between two parameters, each parameter takes at least one character, and
when the literal between two parameters occurs more than once the earlier parameter takes the longest text (`a.b.c`
against `{name}.{ext}` binds name `a.b`), as ASP.NET does. Literal text (whole segments or mixed parts) that holds
';' or ends a segment in a dot or space is refused: requests are matched by their segments' keys
(`proxy.paths.match_key`), which never hold them. `proxy.paths` owns the canonical
request path; this module owns the templates it is matched against.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import unquote

SegmentKind = Literal["literal", "mixed", "typed", "param", "star", "doublestar"]

# Lower is more specific. END ranks a template that has run out of segments: only `**` ranks below it. A mixed
# segment ranks between a literal and a typed parameter, by its literal text: `_MIXED_BASE - characters`, so the
# more literal text a mixed segment has, the more specific it is (`{a}.tar.gz` beats `{a}.gz`).
_STEP = 1 << 16
_RANK: Mapping[str, int] = MappingProxyType(
    {"literal": 0, "typed": 2 * _STEP, "param": 3 * _STEP, "star": 4 * _STEP, "doublestar": 6 * _STEP}
)
_END = 5 * _STEP
_MIXED_BASE = 2 * _STEP - 1
_PARAM_RX: Mapping[str, str] = MappingProxyType(
    {
        "": "(.+)",
        "int": "(-?[0-9]+)",
        "uuid": "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
    }
)

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
class MixedPart:
    """One piece of a mixed segment: literal text (`name` empty), or a parameter `name` of `type` ('' if untyped)."""

    text: str = ""  # decoded literal text, as written
    name: str = ""
    type: str = ""


@dataclass(frozen=True, slots=True)
class TemplateSegment:
    kind: SegmentKind
    value: str = ""  # decoded literal text, the parameter name, or a mixed segment as written
    type: str = ""  # the type of a typed parameter
    parts: tuple[MixedPart, ...] = ()  # a mixed segment's pieces, in order
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)  # a mixed segment's `regex`

    @property
    def rank(self) -> int:
        if self.kind == "mixed":
            return _MIXED_BASE - min(self.literal_chars, _STEP - 2)
        return _RANK[self.kind]

    @property
    def literal_chars(self) -> int:
        return sum(len(p.text) for p in self.parts)

    @property
    def shape(self) -> str:
        """A mixed segment with parameter names left out and literals lower-cased: equal shapes match alike."""
        return _shape(self.parts)

    @property
    def regex(self) -> re.Pattern[str]:
        """Matches a mixed segment's lower-cased request segment; group i is the i-th parameter."""
        return self.pattern or _compiled(self.shape)

    def mixed_params(self, segment: str) -> dict[str, str] | None:
        """A mixed segment's parameters bound from a request segment, or None if it does not match."""
        lowered = segment.lower()
        m = self.regex.fullmatch(lowered)
        if m is None:
            return None
        # Literals compare lower-cased (the path policy); values keep their case unless lower() changed the length.
        text = segment if len(lowered) == len(segment) else lowered
        names = [p.name for p in self.parts if p.name]
        return {name: text[m.start(i + 1) : m.end(i + 1)] for i, name in enumerate(names)}

    def __str__(self) -> str:
        if self.kind in ("literal", "mixed"):
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
    params: tuple[tuple[str, int], ...]  # (name, segment position) of whole-segment parameters
    mixed: tuple[int, ...] = ()  # positions of mixed segments, whose parameters `bind` reads from their parts

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
            if ts.kind == "mixed" and ts.regex.fullmatch(segments[i].lower()) is None:
                return None
        return self.bind(segments) if len(segments) == len(self.segments) else None

    def bind(self, segments: Sequence[str]) -> dict[str, str]:
        return {name: segments[pos] for name, pos in self.params}


@dataclass(frozen=True, slots=True)
class MixedTemplate(Template):
    """A template with mixed segments: a class of its own so that binding the others' parameters costs no check."""

    def bind(self, segments: Sequence[str]) -> dict[str, str]:
        bound = {name: segments[pos] for name, pos in self.params}
        for pos in self.mixed:
            bound.update(self.segments[pos].mixed_params(segments[pos]) or {})
        return bound


def _shape(parts: Sequence[MixedPart]) -> str:
    return "".join(p.text.lower() if not p.name else f"{{:{p.type}}}" for p in parts)


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(shape: str) -> re.Pattern[str]:
    found = _REGEX_CACHE.get(shape)
    if found is None:
        pieces = re.split(r"\{:(\w*)\}", shape)  # literal, type, literal, type, ..., literal
        rx = "".join(re.escape(p) if i % 2 == 0 else _PARAM_RX[p] for i, p in enumerate(pieces))
        found = _REGEX_CACHE[shape] = re.compile(rx, re.DOTALL)
    return found


def parse_template(template: str) -> Template:
    """Parse a path template such as `/api/orders/{id:int}` or `/static/**`; raises TemplateError."""
    if not template.startswith("/"):
        raise TemplateError(f"path template must start with '/': {template!r}", f"write '/{template}'")
    parts = template[1:].split("/")
    if parts[-1] == "":
        parts.pop()  # trailing slash: not significant for matching
    segments: list[TemplateSegment] = []
    params: list[tuple[str, int]] = []
    seen: set[str] = set()
    for pos, part in enumerate(parts):
        segment = _parse_segment(template, part)
        if segment.kind == "doublestar" and pos != len(parts) - 1:
            raise TemplateError(f"'**' must be the last segment in {template!r}", "use '*' for one segment")
        names = [p.name for p in segment.parts if p.name] if segment.kind == "mixed" else []
        if segment.kind in ("typed", "param"):
            names = [segment.value]
        for name in names:
            if name in seen:
                raise TemplateError(f"duplicate parameter '{name}' in {template!r}", "give each parameter its own name")
            seen.add(name)
        if segment.kind in ("typed", "param"):
            params.append((segment.value, pos))
        segments.append(segment)
    key = [s.rank for s in segments]
    if not segments or segments[-1].kind != "doublestar":
        key.append(_END)
    mixed = tuple(i for i, s in enumerate(segments) if s.kind == "mixed")
    return (MixedTemplate if mixed else Template)(template, tuple(segments), tuple(key), tuple(params), mixed)


def _parse_segment(template: str, part: str) -> TemplateSegment:
    if part == "":
        raise TemplateError(f"empty segment ('//') in {template!r}", "paths are matched with repeated slashes merged")
    if part in (".", ".."):
        raise TemplateError(f"dot segment '{part}' in {template!r}", "request paths never contain dot segments")
    if part == "*":
        return TemplateSegment("star")
    if part == "**":
        return TemplateSegment("doublestar")
    if "*" in part:
        raise TemplateError(
            f"segment {part!r} in {template!r} mixes text with a wildcard",
            "a wildcard must be a whole segment, e.g. '/files/*'; for text around a value use a parameter",
        )
    if "{" not in part and "}" not in part:
        return TemplateSegment("literal", _literal(template, part, part, last=True))
    pieces = re.split(r"(\{[^{}]*\})", part)  # literal, {param}, literal, ..., literal
    if any("{" in p or "}" in p for p in pieces[::2]):
        raise TemplateError(f"unbalanced braces in segment {part!r} of {template!r}", "write '{name}' or 'v{n:int}'")
    if len(pieces) == 3 and pieces[0] == pieces[2] == "":
        name, type_name = _param(template, pieces[1])
        return TemplateSegment("typed", name, type_name) if type_name else TemplateSegment("param", name)
    parts: list[MixedPart] = []
    for i, piece in enumerate(pieces):
        if i % 2:
            parts.append(MixedPart("", *_param(template, piece)))
        elif piece:
            parts.append(MixedPart(_literal(template, part, piece, last=i == len(pieces) - 1)))
        elif 0 < i < len(pieces) - 1:
            raise TemplateError(
                f"segment {part!r} in {template!r} has two parameters with no literal text between them: ambiguous",
                "put literal text between them, e.g. '{name}.{ext}', or use one parameter",
            )
    return TemplateSegment("mixed", part, parts=tuple(parts), pattern=_compiled(_shape(parts)))


def _param(template: str, braced: str) -> tuple[str, str]:
    """The name and type ('' if untyped) of `{name}` or `{name:type}`."""
    name, colon, type_name = braced[1:-1].partition(":")
    if not name:
        raise TemplateError(f"empty parameter name in {template!r}", "write '{id}' or '{id:int}'")
    if not name.isidentifier():
        raise TemplateError(f"bad parameter name '{name}' in {template!r}", "use letters, digits and '_'")
    if colon and type_name not in typed_matchers:
        known = ", ".join(sorted(typed_matchers))
        raise TemplateError(f"unknown parameter type '{type_name}' in {template!r}", f"known types: {known}")
    return name, type_name


def _literal(template: str, part: str, text: str, last: bool) -> str:
    literal = unquote(text)
    if ";" in literal or (last and literal[-1] in ". "):
        # Requests are matched with ';...' cut and trailing dots and spaces dropped (proxy.paths.match_key).
        raise TemplateError(
            f"segment {part!r} in {template!r} holds ';' or ends in a dot or space: no request can match it",
            "requests are matched without ';' parameters and trailing dots; write the segment without them",
        )
    return literal
