"""One HTTP/1.1 client connection on an asyncio Protocol: the socket, timer, flow control and futures.

What the bytes mean is decided by `proxy.upstream.h1_protocol.H1State` (sans-IO); this module writes requests, feeds it
what arrives and turns its events into the head future, closes and aborts. A connection carries one exchange at a time
(no pipelining). It knows nothing of pools or of the public error types: `proxy.upstream.transport` owns connections and
turns an `H1Failure` into UpstreamReset / UpstreamTimeout.

Body bytes go into the parser's `StreamReader` (unless the response came whole: `proxy.upstream.whole`), which pauses
this protocol past its high-water mark: the parser (the rest of the packet waits in its tail) and the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterable, Callable, Sequence
from typing import cast

from proxy.coalesce import coalescer
from proxy.upstream.h1_protocol import (
    OUT_OF_STEP,
    RESPONSE_HEAD,
    BodyReader,
    Event,
    H1Failure,
    H1State,
    ResponseMessage,
)

# Up to this size the body is copied behind the head so one write (one syscall, one segment) carries both.
_COALESCE_LIMIT = 2**16
_PAUSE_ERRORS = (AttributeError, NotImplementedError, RuntimeError)
_CHUNKED_END = b"0\r\n\r\n"


class H1Connection(asyncio.Protocol):
    """A keep-alive client connection. `on_lost` is called once, from connection_lost."""

    __slots__ = (
        "_closed_waiter",
        "_coalescing",
        "_drain_waiter",
        "_head",
        "_last_rx",
        "_loop",
        "_on_lost",
        "_reading_paused",
        "_state",
        "_timeout",
        "_timer",
        "_timer_at",
        "_timer_parked",
        "_timing",
        "_write_paused",
        "connected",
        "held",
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
        # The body readers call pause_reading/resume_reading on this protocol and wait on this loop.
        self._state = H1State(self, loop)
        self._head: asyncio.Future[None] | None = None  # pending while the state awaits the final head
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
        self._coalescing = coalescer(loop)  # a small request goes out at the end of the loop iteration
        self.held = 0  # the coalescer's round holding a request: flush it before another write or a close

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connected = True
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # best effort: only latency is at stake
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        events = self._state.receive_data(data)
        if self._timer is not None:
            self._last_rx = self._loop.time()
        if events:
            self._act(events)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost settles the exchange

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connected = False
        self._cancel_timer()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)  # the writer checks `connected` after waking
        for event in self._state.receive_eof(exc):
            if isinstance(event, H1Failure):
                self._fail(event)
        self._on_lost(self)
        closed = self._closed_waiter
        if closed is not None and not closed.done():
            closed.set_result(None)

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
        self._state.active.pause_reading()
        if self.transport is not None:
            with contextlib.suppress(*_PAUSE_ERRORS):  # a transport without flow control: nothing to pause
                self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        # Called on every read below the low-water mark, so the common case must return at once.
        if not self._reading_paused:
            return
        self._reading_paused = False
        if resume_parser:
            events = self._state.receive_buffered()
            if events:
                self._act(events)
        if not self._reading_paused and self.transport is not None:
            with contextlib.suppress(*_PAUSE_ERRORS):
                self.transport.resume_reading()
            if self._timer_parked:
                self._timer_parked = False
                self._arm(self._timeout)

    # Acting on the protocol's events

    def _act(self, events: Sequence[Event]) -> None:
        for event in events:
            if event is RESPONSE_HEAD:
                head = self._head
                self._head = None
                if head is not None and not head.done():
                    head.set_result(None)
            elif event is OUT_OF_STEP:
                if self.transport is not None:
                    self.transport.close()
                return
            elif isinstance(event, H1Failure):
                self._fail(event)
                return
            # InformationalResponse and EndOfMessage need nothing here: the state has recorded them.

    def _fail(self, failure: H1Failure) -> None:
        """End the exchange with `failure`: the head waiter or the body reader raises it."""
        self._cancel_timer()
        if self._state.fail(failure):
            head = self._head
            self._head = None
            if head is not None and not head.done():
                head.set_exception(failure)
        self.abort()

    # Timer: one handle that outlives exchanges, re-armed lazily from the time of the last received byte. Creating
    # and cancelling a timer per exchange is a measurable share of a small request's cost; a handle that fires
    # early just re-arms for the current deadline, one that fires between exchanges finds nothing to do.

    def _arm(self, timeout: float) -> None:
        if self._state.done or not self.connected:
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
        if not self._timing or self._state.done or not self.connected:
            return
        if self._reading_paused:
            self._timer_parked = True  # the reader is slow, not the upstream: restart on resume
            return
        deadline = self._last_rx + self._timeout
        if self._loop.time() < deadline:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._fail(self._state.timeout_failure(self._timeout))

    # The exchange, driven by proxy.upstream.transport

    def _start(self, head_only: bool, close: bool) -> asyncio.Future[None]:  # positional: a hot path
        self._state.start(head_only, close)
        self._timing = False
        fut = self._loop.create_future()
        self._head = fut
        return fut

    async def exchange(
        self, head: bytes, body: bytes, *, head_only: bool, close: bool, read_timeout: float
    ) -> tuple[ResponseMessage, BodyReader]:
        """Write head and body in one go, then wait for the final response head."""
        fut = self._start(head_only, close)
        transport = self.transport
        if transport is None or transport.is_closing():
            self._head = None
            self._state.abandon()
            raise H1Failure("reset", "upstream connection closed before the request", sent=False, responded=False)
        self._state.sent = True
        if len(body) <= _COALESCE_LIMIT:
            self.held = self._coalescing.write(transport, head + body if body else head)
        else:
            self._flush_held()
            transport.write(head)
            transport.write(body)
        self._arm(read_timeout)
        try:  # _wait_head inlined: one coroutine fewer per request on the hot path
            await fut
        except BaseException:
            self._drop_head(fut)
            raise
        return self._response()

    async def exchange_stream(
        self,
        head: bytes,
        body: AsyncIterable[bytes],
        *,
        length: int | None,
        head_only: bool,
        close: bool,
        read_timeout: float,
    ) -> tuple[ResponseMessage, BodyReader]:
        """Write the head, stream the body (chunked when `length` is None), then wait for the final head."""
        fut = self._start(head_only, close)
        try:
            await self._send_stream(head, body, length, read_timeout)
        except BaseException:
            self._drop_head(fut)
            raise
        self._state.request_written()
        self._arm(read_timeout)
        return await self._wait_head(fut)

    async def _send_stream(
        self, head: bytes, body: AsyncIterable[bytes], length: int | None, read_timeout: float
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise H1Failure("reset", "upstream connection closed before the request", sent=False, responded=False)
        state = self._state
        state.sent = True
        self._flush_held()
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
                    responded=state.rx,
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
                responded=state.rx,
            )

    async def _drain(self, stall: float) -> None:
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        try:
            async with asyncio.timeout(stall):
                await waiter
        except TimeoutError:
            raise H1Failure(
                "timeout", f"upstream read none of the request body for {stall:g}s", sent=True, responded=self._state.rx
            ) from None
        finally:
            self._drain_waiter = None

    def _response(self) -> tuple[ResponseMessage, BodyReader]:  # the final head and its body reader
        state = self._state
        msg, payload = state.msg, state.payload
        assert msg is not None  # set together with the future's result
        assert payload is not None
        return msg, payload

    async def _wait_head(self, fut: asyncio.Future[None]) -> tuple[ResponseMessage, BodyReader]:
        try:
            await fut
        except BaseException:
            self._drop_head(fut)
            raise
        return self._response()

    def _drop_head(self, fut: asyncio.Future[None]) -> None:
        """The exchange is abandoned (failure or cancellation): discard the connection."""
        if self._head is fut:
            self._head = None
        if fut.done() and not fut.cancelled():
            fut.exception()  # mark retrieved: the caller raises its own error
        else:
            fut.cancel()
        self._state.abandon()
        self._cancel_timer()
        self.abort()

    def finish(self) -> bool:
        """The caller is done with the response. True when the connection can carry another request."""
        self._timing = False  # a timer left armed fires once, idle, and is not renewed
        reusable = self._state.finish()
        if reusable and self.connected and not self._reading_paused:
            return True
        self.close()
        return False

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self._flush_held()
            transport.close()

    def _flush_held(self) -> None:
        """Send a request held by the loop's coalescer now: called before any other write or a close."""
        if self.held:
            self._coalescing.release(self)

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
