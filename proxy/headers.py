"""Header hygiene for both directions: hop-by-hop stripping, Host, X-Forwarded-*, Via and X-Request-Id.

Pure functions called once per request, so each makes a single pass over the raw header pairs and allocates
little. Header bytes are decoded as UTF-8 with `surrogateescape`, aiohttp's own convention, so any byte
sequence survives a decode/encode round trip unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from http import HTTPStatus
from random import getrandbits

from aiohttp.helpers import rfc822_formatted_time
from multidict import CIMultiDict

from proxy.config.model import Upstream
from proxy.header_names import NameKinds

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


# How each pass treats a header name; names not listed are copied as they are. Plain ints, not an enum: an enum
# member lookup per comparison shows in the per-request profile. The response pass's last three are bits, so one
# int records which of Date and Content-Type the upstream sent.
_DROP, _CONNECTION_KIND, _REPLACED, _VIA, _XFF, _XFP, _XFH, _FORWARDED, _XRI = range(1, 10)
_DATE, _CONTENT_TYPE = 16, 64

# One dict lookup per header decides everything; the incoming values of the headers this hop rewrites are read
# in the same pass.
_REQUEST_KINDS: dict[bytes, int] = {
    **dict.fromkeys(_NOT_COPIED, _DROP),
    _CONNECTION: _CONNECTION_KIND,
    b"host": _DROP,  # Host and X-Request-Id are always set by this hop
    b"x-request-id": _DROP,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"forwarded": _FORWARDED,
    b"x-real-ip": _XRI,
    b"via": _VIA,
}

# The response pass: hop-by-hop and framing dropped, the headers this hop sets or defaults noted.
_RESPONSE_KINDS: dict[bytes, int] = {
    **dict.fromkeys(_NOT_COPIED, _DROP),
    _CONNECTION: _CONNECTION_KIND,
    b"x-request-id": _REPLACED,
    b"via": _VIA,
    b"date": _DATE,
    b"content-type": _CONTENT_TYPE,
}
# Cached by spelling. Underscores: request header names holding '_' are dropped, as nginx does by default
# (`underscores_in_headers off`): CGI, WSGI and PHP back ends turn both '-' and '_' into '_' (HTTP_X_FORWARDED_FOR),
# so `X_Forwarded_For` would pass the X-Forwarded-For rule here and be read as that header there.
_REQUEST_NAMES, _RESPONSE_NAMES = NameKinds(_REQUEST_KINDS, underscored=_DROP), NameKinds(_RESPONSE_KINDS)
_PLAIN_TOKENS = _NOT_COPIED | {b"close"}  # Connection tokens that name no other header: nothing more to drop
# What aiohttp's header writer refuses in a field (RFC 9110 5.5): every control character but HTAB.
_CTLS = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f"
_IDENTITY = bytes(range(256))  # translate(None, ...) builds this table on every call: a third of its time
_REASONS = {status.value: status.phrase for status in HTTPStatus}

MAX_REQUEST_ID = 128

# RFC 9112 3.2 / RFC 3986 3.2.2: Host is uri-host [":" port]; a reg-name, an IPv4 address or a bracketed IPv6
# literal. Anything else (userinfo '@', '/', '?', '#', spaces, a second ':') is refused with 400.
_VALID_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
).fullmatch
_PLAIN_HOST = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=]*(?::[0-9]*)?").fullmatch  # its no-escape subset: faster
# The transfer codings this hop understands: chunked (the parser de-chunks it) and the no-op identity.
_KNOWN_CODINGS = frozenset({"chunked", "identity"})


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def decode_pairs(pairs: RawHeaders) -> list[tuple[str, str]]:
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


_HOSTS: dict[int, tuple[Upstream, str]] = {}


def upstream_host(upstream: Upstream) -> str:
    """The Host value for an upstream, cached by identity: hashing the frozen dataclass (and its URL) for an
    lru_cache costs more than the lookup saves. The entry holds the upstream, so its id cannot be reused."""
    hit = _HOSTS.get(id(upstream))
    if hit is not None and hit[0] is upstream:
        return hit[1]
    if len(_HOSTS) >= 256:
        _HOSTS.clear()  # configs reloaded many times: start over rather than grow
    host = upstream.url.host_port_subcomponent or ""
    _HOSTS[id(upstream)] = (upstream, host)
    return host


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

    Hop-by-hop headers, headers named by Connection, Content-Length and Expect are dropped, and so is every header
    whose name holds an underscore (see "Underscores" above). Host follows `upstream.host_header`.
    X-Forwarded-For/Proto/Host, Forwarded and X-Real-IP are only believed from a peer inside `trusted_proxies`;
    otherwise they are replaced with what this hop saw, so a client cannot spoof its address (X-Real-IP is only
    sent on when the client sent one: then it is the peer's address).
    Via gets "<version> <via>" appended; X-Request-Id is set to `request_id`.
    """
    kept: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    xff: list[str] = []
    via_in: list[str] = []
    xfp = xfh = xri = ""
    real_ip = False
    forwarded: list[tuple[bytes, bytes]] = []
    cached = _REQUEST_NAMES.get
    for pair in raw_headers:
        kind = cached(pair[0])
        if kind is None:
            kind = _REQUEST_NAMES.learn(pair[0])
        if not kind:
            kept.append(pair)
        elif kind == _DROP:  # framing, hop-by-hop, set by this hop, or named with '_' (see "Underscores" above)
            continue
        elif kind == _CONNECTION_KIND:
            tokens = _connection_tokens(pair[1])
            named = tokens if named is None else named | tokens
        elif kind == _XFF:
            xff.append(_decode(pair[1]).strip())
        elif kind == _VIA:
            via_in.append(_decode(pair[1]).strip())
        elif kind == _XFP:
            xfp = xfp or _decode(pair[1]).strip()
        elif kind == _XFH:
            xfh = xfh or _decode(pair[1]).strip()
        elif kind == _XRI:
            real_ip = True
            xri = xri or _decode(pair[1]).strip()
        else:
            forwarded.append(pair)

    trusted = bool(trusted_proxies) and _is_trusted(peer_ip, trusted_proxies)
    host = client_host if upstream.host_header == "preserve" and client_host else upstream_host(upstream)
    out: list[tuple[str, str]] = [("Host", host)] if host else []
    if named is not None:
        kept = _drop_named(kept, named)
    out.extend(decode_pairs(kept))
    if trusted:
        out.extend(decode_pairs(forwarded))
    incoming_xff = ", ".join(v for v in xff if v) if trusted else ""
    forwarded_for = f"{incoming_xff}, {peer_ip}" if incoming_xff and peer_ip else incoming_xff or peer_ip
    if forwarded_for:
        out.append(("X-Forwarded-For", forwarded_for))
    out.append(("X-Forwarded-Proto", xfp if trusted and xfp else scheme))
    forwarded_host = xfh if trusted and xfh else client_host
    if forwarded_host:
        out.append(("X-Forwarded-Host", forwarded_host))
    if real_ip and (xri if trusted and xri else peer_ip):
        out.append(("X-Real-IP", xri if trusted and xri else peer_ip))
    this_hop = f"{http_version[0]}.{http_version[1]} {via}"
    out.append(("Via", ", ".join([*(v for v in via_in if v), this_hop]) if via_in else this_hop))
    out.append(("X-Request-Id", request_id))
    return out


