"""Normalise response bodies and headers for comparison (pure).

Errors raised here: UndecodableBody (a ValueError), when a Content-Encoding could not be undone (corrupt, unknown,
or past the size cap). JSON field paths (`ignore_fields`, `ignore_order`) are in `shadow.judge.jsonpath`.

Everything here is pure and thread-safe: `shadow.judge.compare` runs it in worker threads.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Literal

import brotli
import orjson

from proxy.config.model import Compare

BodyKind = Literal["json", "text", "binary"]
Headers = Sequence[tuple[str, str]]

# Decompression is for comparison only; a bomb or a huge body is compared as opaque bytes instead.
MAX_DECODED = 16 * 1024 * 1024

# Headers whose values differ between any two calls to the same back end (or between two honest back ends).
# Set-Cookie is here for its VALUES only: cookie names are still compared (see `header_view`).
# Content-Encoding is here because bodies are compared decoded, so the coding itself is no difference.
# fmt: off
VOLATILE_HEADERS = frozenset({
    "date", "server", "content-length", "content-encoding", "etag", "x-request-id", "x-correlation-id",
    "request-id", "set-cookie", "age", "expires", "last-modified", "via", "x-runtime", "x-powered-by",
    "connection", "keep-alive", "transfer-encoding", "cf-ray", "cf-cache-status", "traceparent", "tracestate",
    "x-amzn-trace-id", "x-cache", "x-served-by", "x-timer", "server-timing", "alt-svc", "nel", "report-to", "vary",
})
# fmt: on
SET_COOKIE = "set-cookie"


class UndecodableBody(ValueError):
    """The Content-Encoding could not be undone; compare the raw bytes instead."""


# --- bodies -----------------------------------------------------------------------------------------------------


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of header `name` (case-insensitive), or None."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def decode_body(headers: Headers, body: bytes) -> bytes:
    """`body` with its Content-Encoding (gzip, deflate, br; stacked codings too) undone, for comparison only.

    Raises UndecodableBody when a coding is unknown or corrupt, or the output would pass MAX_DECODED.
    """
    return decode_content(header_value(headers, "content-encoding"), body)


def decode_content(encoding: str | None, body: bytes) -> bytes:
    """`decode_body` given the Content-Encoding value itself (None: not encoded)."""
    if not encoding or not body:
        return body
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    data = body
    # Codings are listed in the order they were applied; undo them last first.
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            data = _inflate_gzip(data)
        elif coding == "deflate":
            data = _inflate_deflate(data)
        elif coding == "br":
            data = _unbrotli(data)
        else:
            raise UndecodableBody(f"unsupported content-encoding {coding!r}")
    return data


def _inflate(data: bytes, wbits: int, *, members: bool = False) -> bytes:
    out: list[bytes] = []
    size = 0
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            chunk = decoder.decompress(data, MAX_DECODED + 1 - size)
        except zlib.error as exc:
            raise UndecodableBody(f"corrupt compressed body: {exc}") from None
        size += len(chunk)
        out.append(chunk)
        if size > MAX_DECODED or decoder.unconsumed_tail:
            raise UndecodableBody(f"decoded body larger than {MAX_DECODED} bytes")
        if not decoder.eof:
            raise UndecodableBody("truncated compressed body")
        data = decoder.unused_data
        # gzip allows several members back to back (and some servers pad with zeros).
        if not members or not data.strip(b"\x00"):
            return b"".join(out)


def _inflate_gzip(data: bytes) -> bytes:
    return _inflate(data, 16 + zlib.MAX_WBITS, members=True)


def _inflate_deflate(data: bytes) -> bytes:
    # RFC 9110 says zlib-wrapped, but some servers send raw deflate; accept both.
    try:
        return _inflate(data, zlib.MAX_WBITS)
    except UndecodableBody:
        return _inflate(data, -zlib.MAX_WBITS)


def _unbrotli(data: bytes) -> bytes:
    decoder = brotli.Decompressor()
    try:
        out = decoder.process(data, output_buffer_limit=MAX_DECODED + 1)
    except brotli.error as exc:
        raise UndecodableBody(f"corrupt brotli body: {exc}") from None
    if len(out) > MAX_DECODED or not decoder.can_accept_more_data():
        raise UndecodableBody(f"decoded body larger than {MAX_DECODED} bytes")
    if not decoder.is_finished():
        raise UndecodableBody("truncated brotli body")
    return bytes(out)


_TEXT_TYPES = frozenset(
    {
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/graphql",
        "application/x-ndjson",
        "application/yaml",
        "application/x-yaml",
    }
)


def media_type(content_type: str | None) -> str:
    """The lower-case media type without parameters: 'application/json; charset=utf-8' → 'application/json'."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_type(mt: str) -> bool:
    return mt == "application/json" or mt.endswith("+json")


