"""One HTTP/1 client connection at the protocol level, for the fast listener (`proxy.listener.ProtocolListener`).

`H1Connection` is the reading half: an asyncio protocol (aiohttp's `BaseProtocol`, for the write flow control its
`StreamWriter` waits on) that parses with llhttp through aiohttp's C `HttpRequestParser`, one request per parser
call, into a queue; holds the connection cap and head deadline (`proxy.conn_guard`), keep-alive, upgrades (a
websocket takes the connection over through `set_parser`, as aiohttp's `WebSocketResponse` expects) and closing.
The subclass serves the queue (`_serve_connection`).

Why aiohttp's parser and not httptools: both are llhttp, but aiohttp's is already a dependency and is the one the
aiohttp listener (`listen.server: aiohttp`) uses, so the two listeners refuse exactly the same bytes (smuggling,
framing, line and header limits) and hand over each body as aiohttp's `StreamReader` with its flow control, which
`proxy.request_body` and `proxy.forwarding` read. httptools would add a dependency, a second set of refusals to keep
equal, and body streams written again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.tcp_helpers import tcp_keepalive
from aiohttp.web_protocol import _ErrInfo

from proxy.coalesce import coalescer
from proxy.conn_guard import ConnectionCounter, ConnectionGuard
from proxy.server import fail_unfinished_body, peer_address, request_parser

QUEUE_LIMIT = 32  # parsed requests held before the transport is paused (aiohttp's MAX_MSG_QUEUE_SIZE)
QUEUE_RESUME = QUEUE_LIMIT // 2
Message = tuple[RawRequestMessage | _ErrInfo, StreamReader]


class H1Connection(BaseProtocol):
    """The reading half of a client connection: parsing, the request queue, timers, upgrades, closing."""

    __slots__ = (
        "_client_eof",
        "_close",
        "_coalescing",
        "_current_request",
        "_data_received_cb",
        "_force_close",
        "_guard",
        "_keepalive",
        "_keepalive_handle",
        "_keepalive_timeout",
        "_last_body",
        "_manager",
        "_message_tail",
        "_messages",
        "_next_keepalive_close",
        "_payload_parser",
        "_read_bufsize",
        "_request_count",
        "_request_in_progress",
        "_task_handler",
        "_timeout_ceil_threshold",
        "_waiter",
        "held",
        "max_field_size",
        "max_headers",
        "max_line_size",
        "peername",
        "remote",
        "sockname",
        "ssl_context",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        connections: ConnectionCounter,
        header_timeout: float,
        max_connections: int,
        keepalive_timeout: float = 3630.0,
        max_line_size: int = 8190,
        max_field_size: int = 8190,
        max_headers: int = 128,
        read_bufsize: int = 2**16,
        **_aiohttp_options: Any,  # access_log and the like: aiohttp's listener options this one has no use for
    ) -> None:
        parser = request_parser(self, loop, read_bufsize, max_line_size, max_field_size, max_headers)
        super().__init__(loop, parser)
        self._manager: web.Server | None = manager
        self._guard = ConnectionGuard(self, loop, connections, max_connections, header_timeout)
        self._keepalive_timeout = keepalive_timeout
        self._read_bufsize = read_bufsize
        self._timeout_ceil_threshold = 5.0  # read by aiohttp's WebSocketResponse
        self.max_line_size = max_line_size
        self.max_field_size = max_field_size
        self.max_headers = max_headers
        self.ssl_context: Any = None  # these three are read by every aiohttp BaseRequest
        self.peername: Any = None
        self.remote: str | None = None  # peer_address(peername), for every request on the connection
        self.sockname: Any = None
        self._messages: deque[Message] = deque()
        self._message_tail = b""
        self._payload_parser: Any = None  # a websocket's frame reader once the connection is upgraded
        self._data_received_cb: Callable[[], None] | None = None
        self._request_count = 0
        self._request_in_progress = False
        self._current_request: web.BaseRequest | None = None
        self._task_handler: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._keepalive = True
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._next_keepalive_close = 0.0
        self._close = False
        self._force_close = False
        self._last_body: StreamReader | None = None  # the body stream of the last request parsed
        self._client_eof = False  # the client half-closed: answer what it sent, then close
        self._coalescing = coalescer(loop)  # whole responses go out at the end of the loop iteration (proxy.coalesce)
        self.held = 0  # the coalescer's round holding a response: flush it before another write or a close

    def _serve_connection(self) -> Coroutine[Any, Any, None]:
        """The coroutine serving the queue until the connection closes (the subclass's)."""
        raise NotImplementedError

    # Connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        tcp_keepalive(self.transport)
        self.ssl_context = transport.get_extra_info("sslcontext")
        self.peername = transport.get_extra_info("peername")
        self.remote = peer_address(self.peername)
        self.sockname = transport.get_extra_info("sockname")
        assert self._manager is not None
        self._manager.connection_made(self, self.transport)  # type: ignore[arg-type]  # tracked for shutdown
        if not self._guard.admit():
            return
        if self._keepalive_timeout > 0:  # a connection that never sends a request is closed like an idle one
            self._schedule_keepalive()

    def connection_lost(self, exc: BaseException | None) -> None:
        manager = self._manager
        if manager is None:
            return
        manager.connection_lost(self, exc)  # type: ignore[arg-type]
        self._manager = None
        self._guard.release()
        self.force_close()
        super().connection_lost(exc)
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        if self._current_request is not None:
            self._current_request._cancel(exc if exc is not None else ConnectionResetError("Connection lost"))
        for _, payload in self._messages:  # queued requests nobody will serve: their bodies end now
            payload.feed_eof()
        if self._payload_parser is not None:
            self._payload_parser.feed_eof()
            self._payload_parser = None
        self._parser = None

    def eof_received(self) -> bool:
        """The client half-closed its side: it sends nothing more but may still read. Every request it sent whole
        is answered, then the connection closes (as nginx does); with nothing to answer it closes now. A body that
        had not ended never will: its stream fails, so the handler answers instead of waiting for body_timeout."""
        self.flush_held()  # False below closes the transport: what it holds goes out first
        if self._upgraded:
            return False  # a websocket's client is gone: close, which ends the session with the upstream
        self._client_eof = True
        fail_unfinished_body(self._last_body, "the client closed its side before the body ended")
        return self._request_in_progress or bool(self._messages)  # True keeps the transport open for the answers

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        if self._upgraded:
            self._upgraded_data(data)
            return
        starts_head = self._guard.head_starts()
        count = self._request_count
        self._feed(data)
        self._guard.after_parse(starts_head, count)

    def _feed(self, data: bytes) -> None:
        """Parse `data` and then the rest of the read, one request per parser call, into the queue; start or wake
        the connection's serving task. Stops after a malformed request (nothing after it is parsed), at an upgrade,
        or when the queue is full (the transport is paused until it drains)."""
        parser = self._parser
        assert parser is not None
        queue = self._messages
        queued = len(queue)
        while True:
            try:
                messages, upgraded, tail = parser.feed_data(data)
            except HttpProcessingError as exc:
                self._request_count += 1
                queue.append((_ErrInfo(status=400, exc=exc, message=exc.message), EMPTY_PAYLOAD))
                # Bytes refused inside the body being read (a bad chunk size, a missing CRLF): fail that stream, so
                # its handler stops waiting for the rest and the half-sent upstream request is dropped.
                fail_unfinished_body(self._last_body, f"malformed request body: {exc.message}")
                break
            for message in messages:
                self._request_count += 1
                queue.append(message)
                self._last_body = message[1]
            if upgraded:
                self._upgraded = True
                self._message_tail = tail
                break
            if not messages and not data:
                break  # (a read that completed a body may hold the next request, so it is followed by one b"")
            if len(queue) >= QUEUE_LIMIT:
                self._pause_reading_for_buffer()
                break
            data = b""
        if len(queue) > queued:
            self._serve_queued()

    def _upgraded_data(self, data: bytes) -> None:
        """Bytes after an upgrade request: a websocket's frames once it took the connection, else held (a declined
        upgrade's tail is parsed again as requests when its answer is written)."""
        if self._payload_parser is not None:
            if data:
                if self._data_received_cb is not None:
                    self._data_received_cb()
                eof, _ = self._payload_parser.feed_data(data)
                if eof:
                    self.close()
        elif data:
            self._message_tail += data
            if not self._buffer_paused and len(self._message_tail) >= self._read_bufsize:
                self._pause_reading_for_buffer()

    def _serve_queued(self) -> None:
        if self._task_handler is None:
            self._task_handler = self._loop.create_task(self._serve_connection())
        else:
            self._wake()

    # What aiohttp's request, response and websocket objects call on their protocol

    def set_parser(self, parser: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        """A websocket takes the connection over: its frame reader gets every byte from now on."""
        assert self._payload_parser is None
        self._payload_parser = parser
        self._data_received_cb = data_received_cb
        if self._message_tail:
            parser.feed_data(self._message_tail)
            self._message_tail = b""
        if self._buffer_paused:
            self._resume_reading_for_buffer()

    def keep_alive(self, val: bool) -> None:
        self._keepalive = val
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None

    def close(self) -> None:
        """Answer what is being served, then close."""
        self._close = True
        self._wake()

    def force_close(self) -> None:
        self._force_close = True
        self._wake()
        if self.transport is not None:
            self.flush_held()
            self.transport.close()
            self.transport = None

    def flush_held(self) -> None:
        """Send a response held by the loop's coalescer now: called before any other write or a close."""
        if self.held:
            self._coalescing.release(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Between requests

    def _declined_upgrade(self) -> None:
        """The upgrade was answered without switching protocols: what followed it is requests again."""
        parser = self._parser
        if parser is None:
            return
        parser.set_upgraded(False)
        self._upgraded = False
        tail, self._message_tail = self._message_tail, b""
        if tail:
            self._feed(tail)
        if self._buffer_paused and len(self._messages) < QUEUE_LIMIT:
            self._resume_reading_for_buffer()

    def _resume_parsing(self) -> None:
        """The queue drained below half: parse what the paused parser holds, then read again if it stayed below."""
        if not self._upgraded:
            self.data_received(b"")
            if len(self._messages) >= QUEUE_LIMIT:
                return
        self._resume_reading_for_buffer()

    def _schedule_keepalive(self) -> None:
        self._next_keepalive_close = close_at = self._loop.time() + self._keepalive_timeout
        self._keepalive_handle = self._loop.call_at(close_at, self._process_keepalive)

    def _process_keepalive(self) -> None:
        """Close a connection idle for keepalive_timeout: no request queued or being served."""
        self._keepalive_handle = None
        if self._force_close or not self._keepalive:
            return
        now = self._loop.time()
        if now < self._next_keepalive_close:  # a request was served since: wait for the later deadline
            self._keepalive_handle = self._loop.call_at(self._next_keepalive_close, self._process_keepalive)
            return
        # Idle: nothing queued or being served, and the serving task (if one was started) waiting for the next
        # request, as aiohttp decides. A task still reading and dropping an answered request's body (`_linger`) is
        # not idle: cutting it would lose what the client pipelined after that body.
        serving_idle = self._task_handler is None or self._waiter is not None
        if serving_idle and not self._request_in_progress and not self._messages:
            self.force_close()