def response_head(
    upstream_raw_headers: RawHeaders,
    *,
    status: int,
    reason: str,
    version: tuple[int, int],
    request_id: str,
    extra: tuple[tuple[str, str], ...],
    content_length: int | None,
    keep_alive: bool,
    has_content: bool,
) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The client response head as bytes, built straight from the upstream's raw header bytes, and the kept
    end-to-end pairs (what `end_to_end_response_headers` gives, still as bytes).

    The head says what aiohttp's StreamResponse would for the same response (the slow path, `response_headers_with`
    plus aiohttp's defaults): hop-by-hop and framing headers dropped, `extra` applied as there, X-Request-Id set,
    Content-Length when given, Date and (`has_content`) Content-Type added when the upstream sent none (never a
    Server header of this hop's own), and
    the Connection header aiohttp writes for `keep_alive` and `version`. None when this pass cannot say it: a
    Connection header naming other headers, or a control character in a field; the caller takes the slow path.
    """
    replaced, own, own_via = _encoded_extra(extra if type(extra) is tuple else tuple(extra))
    reason = reason or _REASONS.get(status, "")
    lines = [f"HTTP/{version[0]}.{version[1]} {status} {reason}".encode("utf-8", "surrogateescape")]
    kept: list[tuple[bytes, bytes]] = []
    via: list[bytes] = []
    seen = 0  # bit per kind: which of Date and Content-Type the upstream sent
    cached = _RESPONSE_NAMES.get
    for pair in upstream_raw_headers:
        name = pair[0]
        kind = cached(name)
        if kind is None:
            kind = _RESPONSE_NAMES.learn(name)
        if not kind:
            kept.append(pair)
            if replaced is None or name.lower() not in replaced:
                lines.append(b": ".join(pair))
        elif kind == _DROP:
            continue
        elif kind == _CONNECTION_KIND:
            if pair[1].lower() not in _PLAIN_TOKENS and not _connection_tokens(pair[1]) <= _PLAIN_TOKENS:
                return None
        else:
            kept.append(pair)
            if kind == _VIA:
                via.append(pair[1])
            elif kind != _REPLACED and (replaced is None or name.lower() not in replaced):
                seen |= kind
                lines.append(b": ".join(pair))
    if own:
        lines += own
    if content_length is not None:
        lines.append(b"Content-Length: %d" % content_length)
    if has_content and not seen & _CONTENT_TYPE:
        lines.append(b"Content-Type: application/octet-stream")
    if not seen & _DATE:
        lines.append(b"Date: " + rfc822_formatted_time().encode())
    if own_via:
        via += own_via
    if via:
        lines.append(b"Via: " + b", ".join(via))
    lines.append(b"X-Request-Id: " + request_id.encode("utf-8", "surrogateescape"))
    if keep_alive:
        if version == (1, 0):
            lines.append(b"Connection: keep-alive")
    elif version == (1, 1):
        lines.append(b"Connection: close")
    lines.append(b"\r\n")
    head = b"\r\n".join(lines)
    # The head's own line ends are 2 control bytes per line; any other control byte (CR or LF inside a field
    # splitting the head, NUL, ...) is one that aiohttp's writer would refuse.
    if len(head) - len(head.translate(_IDENTITY, _CTLS)) != 2 * len(lines):
        return None
    return head, kept


_EXTRA: dict[tuple[tuple[str, str], ...], tuple[frozenset[bytes] | None, list[bytes], list[bytes]]] = {}


def _encoded_extra(
    extra: tuple[tuple[str, str], ...],
) -> tuple[frozenset[bytes] | None, list[bytes], list[bytes]]:
    """`extra` for response_head: lower-case names it replaces, its other header lines, its Via values. The
    same few tuples (Via, debug headers) come with every request, so the encoding is cached."""
    hit = _EXTRA.get(extra)
    if hit is not None:
        return hit
    replaced: set[bytes] = set()
    own: list[bytes] = []
    own_via: list[bytes] = []
    for name, value in extra:
        encoded = value.encode("utf-8", "surrogateescape")
        lower = name.lower()
        if lower == "via":
            own_via.append(encoded)
        elif lower != "x-request-id":  # set by response_head, as response_headers_with does
            bname = name.encode("utf-8", "surrogateescape")
            replaced.add(bname.lower())
            own.append(bname + b": " + encoded)
    if len(_EXTRA) >= 256:
        _EXTRA.clear()  # per-request route ids in debug headers: start over rather than grow
    hit = _EXTRA[extra] = (frozenset(replaced) or None, own, own_via)
    return hit


def end_to_end_response_headers(upstream_raw_headers: RawHeaders) -> list[tuple[str, str]]:
    """The upstream response's headers minus hop-by-hop, Connection-named and framing headers, in order."""
    kept: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    not_copied = _NOT_COPIED
    for pair in upstream_raw_headers:  # response_head() makes the same pass for the fast path
        lname = pair[0].lower()
        if lname not in not_copied:
            kept.append(pair)
        elif lname == _CONNECTION:
            tokens = _connection_tokens(pair[1])
            named = tokens if named is None else named | tokens
    if named is not None:
        kept = _drop_named(kept, named)
    return decode_pairs(kept)


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
    """32 hex digits, 128 random bits: unique, not secret (a client may send its own), so from `random` (seeded
    from the OS in every process, again after a fork) rather than a getrandom system call per request."""
    return getrandbits(128).to_bytes(16, "big").hex()


def valid_request_id(value: str | None) -> bool:
    """Whether an incoming X-Request-Id can be kept: 1–128 printable ASCII characters, no spaces."""
    if not value or len(value) > MAX_REQUEST_ID:
        return False
    return value.isascii() and value.isprintable() and " " not in value


def valid_host(value: str) -> bool:
    """Whether a Host header value is `host[:port]` (an empty value is allowed: RFC 9112 3.2)."""
    return _PLAIN_HOST(value) is not None or _VALID_HOST(value) is not None


def unsupported_transfer_coding(value: str) -> bool:
    """Whether a Transfer-Encoding names a coding other than chunked or identity (gzip, deflate, ...): the proxy
    does not decode those, so such a request is answered 501 (RFC 9112 6.1) rather than forwarded as plain chunked."""
    if value == "chunked":
        return False
    return any(t.strip().lower() not in _KNOWN_CODINGS for t in value.split(","))