def media_type_key(content_type: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A Content-Type as what it means: the lower-case type/subtype and its parameters in name order (names and the
    charset value lower-case, quotes removed), without `charset=utf-8` on JSON types, whose encoding is UTF-8 by
    their RFC (8259), so that parameter says nothing."""
    head, *params = content_type.split(";")
    mt = head.strip().lower()
    found: list[tuple[str, str]] = []
    for param in params:
        name, _, value = param.partition("=")
        name, value = name.strip().lower(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name == "charset":
            value = value.lower()
            if value == "utf-8" and _is_json_type(mt):
                continue
        if name:
            found.append((name, value))
    return mt, tuple(sorted(found))


def same_media_type(a: str, b: str) -> bool:
    """Whether two Content-Type values name the same media type (see `media_type_key`)."""
    return a == b or media_type_key(a) == media_type_key(b)


def body_kind(content_type: str | None) -> BodyKind:
    """How a body of this Content-Type is compared: as a JSON document, as text lines, or as opaque bytes."""
    mt = media_type(content_type)
    if mt == "application/json" or mt.endswith("+json") or mt == "text/json":
        return "json"
    if mt.startswith("text/") or mt in _TEXT_TYPES or mt.endswith(("+xml", "/xml")):
        return "text"
    return "binary"


def charset(content_type: str | None, default: str = "utf-8") -> str:
    """The charset parameter of a Content-Type, or `default`."""
    if content_type:
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                return value.strip().strip('"').lower()
    return default


def parse_json(data: bytes) -> object:
    """Parse a JSON document; orjson first, the standard library for what orjson refuses (NaN, Infinity).

    Known limit, kept for speed: orjson reads integers past 64 bits as floats, so two such numbers that differ
    only beyond float precision compare equal (a scan for long digit runs would cost more than the parse).

    Raises ValueError when neither can parse it.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None


def canonical_json(doc: object) -> bytes:
    """Canonical JSON bytes (sorted keys): equal bytes mean strictly equal documents (true is not 1)."""
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. integers past 64 bits from the json fallback
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# --- headers ----------------------------------------------------------------------------------------------------


_COMPARED_NAMES: dict[int, tuple[Compare, frozenset[str]]] = {}


def compared_header_names(rules: Compare) -> frozenset[str]:
    """The allow-listed headers minus the built-in volatile set and the route's ignore_headers (cached per rules).

    Cached by identity: hashing the frozen rules costs more than the lookup saves; the entry holds the rules, so
    their id cannot be reused while cached."""
    hit = _COMPARED_NAMES.get(id(rules))
    if hit is not None and hit[0] is rules:
        return hit[1]
    if len(_COMPARED_NAMES) >= 256:
        _COMPARED_NAMES.clear()  # configs reloaded many times: start over rather than grow
    names = frozenset(h.lower() for h in rules.headers) - VOLATILE_HEADERS - rules.ignore_headers
    _COMPARED_NAMES[id(rules)] = (rules, names)
    return names


def _cookie_name(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[0].strip()


def same_header_value(name: str, a: str | None, b: str | None) -> bool:
    """Whether a compared header (lower-case name, values from `header_view`) is the same on both sides: the one
    rule for the fast path and the difference list. Content-Type is compared as a media type, others as text."""
    if a is None or b is None:
        return a is b
    return a == b or (name == "content-type" and same_media_type(a, b))


def same_header_views(a: dict[str, str], b: dict[str, str]) -> bool:
    """Whether two `header_view`s are the same, header by header (`same_header_value`)."""
    if a == b:
        return True
    return a.keys() == b.keys() and all(same_header_value(name, value, b[name]) for name, value in a.items())


def header_view(headers: Headers, rules: Compare) -> dict[str, str]:
    """The headers that are compared: allow-listed values (repeats joined by ', '), plus the names of the
    cookies set (key 'set-cookie', names joined by ', ') unless 'set-cookie' is in ignore_headers."""
    wanted = compared_header_names(rules)
    view: dict[str, str] = {}
    cookies: set[str] | None = None
    for key, value in headers:
        name = key.lower()
        if name in wanted:
            view[name] = f"{view[name]}, {value}" if name in view else value
        elif name == SET_COOKIE:
            cookies = cookies or set()
            cookies.add(_cookie_name(value))
    if cookies and SET_COOKIE not in rules.ignore_headers:
        cookies.discard("")
        if cookies:
            view[SET_COOKIE] = ", ".join(sorted(cookies))
    return view
