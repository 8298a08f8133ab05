"""Header hygiene for both directions: hop-by-hop stripping, Host, X-Forwarded-*, Via and X-Request-Id.

Pure functions called once per request, so each makes a single pass over the raw header pairs and allocates
little. Header bytes are decoded as UTF-8 with `surrogateescape`, aiohttp's own convention, so any byte
sequence survives a decode/encode round trip unchanged.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from collections.abc import Iterable
from functools import lru_cache

from multidict import CIMultiDict

from proxy.config import Upstream

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RawHeaders = Iterable[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 plus the de-facto ones; content-length is left out too because framing is the transport's job
# (and aiohttp's on the client side), and Expect because the proxy answers `100-continue` to its own client.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
_NOT_COPIED = frozenset(b.encode() for b in (*HOP_BY_HOP, "content-length", "expect"))

_CONNECTION = b"connection"


class _Kind(enum.Enum):
    """How the request pass treats a header name; names not listed are copied as they are."""

    DROP = enum.auto()
    CONNECTION = enum.auto()
    REPLACED = enum.auto()
    XFF = enum.auto()
    XFP = enum.auto()
    XFH = enum.auto()
    FORWARDED = enum.auto()
    VIA = enum.auto()


# One dict lookup per header decides everything; the incoming values of the headers this hop rewrites are read
# in the same pass.
_REQUEST_KINDS: dict[bytes, _Kind] = {
    **dict.fromkeys(_NOT_COPIED, _Kind.DROP),
    _CONNECTION: _Kind.CONNECTION,
    b"host": _Kind.REPLACED,
    b"x-request-id": _Kind.REPLACED,
    b"x-forwarded-for": _Kind.XFF,
    b"x-forwarded-proto": _Kind.XFP,
    b"x-forwarded-host": _Kind.XFH,
    b"forwarded": _Kind.FORWARDED,
    b"via": _Kind.VIA,
}

MAX_REQUEST_ID = 128


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _decode_pairs(pairs: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Decode kept header pairs; the strict codec is several times faster and almost always enough."""
    try:
        return [(n.decode(), v.decode()) for n, v in pairs]
    except UnicodeDecodeError:
        return [(_decode(n), _decode(v)) for n, v in pairs]


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def _drop_named(kept: list[tuple[bytes, bytes]], named: set[bytes]) -> list[tuple[bytes, bytes]]:
    """Remove headers the Connection header declared hop-by-hop (rare beyond the fixed set, so a second pass)."""
    named -= _NOT_COPIED
    if not named:
        return kept
    return [h for h in kept if h[0].lower() not in named]


@lru_cache(maxsize=256)
def _upstream_host(upstream: Upstream) -> str:
    return upstream.url.host_port_subcomponent or ""


