"""Reading a client's request body within `limits.max_body` and `limits.body_timeout`: the one place that does.

Every failure is a `proxy.errors.RequestBodyError` (too large, stalled, client gone, broken framing); `_MAPPED` is
the one table from what aiohttp's reader raises to those kinds. The handler holds a body whole when a route needs
it again (mirroring, fallback); `proxy.forwarding` reads a small one before sending or streams the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.errors import BadBody, BodyTimeout, BodyTooLarge, ClientGone, RequestBodyError

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# What reading the client raises → the kind it is. Order matters: TimeoutError is an OSError. Anything else a read
# raises means the client is gone.
_MAPPED: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], type[RequestBodyError]], ...] = (
    (TimeoutError, BodyTimeout),
    ((web.RequestPayloadError, HttpProcessingError), BadBody),  # chunked framing broke (see proxy.server)
    ((asyncio.IncompleteReadError, ConnectionError, OSError), ClientGone),
)


def body_error(exc: BaseException, idle: float) -> RequestBodyError:
    """The RequestBodyError for an exception raised while reading the client's body."""
    if isinstance(exc, RequestBodyError):
        return exc
    for raised, kind in _MAPPED:
        if isinstance(exc, raised):
            if kind is BodyTimeout:
                return BodyTimeout(f"no request body byte for {idle:g}s")
            return kind(str(exc) or type(exc).__name__)
    return ClientGone(str(exc) or type(exc).__name__)


async def expect_continue(request: web.BaseRequest, max_body: int) -> None:
    """Answer `Expect: 100-continue` (the client waits for it before sending the body) unless the declared body
    is over the limit: then the 413 comes without the client ever sending it."""
    expect = request.headers.get("Expect")
    if expect is None or expect.lower() != "100-continue":
        return
    length = request.content_length
    if length is None or length <= max_body:
        await request.writer.write(_CONTINUE)


async def read_exactly(request: web.BaseRequest, length: int, idle: float) -> bytes:
    """A body of a declared `length` (already checked against max_body), read with `idle` allowed per wait."""
    try:
        async with asyncio.timeout(idle):
            return await request.content.readexactly(length)
    except Exception as exc:
        raise body_error(exc, idle) from exc


async def read_held(request: web.BaseRequest, cap: int, max_body: int, idle: float) -> bytes | None:
    """The request body as bytes when it can be held, else None (forward() streams it).

    A declared length up to `cap` is read; a larger one streams. A chunked body has no declared length, and once
    reading has started the bytes cannot be given back to a stream, so it is read whole (up to `max_body`).
    """
    if not request.body_exists:
        return b""
    length = request.content_length
    if length is not None:
        if length > cap or length > max_body:
            return None
        return await read_exactly(request, length, idle) if length else b""
    chunks: list[bytes] = []
    total = 0
    content = request.content
    try:
        while True:
            async with asyncio.timeout(idle):
                chunk = await content.readany()
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > max_body:
                raise BodyTooLarge(f"request body over {max_body} bytes")
            chunks.append(chunk)
    except Exception as exc:
        raise body_error(exc, idle) from exc


@dataclass(slots=True)
class BodyStream:
    """What a streamed body saw, read after the transport gave up (it may raise its own error instead of ours)."""

    sent: int = 0
    failure: RequestBodyError | None = None


async def stream_body(request: web.BaseRequest, max_body: int, idle: float, state: BodyStream) -> AsyncIterator[bytes]:
    """The body chunk by chunk as it arrives, counted against `max_body`; a failure is also kept in `state`."""
    content = request.content
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await content.readany()
        except Exception as exc:
            state.failure = body_error(exc, idle)
            raise state.failure from exc
        if not chunk:
            return
        state.sent += len(chunk)
        if state.sent > max_body:
            state.failure = BodyTooLarge(f"request body over {max_body} bytes")
            raise state.failure
        yield chunk
