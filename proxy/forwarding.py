"""Forward one client request to one upstream and stream the answer back.

`proxy.handler` calls exactly this surface. Bodies stream in both directions (constant memory, whatever their
size); failures the client can still be told about become JSON answers (`proxy.responses`, by
`proxy.errors.KINDS`), and a failure after the response head was sent aborts the client connection so a broken
body never looks complete.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import NamedTuple, TypeGuard

from aiohttp import web
from aiohttp.helpers import must_be_empty_body, should_remove_content_length

from proxy.clock import duration_clock
from proxy.coalesce import CoalescingWriter
from proxy.config.model import Timeouts, Upstream
from proxy.errors import UPSTREAM_FAULTS, ErrorKind, RequestBodyError, UpstreamError
from proxy.events import Headers, RawHeaders
from proxy.headers import end_to_end_response_headers, response_head, response_headers_with
from proxy.methods import may_resend
from proxy.request_body import BodyStream, read_exactly, stream_body
from proxy.responses import HeadWithBodyResponse, ProxiedResponse, SentResponse, kind_response
from proxy.tuples import new_tuple
from proxy.upstream.response import UpstreamResponse
from proxy.upstream.transport import UpstreamPool

# aiohttp's rule, cached as aiohttp caches must_be_empty_body: a C call per response instead of a Python frame.
_drops_content_length = functools.lru_cache(should_remove_content_length)

# Known-length bodies up to this size are read before contacting the upstream: they can then be re-sent on a
# fresh connection when a pooled one turns out stale, which a stream cannot.
PREREAD_LIMIT = 64 * 1024
# Fixed-length response bodies up to this size are gathered and sent with their head in one write, skipping
# aiohttp's StreamResponse; larger ones and bodies of unknown length stream.
WHOLE_LIMIT = 64 * 1024


_BASE_PATHS: dict[int, tuple[Upstream, str]] = {}


def base_path(upstream: Upstream) -> str:
    """The upstream URL's base path without a trailing slash ("" for none): prefixed to every forwarded path.

    Cached by identity: hashing the frozen dataclass (and its URL) for an lru_cache costs more than the lookup
    saves. The entry holds the upstream, so its id cannot be reused while cached."""
    hit = _BASE_PATHS.get(id(upstream))
    if hit is not None and hit[0] is upstream:
        return hit[1]
    if len(_BASE_PATHS) >= 256:
        _BASE_PATHS.clear()  # configs reloaded many times: start over rather than grow
    path = upstream.url.raw_path.rstrip("/")
    _BASE_PATHS[id(upstream)] = (upstream, path)
    return path


class ForwardTarget(NamedTuple):  # immutable; built per request, where a frozen dataclass pays a call per field
    upstream: Upstream
    pool: UpstreamPool
    target: str  # encoded origin-form sent on the request line: upstream base path + canonical path + '?' + query
    timeouts: Timeouts


class ForwardResult(NamedTuple):
    """What happened, for metrics, the breaker and the shadow snapshot. A NamedTuple (immutable), built once per
    request: a frozen dataclass pays one `object.__setattr__` per field."""

    status: int  # the status the client received (502/504/413 when strangler generated it)
    upstream_status: int  # 0 when the upstream gave no response head
    error: ErrorKind | None  # None when the upstream's answer reached the client whole
    response_headers: Headers  # end-to-end upstream response headers, decoded (a streamed answer; empty on error)
    body: bytes | None  # captured response body when capture > 0, else None
    body_complete: bool  # False when capture was cut at the cap or the body broke
    latency: float  # seconds from sending to the last byte
    # A whole (small) answer's end-to-end headers as the upstream sent them, with `response_headers` empty: decoding
    # them on the event loop cost more than the rest of its snapshot, so listeners decode them where they read them.
    raw_response_headers: RawHeaders = ()


class FallbackAvailable(Exception):
    """Raised instead of answering 502/504 when `allow_fallback` is set and the upstream failed before sending
    any response byte, and the request may be re-sent: its body was given as bytes, and `proxy.methods.may_resend`
    allows it (an idempotent method, or nothing of it was sent). Nothing was written to the client; the caller
    forwards the same request elsewhere."""

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
    body_timeout: float = 30.0,
    keep_headers: bool = True,
) -> tuple[web.StreamResponse, ForwardResult]:
    """Send the request upstream and stream the response to the client; returns the prepared response.

    headers: end-to-end request headers to send, already cleaned by `proxy.headers.upstream_request_headers`
    (no framing headers: the transport writes exactly one).
    body: the request body when the caller has already read it (mirrored or fallback routes); None means stream
    `request.content` to the upstream, counting bytes and failing with 413 past `max_body`.
    capture: keep up to this many response body bytes in ForwardResult.body (0: keep none) while streaming.
    response_headers: extra headers added to the client response (X-Request-Id, Via, debug headers); a Via entry
    is appended to the upstream's Via, any other name replaces the upstream's header of that name.
    keep_headers: False when nobody reads the result's response headers (no exchange observer): a small response
    then keeps none.
    Failures answer by `proxy.errors.KINDS`: 502 (connect/reset before the head), 504 (timeout), 503 (no free
    pooled connection), 413/408/400 (the client's body) with a JSON body {"error", "route", "request_id"}; a reset
    mid-body aborts the client connection, never a short response that looks complete.
    """
    started = duration_clock()  # latencies from proxy.clock, never the loop's (whole milliseconds under uvloop)
    stream = _NO_STREAM  # replaced by a fresh one when the body streams: the common bodiless request skips it
    send_body: bytes | AsyncIterator[bytes] | None = body
    content_length: int | None = None
    if body is not None:
        if len(body) > max_body:
            return _refused("too_large", route_id, request_id, response_headers, started)
    elif request.body_exists:
        declared = request.content_length
        if declared is not None and declared > max_body:
            # Refused before any upstream sees it; closing stops aiohttp from draining a huge unread body.
            return _refused("too_large", route_id, request_id, response_headers, started)
        if declared is not None and declared <= PREREAD_LIMIT:
            try:
                send_body = await read_exactly(request, declared, body_timeout)
            except RequestBodyError as err:
                return _refused(err.kind, route_id, request_id, response_headers, started)
        else:
            content_length = declared  # None for a chunked body: the transport re-chunks it
            stream = BodyStream()
            send_body = stream_body(request, max_body, body_timeout, stream)
    elif request.content_length == 0:
        send_body = b""
    replayable = stream is _NO_STREAM  # bytes or nothing: may go again on a fresh connection, or to legacy

    timeouts = target.timeouts
    try:
        upstream = await target.pool.request(
            request.method,
            target.target,
            headers,
            send_body,
            content_length=content_length,
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
            retry_stale=replayable,
            pool_timeout=timeouts.pool,
        )
    except (UpstreamError, RequestBodyError) as err:
        # The body's own failure wins: the transport may have raised its own error on top of it.
        failure: UpstreamError | RequestBodyError = stream.failure or err
        if allow_fallback and replayable and _may_fall_back(failure, request.method):
            raise FallbackAvailable(failure) from err
        return _refused(failure.kind, route_id, request_id, response_headers, started)

    try:
        # The small fixed-length (or bodiless) answer's fast path is tried here, not in _stream_response: one
        # coroutine fewer per request.
        length = upstream.content_length
        empty = must_be_empty_body(request.method, upstream.status)
        if empty or (length is not None and length <= WHOLE_LIMIT):
            sent = await _send_whole(
                request, upstream, length, empty, capture, response_headers, request_id, started, keep_headers
            )
            if sent is not None:
                return sent
        return await _stream_response(request, upstream, length, capture, response_headers, request_id, started)
    finally:
        upstream.close()


def _may_fall_back(failure: UpstreamError | RequestBodyError, method: str) -> TypeGuard[UpstreamError]:
    """An upstream fault before any response byte, for a request that `proxy.methods.may_resend` lets go again."""
    return (
        isinstance(failure, UpstreamError)
        and failure.kind in UPSTREAM_FAULTS
        and not failure.responded
        and may_resend(method, sent=failure.sent)
    )


_NO_STREAM = BodyStream()  # never written to: only stream_body sets its fields


async def _stream_response(
    request: web.BaseRequest,
    upstream: UpstreamResponse,
    length: int | None,
    capture: int,
    extra: Headers,
    request_id: str,
    started: float,
) -> tuple[web.StreamResponse, ForwardResult]:
    """Stream the upstream's answer through an aiohttp StreamResponse (`length`: its Content-Length, if any)."""
    cleaned = end_to_end_response_headers(upstream.raw_headers)
    # A fixed-length body is already on its way: hold the head back and send it with the first body chunk (one
    # send instead of two per response). Streams of unknown length (SSE, chunked) get their head at once.
    response_class = HeadWithBodyResponse if length else ProxiedResponse
    resp = response_class(
        status=upstream.status,
        reason=upstream.reason or None,
        headers=response_headers_with(cleaned, request_id=request_id, via="", extra=extra),
    )
    resp.upstream_server = "Server" in resp.headers
    if length is not None:
        resp.content_length = length  # aiohttp drops it itself for 204/304; HEAD keeps it, as the upstream sent
    captured = bytearray() if capture > 0 else None
    truncated = False
    error: ErrorKind | None = None
    try:
        await resp.prepare(request)
        while True:
            try:
                chunk = await upstream.read()
            except UpstreamError as err:
                error = err.kind
                _abort_client(request)
                break
            if not chunk:
                await resp.write_eof()
                break
            if captured is not None and not truncated:
                room = capture - len(captured)
                captured += chunk[:room]
                truncated = len(chunk) > room
            await resp.write(chunk)
    except ConnectionError:
        error = "client_gone"  # the caller's finally closes the upstream: a half-read response is never pooled
    return resp, ForwardResult(
        status=upstream.status,
        upstream_status=upstream.status,
        error=error,
        response_headers=tuple(cleaned),
        body=bytes(captured) if captured is not None else None,
        body_complete=error is None and not truncated,
        latency=duration_clock() - started,
    )


async def _send_whole(
    request: web.BaseRequest,
    upstream: UpstreamResponse,
    length: int | None,
    empty: bool,
    capture: int,
    extra: Headers,
    request_id: str,
    started: float,
    keep_headers: bool,
) -> tuple[web.StreamResponse, ForwardResult] | None:
    """The fast path for a small fixed-length (or bodiless) response: its head is built from the upstream's raw
    header bytes and written with the whole body in one write. None when the head needs the slow path."""
    status = upstream.status
    keep_alive = request.keep_alive
    built = response_head(
        upstream.raw_headers,
        status=status,
        reason=upstream.reason,
        version=request.version,
        request_id=request_id,
        extra=extra,
        content_length=None if length is None or _drops_content_length(request.method, status) else length,
        keep_alive=keep_alive,
        has_content=not empty and length != 0,
    )
    if built is None:
        return None
    head, kept = built
    error: ErrorKind | None = None
    body = upstream.read_complete()
    if body is None:
        chunks: list[bytes] = []
        try:
            while chunk := await upstream.read():
                chunks.append(chunk)
        except UpstreamError as err:
            error = err.kind
        body = b"".join(chunks)
    if error is None and not empty and len(body) != length:
        error = "reset"  # framed otherwise than its Content-Length said (a chunked body beside it): never pass it on
    if error is None:
        data = head + body if body and not empty else head
        writer = request.writer
        try:
            if type(writer) is CoalescingWriter:
                writer.write_whole(data)
            else:
                await writer.write_eof(data)
        except ConnectionError:
            error = "client_gone"
    else:
        _abort_client(request)  # nothing was written: the client sees the connection drop, never a short answer
    truncated = 0 < capture < len(body)
    # Built by `new_tuple` from every field in order (proxy.tuples): one per request, without the NamedTuple's
    # Python-level __new__.
    result: ForwardResult = new_tuple(
        ForwardResult,
        (
            status,  # status
            status,  # upstream_status
            error,
            (),  # response_headers: the raw ones are kept instead
            body[:capture] if capture > 0 else None,  # body
            error is None and not truncated,  # body_complete
            duration_clock() - started,  # latency
            tuple(kept) if keep_headers else (),  # raw_response_headers
        ),
    )
    return SentResponse(status, keep_alive and error is None), result


def _abort_client(request: web.BaseRequest) -> None:
    """Drop the client connection without a terminating chunk, so the client sees an incomplete response."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _refused(
    kind: ErrorKind,
    route_id: str | None,
    request_id: str,
    extra: Headers,
    started: float,
) -> tuple[web.StreamResponse, ForwardResult]:
    """A forward that failed before any response byte reached the client: the answer and what happened."""
    resp = kind_response(kind, route_id, request_id, headers=extra)
    return resp, _failure(resp.status, kind, started)


def _failure(status: int, error: ErrorKind, started: float) -> ForwardResult:
    return ForwardResult(
        status=status,
        upstream_status=0,
        error=error,
        response_headers=(),
        body=None,
        body_complete=False,
        latency=duration_clock() - started,
    )
