"""Canonical request paths: one spelling per resource, so routing and the upstream see the same path.

The proxy routes on the canonical form and forwards the canonical form; a path that routing and the back end could
read differently (dot segments hidden behind escapes, repeated slashes, a backslash some servers treat as '/') is
either normalised here or refused with a `PathError`, before any route is chosen.

Rules, in order: origin-form only; no raw '#' (a request target has no fragment, RFC 9112 3.2, and a front end
that drops "#..." would see another path than the one routed here); escapes must be well formed; escapes of
unreserved characters are decoded and all other escapes get upper-case hex; raw characters outside `pchar` are
percent-encoded (UTF-8); NUL, control characters and raw backslashes are refused; empty segments are dropped
(repeated slashes merged); dot segments are removed (RFC 3986 5.2.4) once escapes of '.' are decoded, never
climbing above the root. `%2F` and `%5C` stay encoded and are flagged, so a segment like `..%2Fadmin` is one opaque
segment, never a dot segment.

Matching uses a key per segment, so that no spelling of a route's path that some back end reads as that path can
reach another upstream: the decoded segment is cut at its first ';' (raw or `%3B`: matrix parameters, which Tomcat
and Spring strip), and trailing dots and spaces are dropped (which IIS and Windows strip); routing compares literal
segments case-insensitively (`proxy.routing`). A segment whose key would be empty or a dot segment (`..;x`, `;x`,
`...`, `.%20`) is refused (`ambiguous_segment`): back ends read such segments as `..`, `.` or nothing. The forwarded
path is the canonical path, parameters, dots and case included: it reaches the route's own upstream unchanged.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

from proxy.tuples import new_tuple

_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# pchar minus '%' (RFC 3986 3.3) plus '/': characters that may appear raw in a canonical path.
_PLAIN = _UNRESERVED + "!$&'()*+,;=:@/"
_PLAIN_SET = frozenset(_PLAIN)
# One character-class scan in C: measured faster than str.strip(_PLAIN) or str.translate for the per-request check.
_ALL_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*").fullmatch
_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED_BYTES = frozenset(_UNRESERVED.encode("ascii"))


class PathError(ValueError):
    """The raw request path cannot be made canonical; the handler answers 400.

    `reason` is a short slug for logs and metrics: not_origin_form, fragment, bad_percent, nul, control,
    backslash, bad_encoding, ambiguous_segment.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CanonicalPath(NamedTuple):  # immutable; built per request, where a frozen dataclass pays a call per field
    """A request path in canonical form.

    `path` is what gets forwarded (still percent-encoded). `segments` are the match keys: the percent-decoded
    segments, each cut at ';' and without trailing dots or spaces (see the module docstring); a trailing slash adds
    no empty segment, so `/` has no segments and `/a/` has ("a",).
    """

    path: str
    segments: tuple[str, ...]
    has_encoded_slash: bool


_ROOT = CanonicalPath("/", (), False)


def canonical_path(raw: str) -> CanonicalPath:
    """Return the canonical form of `raw`, the still-encoded path from the request line (without the query)."""
    if not raw.startswith("/"):
        raise PathError("not_origin_form", f"path must start with '/': {raw[:64]!r}")
    # Fast path, the common case: nothing to decode, no dot segment, no empty segment, no ';', no segment ending in
    # '.', only plain characters.
    if (
        "%" not in raw
        and "/." not in raw
        and "//" not in raw
        and ";" not in raw
        and "./" not in raw
        and raw[-1] != "."
        and _ALL_PLAIN(raw)
    ):
        if raw == "/":
            return _ROOT
        segments = raw[1:].split("/")
        if not segments[-1]:
            segments.pop()
        return new_tuple(CanonicalPath, (raw, tuple(segments), False))  # fields in order: see proxy.tuples
    return _canonical_slow(raw)


