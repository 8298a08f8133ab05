"""Forward one client request to one upstream and stream the answer back.

CONTRACT (implementation pending): `proxy.handler` calls exactly this surface.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.config import Timeouts, Upstream
from proxy.events import Headers
from proxy.transport import UpstreamError, UpstreamPool


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    upstream: Upstream
    pool: UpstreamPool
    target: str  # encoded origin-form sent on the request line: upstream base path + canonical path + '?' + query
    timeouts: Timeouts


@dataclass(frozen=True, slots=True)
class ForwardResult:
    """What happened, for metrics, the breaker and the shadow snapshot."""

    status: int  # the status the client received (502/504/413 when strangler generated it)
    upstream_status: int  # 0 when the upstream gave no response head
    error: str | None  # None, or "connect" | "timeout" | "reset" | "too_large" | "client_gone"
    response_headers: Headers  # end-to-end upstream response headers (empty on error)
    body: bytes | None  # captured response body when capture > 0, else None
    body_complete: bool  # False when capture was cut at the cap or the body broke
    latency: float  # seconds from sending to the last byte


class FallbackAvailable(Exception):
    """Raised instead of answering 502/504 when `allow_fallback` is set and the upstream failed before sending
    any response byte (and the request can be re-sent: its body was given as bytes). Nothing was written to the
    client; the caller forwards the same request elsewhere."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


async def forward(
    request: web.BaseRequest,
    target: ForwardTarget,
    *,
    headers: list[tuple[str, str]],
    body: bytes | None,
    max_body: int,
    capture: int,
    allow_fallback: bool,
    response_headers: Headers,
    route_id: str | None,
    request_id: str,
) -> tuple[web.StreamResponse, ForwardResult]:
    """Send the request upstream and stream the response to the client; returns the prepared response.

    headers: end-to-end request headers to send, already cleaned by `proxy.headers.upstream_request_headers`
    (no framing headers: the transport writes exactly one).
    body: the request body when the caller has already read it (mirrored or fallback routes); None means stream
    `request.content` to the upstream, counting bytes and failing with 413 past `max_body`.
    capture: keep up to this many response body bytes in ForwardResult.body (0: keep none) while streaming.
    response_headers: extra headers added to the client response (X-Request-Id, Via, debug headers).
    Upstream failures become 502 (connect/reset before the head) or 504 (timeout) with a JSON body
    {"error", "route", "request_id"}; a reset mid-body aborts the client connection, never a short response
    that looks complete.
    """
    raise NotImplementedError
