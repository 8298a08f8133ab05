"""Normalise response bodies and headers for comparison (pure).

Errors raised here:

    ValueError
    ├── UndecodableBody   Content-Encoding could not be undone (corrupt, unknown, or past the size cap)
    └── BadPath           an ignore_fields / ignore_order path does not parse

Everything here is pure and thread-safe: `shadow.compare` runs it in worker threads.
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Literal

import brotli
import orjson

from proxy.config import Compare

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


class BadPath(ValueError):
    """A JSONPath-like field path that does not parse."""


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


# --- JSON field paths -------------------------------------------------------------------------------------------


class Wildcard(enum.Enum):
    """`[*]` or `.*`: every element of an array, every value of an object."""

    ANY = "*"


PathStep = str | int | Wildcard
ANY = Wildcard.ANY

_STEP = re.compile(
    r"""
      \.(?P<name>[^.\[\]'"]+)                    # .name  or  .*
    | \[\s*(?P<index>-?\d+)\s*\]                 # [3]
    | \[\s*(?P<star>\*)\s*\]                     # [*]
    | \[\s*'(?P<sq>(?:[^'\\]|\\.)*)'\s*\]        # ['weird key']
    | \[\s*"(?P<dq>(?:[^"\\]|\\.)*)"\s*\]        # ["weird key"]
    """,
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")


@functools.lru_cache(maxsize=1024)
def compile_path(path: str) -> tuple[PathStep, ...]:
    """Parse `$.a.b`, `$.items[*].x`, `$.items[0].x`, `$['weird key']` into steps (cached).

    A missing leading `$` is tolerated (`a.b` means `$.a.b`). Raises BadPath.
    """
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    elif text and text[0] not in ".[":
        text = "." + text
    steps: list[PathStep] = []
    pos = 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            raise BadPath(f"cannot parse field path {path!r} at character {pos + len(path) - len(text) + 1}")
        if m["name"] is not None:
            steps.append(ANY if m["name"] == "*" else m["name"])
        elif m["index"] is not None:
            steps.append(int(m["index"]))
        elif m["star"] is not None:
            steps.append(ANY)
        else:
            quoted = m["sq"] if m["sq"] is not None else m["dq"]
            steps.append(_ESCAPE.sub(r"\1", quoted))
        pos = m.end()
    if not steps:
        raise BadPath(f"field path {path!r} addresses the whole document")
    return tuple(steps)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def format_path(steps: Iterable[str | int]) -> str:
    """Steps → `$.items[3]['weird key']` notation (the inverse of compile_path for concrete paths)."""
    parts = ["$"]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _PLAIN_KEY.match(step):
            parts.append(f".{step}")
        else:
            escaped = step.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


_INDEX = re.compile(r"\[\d+\]")


def group_path(path: str) -> str:
    """Collapse array indexes so one field is counted once: `$.items[3].qty` → `$.items[*].qty`."""
    return _INDEX.sub("[*]", path)


def path_matches(pattern: Sequence[PathStep], concrete: Sequence[str | int]) -> bool:
    """Whether a concrete path (keys and indexes) is addressed by a compiled pattern."""
    if len(pattern) != len(concrete):
        return False
    for want, got in zip(pattern, concrete, strict=True):
        if want is ANY:
            continue
        if isinstance(want, int) != isinstance(got, int) or want != got:
            return False
    return True


def _select(doc: object, steps: Sequence[PathStep]) -> list[object]:
    """The values a (prefix of a) compiled path addresses, walked level by level rather than recursively.

    Exact `type(...) is` checks: parsed JSON holds plain dicts and lists, and this runs for every compared pair.
    """
    nodes = [doc]
    for step in steps:
        if step is ANY:
            found: list[object] = []
            for node in nodes:
                if type(node) is dict:
                    found.extend(node.values())
                elif type(node) is list:
                    found.extend(node)
            nodes = found
        elif type(step) is int:
            nodes = [n[step] for n in nodes if type(n) is list and -len(n) <= step < len(n)]
        else:
            nodes = [n[step] for n in nodes if type(n) is dict and step in n]
        if not nodes:
            break
    return nodes


def _drop(doc: object, steps: tuple[PathStep, ...]) -> None:
    """Remove the addressed fields from `doc` itself."""
    last = steps[-1]
    for node in _select(doc, steps[:-1]):
        if last is ANY:
            if isinstance(node, dict | list):
                node.clear()
        elif isinstance(last, int):
            if isinstance(node, list) and -len(node) <= last < len(node):
                del node[last]
        elif isinstance(node, dict):
            node.pop(last, None)


def apply_ignores(doc: object, ignore_fields: tuple[str, ...], *, in_place: bool = False) -> object:
    """`doc` without the fields named by `ignore_fields` (JSONPath-like).

    A copy by default; `in_place=True` edits `doc` itself, the cheap way for a document the caller just parsed.
    """
    if not ignore_fields:
        return doc
    if not in_place:
        doc = copy.deepcopy(doc)
    for path in ignore_fields:
        _drop(doc, compile_path(path))
    return doc


def _sort_key(value: object) -> tuple[int, object]:
    """A total order over JSON values, the same on both sides; scalars skip the (costlier) canonical dump."""
    if isinstance(value, str):
        return 3, value
    if isinstance(value, bool):
        return 1, int(value)
    if isinstance(value, int | float):
        return 2, value
    if value is None:
        return 0, 0
    return 4, canonical_json(value)


def _sort_list(items: list[object]) -> None:
    """Sort canonically. Arrays of only strings or only numbers sort natively (much cheaper); a sort that was
    not a consistent total order at worst makes two equal arrays look different, never the reverse."""
    try:
        items.sort()
    except TypeError:  # mixed types, objects, null
        items.sort(key=_sort_key)


def _sort_all(node: object) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _sort_all(value)
    elif isinstance(node, list):
        for value in node:
            _sort_all(value)
        _sort_list(node)


@functools.lru_cache(maxsize=256)
def _compiled_deepest_first(paths: tuple[str, ...]) -> tuple[tuple[PathStep, ...], ...]:
    # Nested arrays are sorted before the arrays that hold them, so the outer sort sees canonical elements.
    return tuple(sorted((compile_path(p) for p in paths), key=len, reverse=True))


def order_blind(doc: object, ignore_order: bool | tuple[str, ...], *, in_place: bool = False) -> object:
    """`doc` with the arrays `ignore_order` names (True: every array) sorted canonically, so their order no
    longer matters. A copy by default; `in_place=True` sorts `doc` itself."""
    if not ignore_order:
        return doc
    if not in_place:
        doc = copy.deepcopy(doc)
    if isinstance(ignore_order, tuple):
        for steps in _compiled_deepest_first(ignore_order):
            for node in _select(doc, steps):
                if isinstance(node, list):
                    _sort_list(node)
    else:
        _sort_all(doc)
    return doc


def is_order_insensitive(path: Sequence[str | int], ignore_order: bool | tuple[str, ...]) -> bool:
    """Whether the array at this concrete path is compared without regard to order."""
    if ignore_order is True:
        return True
    if not ignore_order:
        return False
    return any(path_matches(compile_path(p), path) for p in ignore_order)
