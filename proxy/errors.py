"""Every way forwarding a request can fail, named once: the kinds, the exceptions that carry them, and what each
kind means for the client (status, JSON error name) and for the upstream's health (breaker, fallback, metrics).

Exceptions (the `kind` of each is its `ErrorKind`; every UpstreamError also carries `sent`: a request byte left,
and `responded`: a response byte arrived):

    UpstreamError                 "error"         no complete response for a request-side reason: a header holding
     │                                            CR/LF, a streamed body longer or shorter than it declared
     ├── UpstreamConnectError     "connect"       refused, unreachable, DNS or connect timeout, pool closed
     │    └── UpstreamTLSError    "tls"           the TLS handshake failed: certificate not trusted, wrong host
     │                                            name, client certificate refused, no common version
     ├── UpstreamPoolTimeout      "pool_timeout"  every pooled connection stayed busy for `timeouts.pool`: strangler's
     │                                            own limit, so never the upstream's fault
     ├── UpstreamTimeout          "timeout"       no byte for `timeouts.read` (before the head, or between chunks)
     └── UpstreamReset            "reset"         closed, reset or malformed before the response was complete

    RequestBodyError                              the client's request body could not be read (proxy.request_body)
     ├── BodyTooLarge             "too_large"     over limits.max_body
     ├── BodyTimeout              "body_timeout"  no body byte for limits.body_timeout
     ├── ClientGone               "client_gone"   the client closed or reset its connection mid-body
     └── BadBody                  "bad_body"      the body's chunked framing broke mid-way

`KINDS` is the one table from a kind to its meaning; `UPSTREAM_FAULTS` (connect, tls, timeout, reset) are the kinds that
count against an upstream: a breaker failure, `strangler_upstream_errors_total`, and a fallback to legacy.
`proxy.upstream._h1.H1Failure` (the wire layer's own failure) is mapped onto this tree by `proxy.upstream.transport`,
and the exceptions a client body read raises are mapped by `proxy.request_body`, as httpx maps httpcore's.

ErrorKind is a Literal, not an Enum: the kinds travel as plain strings to the shadow worker (marshal refuses Enum
members), into metric labels and into the store, and mypy still checks every use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final, Literal

ErrorKind = Literal[
    "connect",
    "tls",
    "pool_timeout",
    "timeout",
    "reset",
    "error",
    "too_large",
    "body_timeout",
    "client_gone",
    "bad_body",
]


@dataclass(frozen=True, slots=True)
class KindMeaning:
    """What one error kind means when strangler answers for it."""

    status: int  # the status strangler answers with when nothing was sent to the client yet
    name: str  # the JSON body's "error"
    upstream_fault: bool  # counts against the upstream: breaker failure, upstream_errors metric, may fall back
    close: bool  # the client connection cannot be reused (a request body was left unread or broken)


KINDS: Final[Mapping[ErrorKind, KindMeaning]] = MappingProxyType(
    {
        "connect": KindMeaning(502, "upstream_unreachable", upstream_fault=True, close=False),
        "tls": KindMeaning(502, "upstream_tls_failed", upstream_fault=True, close=False),
        # 503, not 504: no gateway timed out waiting for the upstream; strangler itself had no connection free.
        "pool_timeout": KindMeaning(503, "pool_timeout", upstream_fault=False, close=False),
        "timeout": KindMeaning(504, "upstream_timeout", upstream_fault=True, close=False),
        "reset": KindMeaning(502, "upstream_reset", upstream_fault=True, close=False),
        "error": KindMeaning(502, "upstream_error", upstream_fault=False, close=False),
        "too_large": KindMeaning(413, "request_too_large", upstream_fault=False, close=True),
        "body_timeout": KindMeaning(408, "request_body_timeout", upstream_fault=False, close=True),
        "client_gone": KindMeaning(400, "client_gone", upstream_fault=False, close=True),
        "bad_body": KindMeaning(400, "bad_body", upstream_fault=False, close=True),
    }
)
UPSTREAM_FAULTS: Final = frozenset(kind for kind, meaning in KINDS.items() if meaning.upstream_fault)


class UpstreamError(Exception):
    """The upstream could not give a complete response. `sent` tells whether any request byte left."""

    kind: ClassVar[ErrorKind] = "error"

    def __init__(self, message: str, *, sent: bool, responded: bool = False) -> None:
        super().__init__(message)
        self.sent = sent  # at least one request byte was written to the socket
        self.responded = responded  # at least one response byte was received


class UpstreamConnectError(UpstreamError):
    """Connection refused, unreachable, DNS failure or connect timeout: nothing was sent."""

    kind: ClassVar[ErrorKind] = "connect"


class UpstreamTLSError(UpstreamConnectError):
    """The TLS handshake with the upstream failed (untrusted or mismatched certificate, client certificate refused):
    nothing was sent."""

    kind: ClassVar[ErrorKind] = "tls"


class UpstreamPoolTimeout(UpstreamError):
    """Every connection of the pool stayed busy for `timeouts.pool`: nothing was sent, the upstream is not at fault."""

    kind: ClassVar[ErrorKind] = "pool_timeout"


class UpstreamTimeout(UpstreamError):
    """No byte for `read_timeout` (before the head, or between body chunks)."""

    kind: ClassVar[ErrorKind] = "timeout"


class UpstreamReset(UpstreamError):
    """The connection closed or broke before the response was complete."""

    kind: ClassVar[ErrorKind] = "reset"


class RequestBodyError(Exception):
    """The client's request body could not be read to the end."""

    kind: ClassVar[ErrorKind] = "client_gone"


class BodyTooLarge(RequestBodyError):
    """The body passed limits.max_body (declared, or counted as it streamed)."""

    kind: ClassVar[ErrorKind] = "too_large"


class BodyTimeout(RequestBodyError):
    """No body byte for limits.body_timeout (a stalled upload)."""

    kind: ClassVar[ErrorKind] = "body_timeout"


class ClientGone(RequestBodyError):
    """The client closed or reset its connection before the body ended."""

    kind: ClassVar[ErrorKind] = "client_gone"


class BadBody(RequestBodyError):
    """The body's chunked framing broke mid-way: the stream position is lost."""

    kind: ClassVar[ErrorKind] = "bad_body"