def _canonical_slow(raw: str) -> CanonicalPath:
    if "\\" in raw:
        raise PathError("backslash", "raw backslash in path (send it as %5C)")
    if "\x00" in raw:
        raise PathError("nul", "NUL byte in path")
    if "#" in raw:
        raise PathError("fragment", "raw '#' in path: a request target has no fragment (send it as %23)")
    kept: list[str] = []
    # "/a/b/" keeps its slash; so does "/a/b/.." -> "/a/" (RFC 3986 5.2.4 leaves the slash before a dot segment).
    trailing = False
    for seg in raw[1:].split("/"):
        trailing = True
        if not seg:
            continue  # repeated slash
        canon = _canonical_segment(seg) if "%" in seg or seg.strip(_PLAIN) else seg
        if canon == ".":
            continue
        if canon == "..":
            if kept:
                kept.pop()
            continue
        kept.append(canon)
        trailing = False
    if not kept:
        return _ROOT
    path = "/" + "/".join(kept) + ("/" if trailing else "")
    has_encoded_slash = False
    keys: list[str] = []
    for seg in kept:
        decoded = seg
        if "%" in seg:
            # Escapes are upper-case by now, so a plain substring test is exact.
            if "%2F" in seg or "%5C" in seg:
                has_encoded_slash = True
            decoded = unquote(seg, errors="replace")
        keys.append(match_key(decoded))
    return CanonicalPath(path, tuple(keys), has_encoded_slash)


def match_key(segment: str) -> str:
    """The part of a decoded segment that routing matches: cut at ';', trailing dots and spaces dropped.

    Raises PathError when nothing but a dot segment or nothing at all would be left: a back end that strips the
    same parts would read `..;x` as `..`, or `/;x/admin` as `//admin`, another path than the one routed here.
    """
    key = segment.partition(";")[0] if ";" in segment else segment
    if key[-1:] in (".", " "):
        key = key.rstrip(". ")
    if not key:  # `;x`, `..;x`, `...`, `.%20`: empty, or a dot segment, once stripped
        raise PathError("ambiguous_segment", f"segment {segment[:64]!r} is empty or a dot segment without ';...'")
    return key


def _canonical_segment(seg: str) -> str:
    """One raw segment (no '/') in canonical encoding; raises PathError on malformed or forbidden input."""
    if "%" not in seg:
        return _encode_raw(seg)
    parts = seg.split("%")
    out = [_encode_raw(parts[0])]
    for part in parts[1:]:
        # int(x, 16) alone would accept "+f" and " f": check both digits explicitly.
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            raise PathError("bad_percent", f"malformed percent-escape '%{part[:2]}'")
        byte = int(part[:2], 16)
        if byte in _UNRESERVED_BYTES:
            out.append(chr(byte))
        elif byte == 0:
            raise PathError("nul", "encoded NUL (%00) in path")
        elif byte < 0x20 or byte == 0x7F:
            raise PathError("control", f"encoded control character %{part[:2]} in path")
        else:
            out.append("%" + part[:2].upper())
        if len(part) > 2:
            out.append(_encode_raw(part[2:]))
    return "".join(out)


def _encode_raw(text: str) -> str:
    """Percent-encode raw characters outside pchar; refuse control characters and backslashes."""
    if not text.strip(_PLAIN):
        return text
    out: list[str] = []
    for ch in text:
        if ch in _PLAIN_SET:
            out.append(ch)
            continue
        code = ord(ch)
        if code == 0:
            raise PathError("nul", "NUL byte in path")
        if code < 0x20 or code == 0x7F:
            raise PathError("control", f"control character {ch!r} in path")
        if ch == "\\":
            raise PathError("backslash", "raw backslash in path (send it as %5C)")
        try:
            # aiohttp decodes the request line with surrogateescape: this restores the original bytes.
            data = ch.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise PathError("bad_encoding", f"unencodable character {ch!r} in path") from exc
        out.extend(f"%{b:02X}" for b in data)
    return "".join(out)
