"""Forward one client request to one upstream and stream the answer back.

`proxy.handler` calls exactly this surface. Bodies stream in both directions (constant memory, whatever their
size); failures the client can still be told about become 502/504/413 JSON answers, and a failure after the
response head was sent aborts the client connection so a broken body never looks complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import must_be_empty_body, should_remove_content_length

from proxy.config import Timeouts, Upstream
from proxy.events import Headers
from proxy.headers import decode_pairs, end_to_end_response_headers, response_head, response_headers_with
from proxy.methods import may_resend
from proxy.transport import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamReset,
    UpstreamResponse,
    UpstreamTimeout,
)

_dumps = orjson.dumps


# Known-length bodies up to this size are read before contacting the upstream: they can then be re-sent on a
# fresh connection when a pooled one turns out stale, which a stream cannot.
PREREAD_LIMIT = 64 * 1024
# Fixed-length response bodies up to this size are gathered and sent with their head in one write, skipping
# aiohttp's StreamResponse; larger ones and bodies of unknown length stream.
WHOLE_LIMIT = 64 * 1024


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
) -> tuple[web.StreamResponse, ForwardResult]:
    """Send the request upstream and stream the response to the client; returns the prepared response.

    headers: end-to-end request headers to send, already cleaned by `proxy.headers.upstream_request_headers`
    (no framing headers: the transport writes exactly one).
    body: the request body when the caller has already read it (mirrored or fallback routes); None means stream
    `request.content` to the upstream, counting bytes and failing with 413 past `max_body`.
    capture: keep up to this many response body bytes in ForwardResult.body (0: keep none) while streaming.
    response_headers: extra headers added to the client response (X-Request-Id, Via, debug headers); a Via entry
    is appended to the upstream's Via, any other name replaces the upstream's header of that name.
    Upstream failures become 502 (connect/reset before the head) or 504 (timeout) with a JSON body
    {"error", "route", "request_id"}; a reset mid-body aborts the client connection, never a short response
    that looks complete.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    state = _NO_STREAM  # replaced by a fresh one when the body streams: the common bodiless request skips it
    send_body: bytes | AsyncIterator[bytes] | None
    content_length: int | None = None
    if body is not None:
        if len(body) > max_body:
            return _too_large(route_id, request_id, response_headers, started)
        send_body, replayable = body, True
    else:
        declared = request.content_length
        if declared is not None and declared > max_body:
            # Refused before any upstream sees it; closing stops aiohttp from draining a huge unread body.
            return _too_large(route_id, request_id, response_headers, started)
        if not request.body_exists:
            send_body, replayable = (b"" if declared == 0 else None), True
        elif declared is not None and declared <= PREREAD_LIMIT:
            try:
                async with asyncio.timeout(body_timeout):
                    send_body = await request.content.readexactly(declared)
            except TimeoutError:
                return _body_timeout(route_id, request_id, response_headers, started)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return _client_gone_before_head(started)
            replayable = True
        else:
            content_length = declared  # None for a chunked body: the transport re-chunks it
            state = _BodyState()
            send_body, replayable = _stream_body(request, max_body, body_timeout, state), False

    try:
        upstream = await target.pool.request(
            request.method,
            target.target,
            headers,
            send_body,
            content_length=content_length,
            connect_timeout=target.timeouts.connect,
            read_timeout=target.timeouts.read,
            retry_stale=replayable,
        )
    except (UpstreamError, _RequestBodyError) as err:
        if state.too_large:
            return _too_large(route_id, request_id, response_headers, started)
        if state.timed_out:
            return _body_timeout(route_id, request_id, response_headers, started)
        if state.malformed:
            resp = error_response(400, "bad_body", route_id, request_id, headers=response_headers)
            resp.force_close()
            return resp, _failure(400, "client_gone", started)
        if state.client_gone or not isinstance(err, UpstreamError):
            return _client_gone_before_head(started)
        if allow_fallback and replayable and not err.responded and may_resend(request.method, sent=err.sent):
            raise FallbackAvailable(err) from err
        return _upstream_failed(err, route_id, request_id, response_headers, started)

    try:
        return await _stream_response(request, upstream, capture, response_headers, request_id, started)
    finally:
        upstream.close()


@dataclass(slots=True)
class _BodyState:
    """What the request body stream saw, read after the transport gave up (it may wrap our exception)."""

    sent: int = 0
    too_large: bool = False
    client_gone: bool = False
    malformed: bool = False  # the client's chunked framing broke (see proxy.server): answered 400 bad_body
    timed_out: bool = False


_NO_STREAM = _BodyState()  # never written to: only _stream_body sets its fields


class _RequestBodyError(Exception):
    """The client's body could not be forwarded: over the size limit, or the client went away."""


async def _stream_body(request: web.BaseRequest, limit: int, idle: float, state: _BodyState) -> AsyncIterator[bytes]:
    content = request.content
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await content.readany()
        except TimeoutError as exc:
            state.timed_out = True
            raise _RequestBodyError(f"no request body byte for {idle}s") from exc
        except Exception as exc:  # any failure reading the client means the client is gone
            state.client_gone = True
            state.malformed = isinstance(exc, web.RequestPayloadError)
            raise _RequestBodyError("client body broke") from exc
        if not chunk:
            return
        state.sent += len(chunk)
        if state.sent > limit:
            state.too_large = True
            raise _RequestBodyError(f"request body over {limit} bytes")
        yield chunk


