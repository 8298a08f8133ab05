"""The proxy listener's aiohttp server layer: the low-level server, its per-connection protocol and the protections
aiohttp lacks (head deadline against slowloris, connection cap, parser limits).

aiohttp's `RequestHandler` already enforces line length, header field size and header count (answering 400) and
closes idle keep-alive connections. What it lacks is a deadline for a request head that trickles in byte by byte,
and a cap on concurrent connections; `GuardedRequestHandler` adds both. `ProxyServer` builds one per connection
with the limits of the config snapshot current at accept time, so a reload applies to new connections.
The total header size (limits.max_header_size) is checked by the request handler on the parsed head.
Every response, the parser's refusals included, passes `record_access` once written (from `finish_response`, or the
fast listener's whole responses that skip it): there the access log (`proxy.access`), when one is on, gets its line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EmptyStreamReader, StreamReader
from aiohttp.web_protocol import ERROR, RequestHandler, _ErrInfo

from proxy.clock import duration_clock
from proxy.conn_guard import ConnectionCounter, ConnectionGuard
from proxy.exchange import ARRIVED_KEY, EXCHANGE_KEY
from proxy.headers import new_request_id
from proxy.metrics import Metrics
from proxy.responses import error_response
from proxy.state import RuntimeState

log = logging.getLogger("strangler.proxy")


class GuardedRequestHandler(RequestHandler):
    """aiohttp's RequestHandler under strangler's connection cap and head deadline (`proxy.conn_guard`), parsing one
    request at a time, answering refusals in strangler's shape."""

    __slots__ = (
        "_answered",
        "_client_eof",
        "_close_after_response",
        "_guard",
        "_last_body",
        "_metrics",
        "_state",
        "remote",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        connections: ConnectionCounter,
        header_timeout: float,
        max_connections: int,
        state: RuntimeState | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._state = state
        self._metrics = connections.metrics
        self._guard = ConnectionGuard(self, self._loop, connections, max_connections, header_timeout)
        self.remote: str | None = None  # peer_address(peername), once the connection is made
        self._close_after_response = False
        self._client_eof = False
        self._last_body: StreamReader | None = None  # the body stream of the last request parsed
        self._answered = 0  # responses written (finish_response): fewer than requests parsed while one is pending
        # Replaces the parser aiohttp made (`request_parser` says how it differs).
        self._parser = request_parser(
            self, self._loop, self._read_bufsize, self.max_line_size, self.max_field_size, self.max_headers
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.remote = peer_address(self.peername)
        self._guard.admit()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        starts_head = self._guard.head_starts()
        count = self._request_count
        queued = len(self._messages)
        self._feed(data)
        if len(self._messages) > queued:  # whether its handler runs yet or not, as the fast listener does
            self._fail_unfinished_body()
        self._guard.after_parse(starts_head, count)

    def _feed(self, data: bytes) -> None:
        """Parse `data`, then the rest of the read one request per call: the parser stops after each complete
        request, also one whose body `data` completed, keeping the rest as its tail. Stops when a call parses no
        new request, after a malformed one (nothing after it is parsed), or when aiohttp's queue is full (it parses
        the rest through `data_received(b"")` once the queue drains). The queue's length is the test, not whether
        reading is paused: aiohttp's resume re-parses while still marked paused, and stopping on that flag left
        the rest of a long pipeline unparsed with no more bytes coming to parse it."""
        self._parse(data)
        while (
            not self._upgraded
            and len(self._messages) < self._max_msg_queue_size
            and not self._force_close
            and not (self._messages and isinstance(self._messages[-1][0], _ErrInfo))
        ):
            count = self._request_count
            self._parse(b"")
            if self._request_count == count:
                return

    def _parse(self, data: bytes) -> None:
        count = self._request_count
        super().data_received(data)
        if self._request_count != count and self._messages:
            message, body = self._messages[-1]
            if not isinstance(message, _ErrInfo):
                self._last_body = body

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request its parser refused or a handler failure, in strangler's shape
        (`parser_refusal`)."""
        return parser_refusal(request, self._metrics, status, exc, message)

    def skip_lingering(self) -> None:
        """Close the connection right after the current response instead of draining the unread body first.

        aiohttp drains an unread request body for up to lingering_time (10 s) so that a client still uploading gets
        to read the response; a client whose body stalled past limits.body_timeout sends nothing more, so draining
        would only hold the connection open.
        """
        self._close_after_response = True

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self._answered += 1
        record_access(self._state, request, resp)
        if (
            self._close_after_response
            or closes_unread(request, resp)
            or (self._client_eof and not self._messages)  # the client half-closed: that was its last answer
        ):
            # The response is written (transport.close() flushes it first); no drain, no keep-alive.
            self._close_after_response = False
            self.force_close()
        return result

    def _fail_unfinished_body(self) -> None:
        """Fail the running request's body stream when the parser just rejected bytes inside it.

        On a framing error inside a chunked body (bad chunk size, missing CRLF) aiohttp's C parser queues a 400
        for after the current request but never fails the body stream that request's handler is reading, so the
        handler (and the half-sent upstream request) would wait until the client leaves. Failing the stream ends
        the exchange now: the upstream connection is dropped without a final chunk and the client gets a 400.
        """
        message = self._messages[-1][0]
        if isinstance(message, _ErrInfo):
            fail_unfinished_body(self._last_body, f"malformed request body: {message.message}")

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's is bool | None; aiohttp's says None
        """The client half-closed its side: every request it sent whole is answered, then the connection closes;
        with nothing to answer it closes now; a body that had not ended fails (as `proxy.h1_connection` does)."""
        if self._upgraded:
            return False  # a websocket's client is gone: close, which ends the session with the upstream
        self._client_eof = True
        fail_unfinished_body(self._last_body, "the client closed its side before the body ended")
        return self._request_count > self._answered


# aiohttp's statuses for what its parser refuses, named like the handler's own refusals.
_PARSER_ERRORS = {
    400: "bad_request",
    413: "request_too_large",
    431: "headers_too_large",
    500: "internal_error",
    504: "timeout",
}


def request_parser(
    protocol: BaseProtocol,
    loop: asyncio.AbstractEventLoop,
    read_bufsize: int,
    max_line_size: int,
    max_field_size: int,
    max_headers: int,
) -> HttpRequestParser:
    """The llhttp request parser both listeners use, with the limits given.

    It stops after each complete request (max_msg_queue_size=1) and keeps the rest of the read: aiohttp's parser
    replaces every request parsed from one read with the 400 when a later one in that read is malformed, so the
    listeners parse one request per call and a bad request replaces only itself. It never decodes a body: a request
    body with a Content-Encoding is forwarded as the bytes the client sent (aiohttp's default would pass on the
    decoded bytes under the client's Content-Encoding and Content-Length).
    """
    return HttpRequestParser(
        protocol,
        loop,
        read_bufsize,
        max_line_size=max_line_size,
        max_field_size=max_field_size,
        max_headers=max_headers,
        payload_exception=web.RequestPayloadError,
        max_msg_queue_size=1,
        auto_decompress=False,
    )


def closes_unread(request: web.BaseRequest, resp: web.StreamResponse) -> bool:
    """Whether a written response closes the connection while the request body is unread (413, 408, 501, a broken
    chunk): both listeners then close at once instead of draining, for up to lingering_time, bytes nobody will use."""
    return not resp.keep_alive and not request.content.is_eof()


def fail_unfinished_body(body: StreamReader | None, reason: str) -> None:
    """Fail the body stream of the last request parsed when it has not ended and never will (the parser refused
    bytes inside it, or the client half-closed), whether its handler runs yet or not: the handler reading it
    answers now instead of waiting for limits.body_timeout."""
    if body is not None and not body.is_eof():
        body.set_exception(web.RequestPayloadError(reason))


def parser_refusal(
    request: web.BaseRequest,
    metrics: Metrics,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """The answer to a request the parser refused (400) or a handler failure (500, 504), for both listeners: a JSON
    error in strangler's shape with an X-Request-Id, counted, the connection closed. Refused requests are expected
    on a public port, so they are logged at debug level, not with a traceback each."""
    if request.writer.output_size > 0:  # part of a response went out: nothing can be added, only closed
        raise ConnectionError("a response was already started; the error cannot be sent")
    if status >= 500:
        log.error("request from %s failed: %s", request.remote, message or exc, exc_info=exc)
    else:
        log.debug("request from %s refused (%d): %s", request.remote, status, message or exc)
    error = _PARSER_ERRORS.get(status, "bad_request")
    metrics.rejected.inc((error,))
    resp = error_response(status, error, None, new_request_id())
    resp.force_close()
    return resp


def record_access(state: RuntimeState | None, request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """Give the access log, when one is on, the line of a response that is written. Every way a response ends, on
    either listener, comes here once."""
    if state is None or (access := state.access_log) is None:
        return
    parsed = type(request) is not UnparsedRequest
    try:
        access.record(request, resp, request.get(EXCHANGE_KEY), mirroring=bool(state.hooks), parsed=parsed)
    except Exception:  # the client has its answer: a line that cannot be built must not cost it more
        log.exception("access log: a line could not be built; the request was served")


class UnsupportedVersionRequest(web.BaseRequest):
    """A request whose line named a version other than HTTP/1.0 or 1.1 (HTTP/0.9, or HTTP/2.0 on an HTTP/1
    connection, which aiohttp's parser lets through). The handler answers it 505 without contacting any back end;
    its version is set to 1.1 so that answer goes out on an HTTP/1.1 status line (aiohttp echoes the request's)."""


class UnparsedRequest(web.BaseRequest):
    """aiohttp's stand-in for a request its parser refused (method GET, path /, answered by `handle_error`): the
    access log writes its request line as unknown rather than that stand-in's."""


def peer_address(peername: Any) -> str | None:
    """A connection's client address as aiohttp's `BaseRequest.remote` computes it from the peername. Each listener
    computes it once per connection (`remote`), and `prefill_request` hands it to every request on it."""
    if peername is None:
        return None
    if isinstance(peername, (list, tuple)):
        return str(peername[0])
    return str(peername)


class _Peer(Protocol):
    remote: str | None  # `peer_address` of the connection's peername, set when it is made


def prefill_request(
    request: web.BaseRequest, message: RawRequestMessage, payload: StreamReader, remote: str | None
) -> None:
    """Set the request properties the proxy reads on every request to what aiohttp would compute for them.

    Each is an aiohttp `reify`: its first read runs a Python function, eight of them per request (about 3% of a
    pass-through request's CPU under perf, 0.6% of its instructions under callgrind). aiohttp fills the same cache
    itself (`_cache`: the URL, host and scheme of an absolute-form target); the values here are those its functions
    return, read from the same message, and tests/proxy/test_aiohttp_contract.py checks them against aiohttp's own
    on a fresh request."""
    request._cache.update(
        headers=message.headers,
        raw_headers=message.raw_headers,
        method=message.method,
        version=message.version,
        raw_path=message.path,
        keep_alive=not message.should_close,
        body_exists=type(payload) is not EmptyStreamReader,
        remote=remote,
    )


_SPOKEN = (HttpVersion10, HttpVersion11)
_ERROR = ERROR._replace(version=HttpVersion11)


def _is_websocket(message: RawRequestMessage) -> bool:
    """Whether an upgrade request asks for the websocket protocol (the only one aiohttp switches to)."""
    upgrade = message.headers.get("Upgrade", "")
    return upgrade.isascii() and upgrade.strip().lower() == "websocket"


class ProxyServer(web.Server):
    """aiohttp's low-level server, making a `GuardedRequestHandler` (or the `protocol` given: the fast listener's
    `proxy.listener.ProtocolListener`) per connection from the current limits."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        state: RuntimeState,
        protocol: Callable[..., asyncio.Protocol] = GuardedRequestHandler,
    ) -> None:
        super().__init__(handler, handler_cancellation=False, request_factory=self._make_proxy_request)
        self._state = state
        self._protocol = protocol
        self.connection_count = ConnectionCounter(state.metrics)

    def _make_proxy_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        kind = web.BaseRequest
        if message is ERROR:  # aiohttp's stand-in for a request its parser refused: answer it on HTTP/1.1
            kind, message = UnparsedRequest, _ERROR
        elif message.upgrade and not _is_websocket(message):
            # An Upgrade this proxy never switches (h2c, say): llhttp stops at the end of its head and aiohttp drops
            # the rest of that read, so a pipelined request behind it would never be answered. Close after it.
            message = message._replace(should_close=True)
        if message.version not in _SPOKEN:
            kind, message = UnsupportedVersionRequest, message._replace(version=HttpVersion11, should_close=True)
        request = kind(message, payload, protocol, writer, task, self._loop)
        prefill_request(request, message, payload, cast(_Peer, protocol).remote)
        if self._state.access_log is not None:
            request[ARRIVED_KEY] = duration_clock()
        return request

    def __call__(self) -> RequestHandler:
        limits = self._state.snapshot.config.limits
        # aiohttp types the per-connection factory as its RequestHandler; the fast listener is a protocol of its own
        # with the surface the server and runner call (connection_made/lost, close, shutdown).
        return self._protocol(  # type: ignore[return-value]
            self,
            loop=self._loop,
            connections=self.connection_count,
            header_timeout=limits.header_timeout,
            max_connections=limits.max_connections,
            state=self._state,
            keepalive_timeout=limits.keepalive_timeout,
            max_line_size=limits.max_line_size,
            max_field_size=limits.max_line_size,
            max_headers=limits.max_headers,
            access_log=None,
        )
