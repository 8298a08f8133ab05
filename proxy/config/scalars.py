"""Leaf values of routes.yaml: each `Scalar` checks and converts one YAML value and knows its JSON Schema.

Converters get the value PyYAML constructed and the text as written, return the final typed value, and raise
`BadValue` (a message plus a hint) for anything else; `proxy.config.schema` assembles them into the key tables.
`spell` goes the other way, from a typed default (seconds, bytes, a fraction) to the form a person writes in
routes.yaml ("2s", "64KiB", "0.1%"), for the JSON Schema's defaults and the README key table.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from yarl import URL

from proxy.config.units import (
    DURATION_FORMS,
    RATE_FORMS,
    SIZE_FORMS,
    WORKERS_FORMS,
    BadValue,
    parse_duration,
    parse_rate,
    parse_size,
    parse_workers,
)
from proxy.jsonpath import BadPath, compile_path

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_TOKEN_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # RFC 9110 token: what a header name may be
_NUMBER = r"\s*(\d+(\.\d+)?|\.\d+)\s*"
JsonObject = dict[str, object]


def as_written(value: object) -> object:
    """A typed default as routes.yaml writes it: plain values as they are, anything else (a Path) as its text."""
    return value if isinstance(value, str | bool | int | float) else str(value)


@dataclass(frozen=True, slots=True)
class Scalar:
    """A leaf value: `convert(value, raw)` gets the YAML-constructed value and its source text; `spell(typed)`
    writes a converted value back as a person would (a default of 2.0 seconds as "2s")."""

    description: str  # with the accepted forms at the end, when the value has units
    json: Mapping[str, object]
    convert: Callable[[object, str], object]
    spell: Callable[[object], object] = as_written
    forms: str = ""  # the accepted forms (units) that close `description`

    @property
    def meaning(self) -> str:
        """The description without the accepted forms, for tables that explain the forms once."""
        return self.description.removesuffix(f" ({self.forms})") if self.forms else self.description


def _shown(value: object, raw: str) -> str:
    return "null" if value is None else repr(raw if isinstance(value, str) else value)


def text(description: str, pattern: str | None = None, what: str = "text", hint: str | None = None) -> Scalar:
    """Any non-null scalar, kept as written (so `X-Version: 2` matches the string "2")."""

    def convert(value: object, raw: str) -> object:
        if value is None or isinstance(value, list | dict):
            raise BadValue(f"expected {what}, got {_shown(value, raw)}")
        if pattern is not None and not re.match(pattern, raw):
            raise BadValue(f"invalid {what} {raw!r}", hint or f"must match {pattern}")
        return raw

    schema: JsonObject = {"type": "string"} if pattern is None else {"type": "string", "pattern": pattern}
    return Scalar(description, schema, convert)


def name(description: str) -> Scalar:
    return text(description, NAME_PATTERN, "name", "use letters, digits, '_', '.' and '-'")


def header_name(description: str) -> Scalar:
    """A header name, lower-cased so later comparisons need not care about case."""
    inner = text(description, _TOKEN_PATTERN, "header name", "letters, digits and -, e.g. X-User-Id")
    return Scalar(description, inner.json, lambda value, raw: str(inner.convert(value, raw)).lower())


def integer(description: str, minimum: int = 0, maximum: int | None = None) -> Scalar:
    def convert(value: object, raw: str) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadValue(f"expected a whole number, got {_shown(value, raw)}")
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise BadValue(f"{value} is out of range", f"must be {bounds}")
        return value

    schema: JsonObject = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return Scalar(description, schema, convert)


def number(description: str, minimum: float = 0.0, maximum: float | None = None, above: bool = False) -> Scalar:
    """A float; `above` makes the minimum exclusive (a ratio of 0 makes no sense)."""

    def convert(value: object, raw: str) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadValue(f"expected a number, got {_shown(value, raw)}")
        low = value <= minimum if above else value < minimum
        if low or (maximum is not None and value > maximum):
            bounds = f"{'above' if above else 'at least'} {minimum:g}"
            raise BadValue(
                f"{value} is out of range", f"must be {bounds}{'' if maximum is None else f' and at most {maximum:g}'}"
            )
        return float(value)

    schema: JsonObject = {"type": "number", ("exclusiveMinimum" if above else "minimum"): minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return Scalar(description, schema, convert)


def boolean(description: str) -> Scalar:
    def convert(value: object, raw: str) -> object:
        if not isinstance(value, bool):
            raise BadValue(f"expected true or false, got {_shown(value, raw)}")
        return value

    return Scalar(description, {"type": "boolean"}, convert)


def choice(description: str, options: tuple[str, ...], spell: Callable[[object], object] = as_written) -> Scalar:
    """One of `options`; `spell` names the option a typed default stands for, when the field is not a string."""

    def convert(value: object, raw: str) -> object:
        if raw not in options or value is None:
            raise BadValue(f"invalid value {_shown(value, raw)}", f"one of: {', '.join(options)}")
        return raw

    return Scalar(description, {"enum": list(options)}, convert, spell)


def _readable(value: object, written: str, parse: Callable[[object], object]) -> object:
    """`written` when it reads back as exactly `value` (no rounding slipped in), else the plain number."""
    try:
        return written if parse(written) == value else value
    except BadValue:
        return value


def _spell_duration(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return value
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001)):
        count = value / seconds
        if count >= 1 and count == round(count):
            return _readable(value, f"{round(count)}{unit}", parse_duration)
    return value


def _spell_size(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return value
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value % factor == 0:
            return _readable(value, f"{value // factor}{unit}", parse_size)
    return value


def _spell_rate(value: object) -> object:
    """Small shares read better as percentages (0.001 as "0.1%"); 0, 0.2 and 1.0 stay numbers."""
    if isinstance(value, bool) or not isinstance(value, float) or not 0 < value < 0.1:
        return value
    return _readable(value, f"{value * 100:g}%", parse_rate)


def _unit(
    description: str,
    parse: Callable[[object], object],
    unit: str,
    forms: str,
    positive: bool,
    spell: Callable[[object], object],
) -> Scalar:
    def convert(value: object, raw: str) -> object:
        parsed = parse(value)
        if positive and parsed == 0:
            raise BadValue(f"{_shown(value, raw)} must be more than zero", f"accepted: {forms}")
        return parsed

    pattern = f"^{_NUMBER}{unit}\\s*$"
    number_schema: JsonObject = {"type": "number", ("exclusiveMinimum" if positive else "minimum"): 0}
    described = f"{description} ({forms})"
    json = {"anyOf": [number_schema, {"type": "string", "pattern": pattern}]}
    return Scalar(described, json, convert, spell, forms)


def duration(description: str, positive: bool = True) -> Scalar:
    return _unit(description, parse_duration, "(ms|s|m|h|d)?", DURATION_FORMS, positive, _spell_duration)


def size(description: str) -> Scalar:
    return _unit(description, parse_size, "([KkMmGgTt][Ii]?[Bb]|[Bb])?", SIZE_FORMS, False, _spell_size)


def rate(description: str) -> Scalar:
    def convert(value: object, raw: str) -> object:
        return parse_rate(value)

    schema = {
        "anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "string", "pattern": f"^{_NUMBER}%?$"}]
    }
    return Scalar(f"{description} ({RATE_FORMS})", schema, convert, _spell_rate, RATE_FORMS)


def method(description: str) -> Scalar:
    def convert(value: object, raw: str) -> object:
        upper = raw.upper()
        if value is None or upper not in HTTP_METHODS:
            raise BadValue(f"unknown HTTP method {_shown(value, raw)}", f"one of: {', '.join(HTTP_METHODS)}")
        return upper

    return Scalar(description, {"enum": list(HTTP_METHODS)}, convert)


def http_url(description: str) -> Scalar:
    def convert(value: object, raw: str) -> object:
        shown = _shown(value, raw)
        try:
            url = URL(raw) if isinstance(value, str) else None
        except ValueError:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise BadValue(
                f"invalid upstream url {shown}", "an absolute http:// or https:// URL, e.g. http://10.0.0.5:8000"
            )
        if url.raw_query_string or url.raw_fragment:
            raise BadValue(f"upstream url {shown} has a query or fragment", "give only scheme://host:port/base-path")
        # Paths are joined as base + request path, so a trailing slash would double up.
        return url.with_path(url.path.rstrip("/"))

    return Scalar(description, {"type": "string", "format": "uri", "pattern": "^https?://"}, convert)


def network(description: str) -> Scalar:
    def convert(value: object, raw: str) -> object:
        accepted = "a CIDR like 10.0.0.0/8, or one address"
        if not isinstance(value, str):
            raise BadValue(f"invalid network {_shown(value, raw)}", accepted)
        try:
            return ipaddress.ip_network(raw, strict=True)
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise BadValue(f"invalid network {raw!r}", accepted) from None
        raise BadValue(f"network {raw!r} has host bits set", f"did you mean {loose}?")

    return Scalar(description, {"type": "string"}, convert)


def json_path(description: str) -> Scalar:
    """A field path, compiled here so a malformed one is reported with its place in the file."""
    hint = "e.g. $.meta.generated_at, $.items[*].id, $['odd key']"
    inner = text(description, r"^\$", "JSON path", "start at the document root, e.g. $.meta.generated_at")

    def convert(value: object, raw: str) -> object:
        path = str(inner.convert(value, raw))
        try:
            compile_path(path)
        except BadPath as exc:
            raise BadValue(str(exc), hint) from None
        return path

    return Scalar(description, inner.json, convert)


def version(description: str) -> Scalar:
    def convert(value: object, raw: str) -> object:
        if value != 1 or isinstance(value, bool):
            raise BadValue(f"unsupported version {_shown(value, raw)}", "this strangler reads version: 1")
        return 1

    return Scalar(description, {"const": 1}, convert)


def worker_count(description: str) -> Scalar:
    """A proxy worker count: a whole number from 1, or "auto"."""
    schema: JsonObject = {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}]}
    return Scalar(
        f"{description} ({WORKERS_FORMS})",
        schema,
        lambda value, raw: parse_workers(value),
        forms=WORKERS_FORMS,
    )