async def _stream_response(
    request: web.BaseRequest,
    upstream: UpstreamResponse,
    capture: int,
    extra: Headers,
    request_id: str,
    started: float,
) -> tuple[web.StreamResponse, ForwardResult]:
    length = _content_length(upstream)
    empty = must_be_empty_body(request.method, upstream.status)
    if empty or (length is not None and length <= WHOLE_LIMIT):
        sent = await _send_whole(request, upstream, length, empty, capture, extra, request_id, started)
        if sent is not None:
            return sent
    cleaned = end_to_end_response_headers(upstream.raw_headers)
    # A fixed-length body is already on its way: hold the head back and send it with the first body chunk (one
    # send instead of two per response). Streams of unknown length (SSE, chunked) get their head at once.
    response_class = _HeadWithBodyResponse if length else _ProxiedResponse
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
    error: str | None = None
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
        latency=asyncio.get_running_loop().time() - started,
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
        content_length=None if length is None or should_remove_content_length(request.method, status) else length,
        keep_alive=keep_alive,
        has_content=not empty and length != 0,
    )
    if built is None:
        return None
    head, kept = built
    error: str | None = None
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
        try:
            await request.writer.write_eof(head + body if body and not empty else head)
        except ConnectionError:
            error = "client_gone"
    else:
        _abort_client(request)  # nothing was written: the client sees the connection drop, never a short answer
    truncated = 0 < capture < len(body)
    return _SentResponse(status, keep_alive and error is None), ForwardResult(
        status=status,
        upstream_status=status,
        error=error,
        response_headers=tuple(decode_pairs(kept)),
        body=body[:capture] if capture > 0 else None,
        body_complete=error is None and not truncated,
        latency=asyncio.get_running_loop().time() - started,
    )


class _SentResponse(web.StreamResponse):
    """A response `_send_whole` has written itself. aiohttp's `finish_response` prepares and ends every response
    a handler returns; for this one both steps have nothing left to do."""

    def __init__(self, status: int, keep_alive: bool) -> None:
        super().__init__(status=status)
        self._sent_keep_alive = keep_alive

    @property
    def prepared(self) -> bool:
        return True

    @property
    def keep_alive(self) -> bool | None:
        return self._sent_keep_alive

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class _ProxiedResponse(web.StreamResponse):
    """A StreamResponse carrying an upstream's answer. aiohttp adds a Server header naming Python and aiohttp to
    every response without one; this hop adds none (an upstream's own Server header is passed on)."""

    upstream_server = False  # set when the upstream sent a Server header

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        if not self.upstream_server:
            self.headers.popall("Server", None)


class _ErrorResponse(web.Response):
    """strangler's own answer (JSON errors): no Server header naming Python and aiohttp either."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


class _HeadWithBodyResponse(_ProxiedResponse):
    """A StreamResponse whose head is written together with the first body chunk (as web.Response does)."""

    _send_headers_immediately = False


def _content_length(upstream: UpstreamResponse) -> int | None:
    value = upstream.headers.get("Content-Length")
    if value is None or not value.isdigit():
        return None
    return int(value)


def _abort_client(request: web.BaseRequest) -> None:
    """Drop the client connection without a terminating chunk, so the client sees an incomplete response."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def error_response(
    status: int,
    error: str,
    route_id: str | None,
    request_id: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
) -> web.Response:
    """A JSON error answer generated by strangler itself: {"error", "route", "request_id"}."""
    body = _dumps({"error": error, "route": route_id, "request_id": request_id})
    return _ErrorResponse(
        status=status,
        body=body,
        content_type="application/json",
        headers=response_headers_with((), request_id=request_id, via="", extra=headers),
    )


_ERRORS: dict[type[UpstreamError], tuple[int, str]] = {
    UpstreamConnectError: (502, "upstream_unreachable"),
    UpstreamReset: (502, "upstream_reset"),
    UpstreamTimeout: (504, "upstream_timeout"),
}


def _upstream_failed(
    err: UpstreamError, route_id: str | None, request_id: str, extra: Headers, started: float
) -> tuple[web.StreamResponse, ForwardResult]:
    status, name = next((m for cls, m in _ERRORS.items() if isinstance(err, cls)), (502, "upstream_error"))
    return error_response(status, name, route_id, request_id, headers=extra), _failure(status, err.kind, started)


def _too_large(
    route_id: str | None, request_id: str, extra: Headers, started: float
) -> tuple[web.StreamResponse, ForwardResult]:
    resp = error_response(413, "request_too_large", route_id, request_id, headers=extra)
    resp.force_close()  # the rest of the body is never read: the connection cannot be reused
    return resp, _failure(413, "too_large", started)


def _body_timeout(
    route_id: str | None, request_id: str, extra: Headers, started: float
) -> tuple[web.StreamResponse, ForwardResult]:
    resp = error_response(408, "request_body_timeout", route_id, request_id, headers=extra)
    resp.force_close()  # the stalled body is abandoned: the connection cannot be reused
    return resp, _failure(408, "body_timeout", started)


def _client_gone_before_head(started: float) -> tuple[web.StreamResponse, ForwardResult]:
    resp = web.Response(status=400)
    resp.force_close()
    return resp, _failure(400, "client_gone", started)


def _failure(status: int, error: str, started: float) -> ForwardResult:
    return ForwardResult(
        status=status,
        upstream_status=0,
        error=error,
        response_headers=(),
        body=None,
        body_complete=False,
        latency=asyncio.get_running_loop().time() - started,
    )