@lru_cache(maxsize=1024)
def _is_trusted(peer_ip: str, trusted_proxies: tuple[Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False  # unix sockets, empty peer: never trusted
    return any(addr in net for net in trusted_proxies)


def upstream_request_headers(
    raw_headers: RawHeaders,
    *,
    upstream: Upstream,
    client_host: str,
    peer_ip: str,
    scheme: str,
    trusted_proxies: tuple[Network, ...],
    request_id: str,
    via: str,
    http_version: tuple[int, int],
) -> list[tuple[str, str]]:
    """The end-to-end headers to send upstream for a client request, in the client's order and case.

    Hop-by-hop headers, headers named by Connection, Content-Length and Expect are dropped. Host follows
    `upstream.host_header`. X-Forwarded-For/Proto/Host and Forwarded are only believed from a peer inside
    `trusted_proxies`; otherwise they are replaced with what this hop saw, so a client cannot spoof its address.
    Via gets "<version> <via>" appended; X-Request-Id is set to `request_id`.
    """
    kept: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    xff: list[str] = []
    via_in: list[str] = []
    xfp = xfh = ""
    forwarded: list[tuple[bytes, bytes]] = []
    kinds = _REQUEST_KINDS
    for pair in raw_headers:
        kind = kinds.get(pair[0].lower())
        if kind is None:
            kept.append(pair)
        elif kind is _Kind.DROP:
            continue
        elif kind is _Kind.CONNECTION:
            tokens = _connection_tokens(pair[1])
            named = tokens if named is None else named | tokens
        elif kind is _Kind.XFF:
            xff.append(_decode(pair[1]).strip())
        elif kind is _Kind.VIA:
            via_in.append(_decode(pair[1]).strip())
        elif kind is _Kind.XFP:
            xfp = xfp or _decode(pair[1]).strip()
        elif kind is _Kind.XFH:
            xfh = xfh or _decode(pair[1]).strip()
        elif kind is _Kind.FORWARDED:
            forwarded.append(pair)
        # Host and X-Request-Id (_Kind.REPLACED) are always set below

    trusted = bool(trusted_proxies) and _is_trusted(peer_ip, trusted_proxies)
    host = client_host if upstream.host_header == "preserve" and client_host else _upstream_host(upstream)
    out: list[tuple[str, str]] = [("Host", host)] if host else []
    if named is not None:
        kept = _drop_named(kept, named)
    out.extend(_decode_pairs(kept))
    if trusted:
        out.extend(_decode_pairs(forwarded))
    incoming_xff = ", ".join(v for v in xff if v) if trusted else ""
    forwarded_for = f"{incoming_xff}, {peer_ip}" if incoming_xff and peer_ip else incoming_xff or peer_ip
    if forwarded_for:
        out.append(("X-Forwarded-For", forwarded_for))
    out.append(("X-Forwarded-Proto", xfp if trusted and xfp else scheme))
    forwarded_host = xfh if trusted and xfh else client_host
    if forwarded_host:
        out.append(("X-Forwarded-Host", forwarded_host))
    this_hop = f"{http_version[0]}.{http_version[1]} {via}"
    out.append(("Via", ", ".join([*(v for v in via_in if v), this_hop])))
    out.append(("X-Request-Id", request_id))
    return out


def end_to_end_response_headers(upstream_raw_headers: RawHeaders) -> list[tuple[str, str]]:
    """The upstream response's headers minus hop-by-hop, Connection-named and framing headers, in order."""
    kept: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    not_copied = _NOT_COPIED
    for pair in upstream_raw_headers:
        lname = pair[0].lower()
        if lname not in not_copied:
            kept.append(pair)
        elif lname == _CONNECTION:
            tokens = _connection_tokens(pair[1])
            named = tokens if named is None else named | tokens
    if named is not None:
        kept = _drop_named(kept, named)
    return _decode_pairs(kept)


def client_response_headers(
    upstream_raw_headers: RawHeaders,
    *,
    request_id: str,
    via: str,
    extra: Iterable[tuple[str, str]] = (),
    version: tuple[int, int] = (1, 1),
) -> CIMultiDict[str]:
    """Headers for the client response: the upstream's end-to-end headers plus Via, X-Request-Id and `extra`."""
    return response_headers_with(
        end_to_end_response_headers(upstream_raw_headers),
        request_id=request_id,
        via=via,
        extra=extra,
        version=version,
    )


def response_headers_with(
    cleaned: Iterable[tuple[str, str]],
    *,
    request_id: str,
    via: str,
    extra: Iterable[tuple[str, str]] = (),
    version: tuple[int, int] = (1, 1),
) -> CIMultiDict[str]:
    """Already cleaned upstream headers plus this hop's: Via, X-Request-Id and `extra`.

    `via` empty adds no Via element of its own. In `extra`, a Via entry is appended to the upstream's Via
    (so a caller can pass a ready "1.1 strangler") and any other name replaces the upstream's header.
    """
    headers: CIMultiDict[str] = CIMultiDict(cleaned)
    via_parts = headers.popall("Via", [])
    if via:
        via_parts.append(f"{version[0]}.{version[1]} {via}")
    for name, value in extra:
        if name.lower() == "via":
            via_parts.append(value)
        else:
            headers[name] = value
    if via_parts:
        headers["Via"] = ", ".join(via_parts)
    headers["X-Request-Id"] = request_id
    return headers


def new_request_id() -> str:
    """A fresh 32-hex-digit id: 128 random bits, cheaper than building a uuid4 object."""
    return os.urandom(16).hex()


def valid_request_id(value: str | None) -> bool:
    """Whether an incoming X-Request-Id can be kept: 1–128 printable ASCII characters, no spaces."""
    if not value or len(value) > MAX_REQUEST_ID:
        return False
    return value.isascii() and value.isprintable() and " " not in value
