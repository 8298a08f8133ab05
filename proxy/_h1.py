"""One HTTP/1.1 client connection on an asyncio Protocol: writes a request, parses the answer with aiohttp's llhttp.

A connection carries one exchange at a time (no pipelining). It knows nothing of pools or of the public error
types: `proxy.transport` owns connections and turns an `H1Failure` into UpstreamReset / UpstreamTimeout.

Body bytes go into the aiohttp `StreamReader` the parser creates; the reader pauses this protocol past its
high-water mark, which pauses both the parser (the rest of the packet waits in its tail) and the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, cast

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage
from aiohttp.streams import StreamReader

from proxy.errors import ErrorKind

# StreamReader low-water mark; the socket is paused when twice this much body is buffered unread.
_READ_LIMIT = 2**16
# Up to this size the body is copied behind the head so one write (one syscall, one segment) carries both.
_COALESCE_LIMIT = 2**16
# Upstream heads are trusted more than client heads, but a cookie-heavy back end still needs room.
_MAX_FIELD_SIZE = 2**16
_MAX_HEADERS = 256
_PAUSE_ERRORS = (AttributeError, NotImplementedError, RuntimeError)
# What llhttp (and aiohttp's pure-Python fallback parser) raise for a malformed or truncated message.
_PARSE_ERRORS = (HttpProcessingError, ValueError)
_CHUNKED_END = b"0\r\n\r\n"


class H1Failure(Exception):
    """A failed exchange. kind: "reset" (closed or malformed), "timeout", or "error" (a request-side fault)."""

    def __init__(self, kind: ErrorKind, message: str, *, sent: bool, responded: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.sent = sent
        self.responded = responded


def encode_head(
    method: str, target: str, headers: Iterable[tuple[str, str]], framing: str
) -> tuple[bytes, bool] | None:
    """The request head as bytes and whether it asks to close the connection; None if a field holds CR or LF.

    `framing` is "" or one complete framing line ("Content-Length: 12\\r\\n").
    """
    if not isinstance(headers, list | tuple):
        headers = list(headers)  # walked twice below
    parts = [f"{name}: {value}\r\n" for name, value in headers]
    lines = len(parts) + 2  # the request line, the fields and the empty line
    if framing:
        parts.append(framing)
        lines += 1
    parts.append("\r\n")
    text = f"{method} {target} HTTP/1.1\r\n" + "".join(parts)
    # A CR or LF inside a name, value or target would split the head: header injection. Counting is one C scan.
    if text.count("\n") != lines or text.count("\r") != lines:
        return None
    # One C scan finds whether any Connection field exists (forwarded requests never carry one) before a look at each.
    close = "\nconnection:" in text.lower() and any(
        len(name) == 10 and name.lower() == "connection" and "close" in value.lower() for name, value in headers
    )
    # aiohttp decodes incoming fields as UTF-8 with surrogateescape; this restores the exact original bytes.
    return text.encode("utf-8", "surrogateescape"), close


class H1Connection(asyncio.Protocol):
    """A keep-alive client connection. `on_lost` is called once, from connection_lost."""

    __slots__ = (
        "_active",
        "_busy",
        "_closed_waiter",
        "_done",
        "_drain_waiter",
        "_head",
        "_head_parser",
        "_last_rx",
        "_loop",
        "_msg",
        "_on_lost",
        "_parser",
        "_payload",
        "_reading_paused",
        "_rx",
        "_sent",
        "_should_close",
        "_timeout",
        "_timer",
        "_timer_at",
        "_timer_parked",
        "_timing",
        "_write_paused",
        "connected",
        "idle_since",
        "pooled",
        "reused",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[H1Connection], None]) -> None:
        self._loop = loop
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.connected = False  # read by aiohttp's StreamReader before it waits
        self.reused = False
        self.pooled = False
        self.idle_since = 0.0
        self._parser = self._new_parser(with_body=True)
        self._head_parser: HttpResponseParser | None = None
        self._active = self._parser
        self._busy = False
        self._done = False
        self._head: asyncio.Future[None] | None = None
        self._msg: RawResponseMessage | None = None
        self._payload: StreamReader | None = None
        self._should_close = False
        self._sent = False
        self._rx = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when _timer fires
        self._timing = False  # the current exchange has armed its read timeout (a request body may still be going)
        self._timer_parked = False
        self._timeout = 0.0
        self._last_rx = 0.0
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None

    def _new_parser(self, *, with_body: bool) -> HttpResponseParser:
        # The protocol argument is typed as aiohttp's BaseProtocol; the reader only needs connected and
        # pause_reading/resume_reading, which this class provides.
        return HttpResponseParser(
            cast(Any, self),
            self._loop,
            _READ_LIMIT,
            max_field_size=_MAX_FIELD_SIZE,
            max_headers=_MAX_HEADERS,
            response_with_body=with_body,
            read_until_eof=True,
            auto_decompress=False,
        )

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connected = True
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # best effort: only latency is at stake
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self._busy or self._done:
            # Bytes outside an exchange (a 408 on an idle connection, trailing garbage): never reuse this one.
            self._should_close = True
            if self.transport is not None:
                self.transport.close()
            return
        self._rx = True
        if self._timer is not None:
            self._last_rx = self._loop.time()
        self._feed(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost settles the exchange

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connected = False
        self._should_close = True
        self._cancel_timer()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)  # the writer checks `connected` after waking
        head = self._head
        payload = self._payload
        if head is not None:
            self._head = None
            if not head.done():
                detail = f": {exc}" if exc is not None else ""
                head.set_exception(
                    H1Failure(
                        "reset",
                        f"upstream closed the connection before the response head{detail}",
                        sent=self._sent,
                        responded=self._rx,
                    )
                )
        elif payload is not None and not self._done and payload.exception() is None:
            self._end_body(payload, exc)
        self._on_lost(self)
        closed = self._closed_waiter
        if closed is not None and not closed.done():
            closed.set_result(None)

    def _end_body(self, payload: StreamReader, exc: BaseException | None) -> None:
        """The socket ended mid-body: complete a read-until-close body, fail a framed one."""
        if exc is None:
            try:
                self._active.feed_eof()
            except _PARSE_ERRORS as err:
                message = f"upstream closed the connection mid-body ({err})"
            else:
                if payload.is_eof():
                    self._done = True
                    return
                message = "upstream closed the connection mid-body"
        else:
            message = f"upstream connection broke mid-body: {exc}"
        payload.set_exception(H1Failure("reset", message, sent=True, responded=True))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # Flow control called by the StreamReader

    def pause_reading(self) -> None:
        if self._reading_paused:
            return
        self._reading_paused = True
        self._active.pause_reading()
        if self.transport is not None:
            with contextlib.suppress(*_PAUSE_ERRORS):  # a transport without flow control: nothing to pause
                self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        # Called on every read below the low-water mark, so the common case must return at once.
        if not self._reading_paused:
            return
        self._reading_paused = False
        if resume_parser and self._busy and not self._done:
            self._feed(b"")  # parse what the parser kept in its tail when it paused
        if not self._reading_paused and self.transport is not None:
            with contextlib.suppress(*_PAUSE_ERRORS):
                self.transport.resume_reading()
            if self._timer_parked:
                self._timer_parked = False
                self._arm(self._timeout)

    # Parsing

    def _feed(self, data: bytes) -> None:
        try:
            messages, upgraded, _ = self._active.feed_data(data)
        except _PARSE_ERRORS as err:
            if self._done:
                self._close_after_response()
            else:
                self._fail(H1Failure("reset", f"malformed response from upstream: {err}", sent=True, responded=True))
            return
        for msg, reader in messages:
            code = msg.code
            if code < 200:
                if code == 101:
                    self._fail(
                        H1Failure("reset", "upstream switched protocols unasked (101)", sent=True, responded=True)
                    )
                    return
                continue  # interim 100 / 103: the final head follows
            head = self._head
            if head is None:
                # A second final response to one request: the stream is out of step.
                self._close_after_response()
                return
            self._head = None
            self._msg = msg
            self._payload = reader
            if msg.should_close:
                self._should_close = True
            if not head.done():
                head.set_result(None)
        if upgraded:
            self._should_close = True
        payload = self._payload
        if payload is not None and not self._done and payload.is_eof():
            self._done = True  # the timer, if it fires before the next exchange, finds nothing to do

    def _close_after_response(self) -> None:
        self._should_close = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, failure: H1Failure) -> None:
        """End the exchange with `failure`: the head waiter or the body reader raises it."""
        self._should_close = True
        self._cancel_timer()
        head = self._head
        payload = self._payload
        if head is not None:
            self._head = None
            if not head.done():
                head.set_exception(failure)
        elif payload is not None and not self._done and payload.exception() is None:
            payload.set_exception(failure)
        self.abort()

    # Timer: one handle that outlives exchanges, re-armed lazily from the time of the last received byte. Creating
    # and cancelling a timer per exchange is a measurable share of a small request's cost; a handle that fires
    # early just re-arms for the current deadline, one that fires between exchanges finds nothing to do.

    def _arm(self, timeout: float) -> None:
        if self._done or not self.connected:
            return
        self._timeout = timeout
        self._timing = True
        now = self._loop.time()
        self._last_rx = now
        deadline = now + timeout
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return
            timer.cancel()  # set for a longer timeout than this exchange's
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self._timer_parked = False
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _on_timer(self) -> None:
        self._timer = None
        if not self._timing or self._done or not self.connected:
            return
        if self._reading_paused:
            self._timer_parked = True  # the reader is slow, not the upstream: restart on resume
            return
        deadline = self._last_rx + self._timeout
        if self._loop.time() < deadline:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        if self._head is not None:
            message = f"no response head from upstream within {self._timeout:g}s"
        else:
            message = f"upstream sent no body bytes for {self._timeout:g}s"
        self._fail(H1Failure("timeout", message, sent=True, responded=self._rx))

    # The exchange, driven by proxy.transport

    def _start(self, *, head_only: bool, close: bool) -> asyncio.Future[None]:
        if head_only:
            if self._head_parser is None:
                self._head_parser = self._new_parser(with_body=False)
            self._active = self._head_parser
        else:
            self._active = self._parser
        self._busy = True
        self._timing = False
        self._done = False
        self._should_close = close
        self._sent = False
        self._rx = False
        self._msg = None
        self._payload = None
        fut = self._loop.create_future()
        self._head = fut
        return fut

    async def exchange(
        self, head: bytes, body: bytes, *, head_only: bool, close: bool, read_timeout: float
    ) -> tuple[RawResponseMessage, StreamReader]:
        """Write head and body in one go, then wait for the final response head."""
        fut = self._start(head_only=head_only, close=close)
        transport = self.transport
        if transport is None or transport.is_closing():
            self._head = None
            self._busy = False
            raise H1Failure("reset", "upstream connection closed before the request", sent=False, responded=False)
        self._sent = True
        if not body:
            transport.write(head)
        elif len(body) <= _COALESCE_LIMIT:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        self._arm(read_timeout)
        return await self._wait_head(fut)

    async def exchange_stream(
        self,
        head: bytes,
        body: AsyncIterable[bytes],
        *,
        length: int | None,
        head_only: bool,
        close: bool,
        read_timeout: float,
    ) -> tuple[RawResponseMessage, StreamReader]:
        """Write the head, stream the body (chunked when `length` is None), then wait for the final head."""
        fut = self._start(head_only=head_only, close=close)
        try:
            await self._send_stream(head, body, length, read_timeout)
        except BaseException:
            self._drop_head(fut)
            raise
        if self._head is None:
            # The upstream answered before the request was complete; the stream position is unknowable.
            self._should_close = True
        self._arm(read_timeout)
        return await self._wait_head(fut)

    async def _send_stream(
        self, head: bytes, body: AsyncIterable[bytes], length: int | None, read_timeout: float
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise H1Failure("reset", "upstream connection closed before the request", sent=False, responded=False)
        self._sent = True
        transport.write(head)
        count = 0
        async for chunk in body:
            if not chunk:
                continue  # an empty chunk would end a chunked body early
            if not self.connected:
                return  # the head waiter holds the outcome (a reset, or a response already received)
            count += len(chunk)
            if length is None:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            elif count > length:
                raise H1Failure(
                    "error",
                    f"request body longer than its declared Content-Length {length}",
                    sent=True,
                    responded=self._rx,
                )
            else:
                transport.write(chunk)
            if self._write_paused:
                await self._drain(read_timeout)
        if not self.connected:
            return
        if length is None:
            transport.write(_CHUNKED_END)
        elif count != length:
            raise H1Failure(
                "error",
                f"request body shorter ({count} bytes) than its declared Content-Length {length}",
                sent=True,
                responded=self._rx,
            )

    async def _drain(self, stall: float) -> None:
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        try:
            async with asyncio.timeout(stall):
                await waiter
        except TimeoutError:
            raise H1Failure(
                "timeout", f"upstream read none of the request body for {stall:g}s", sent=True, responded=self._rx
            ) from None
        finally:
            self._drain_waiter = None

    async def _wait_head(self, fut: asyncio.Future[None]) -> tuple[RawResponseMessage, StreamReader]:
        try:
            await fut
        except BaseException:
            self._drop_head(fut)
            raise
        msg = self._msg
        payload = self._payload
        assert msg is not None  # set together with the future's result
        assert payload is not None
        return msg, payload

    def _drop_head(self, fut: asyncio.Future[None]) -> None:
        """The exchange is abandoned (failure or cancellation): discard the connection."""
        if self._head is fut:
            self._head = None
        if fut.done() and not fut.cancelled():
            fut.exception()  # mark retrieved: the caller raises its own error
        else:
            fut.cancel()
        self._busy = False
        self._should_close = True
        self._cancel_timer()
        self.abort()

    def finish(self) -> bool:
        """The caller is done with the response. True when the connection can carry another request."""
        payload = self._payload
        self._payload = None
        self._msg = None
        self._busy = False
        self._timing = False  # a timer left armed fires once, idle, and is not renewed
        if (
            self.connected
            and not self._should_close
            and self._done
            and payload is not None
            and payload.at_eof()
            and not self._reading_paused
        ):
            return True
        self.close()
        return False

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        transport = self.transport
        if transport is not None and self.connected:
            transport.abort()

    def closed_future(self) -> asyncio.Future[None]:
        """Done once connection_lost has run."""
        waiter = self._closed_waiter
        if waiter is None:
            waiter = self._closed_waiter = self._loop.create_future()
            if not self.connected:
                waiter.set_result(None)
        return waiter
