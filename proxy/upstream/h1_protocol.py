"""The HTTP/1.1 client exchange without I/O: bytes in, events out (sans-IO, as h11 and mitmproxy's HTTP/1 layer).

`proxy.upstream._h1` owns the socket, the timer and the futures and acts on these events; everything decided about a
response is decided here: which head is the final one, when the body is complete, what a broken or malformed
response is called, whether the connection may carry another request. tests/proxy/upstream/test_h1_protocol.py drives it
by feeding bytes, with no socket and no event loop running.

Framing (Content-Length, chunked, until close, none for HEAD, 1xx, 204, 304) and the size limits are llhttp's,
configured here. Body bytes go into the `StreamReader` the parser makes, which calls `flow.pause_reading()` when full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, cast

from aiohttp import hdrs
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParser
from aiohttp.http_writer import HttpVersion
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy

from proxy.errors import ErrorKind
from proxy.upstream.whole import MAX_FIELD_SIZE, MAX_HEADERS, MAX_LINE_SIZE, leading_response_end, parse_whole

# StreamReader low-water mark; the socket is paused when twice this much body is buffered unread.
READ_LIMIT = 2**16
# What llhttp (and aiohttp's pure-Python fallback parser) raise for a malformed or truncated message.
_PARSE_ERRORS = (HttpProcessingError, ValueError)


class ResponseMessage(Protocol):
    """A parsed response head, as read here. Declared by what is read, not as aiohttp's `RawResponseMessage`: its C
    parser returns a type of its own, not the NamedTuple the stubs name, and a compiled module (`proxy.native`)
    checks declared types at run time where the interpreter does not."""

    @property
    def code(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def version(self) -> HttpVersion: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]: ...
    @property
    def should_close(self) -> bool: ...


class BodyReader(Protocol):
    """A response body as read here: aiohttp's `StreamReader`, or a `proxy.upstream.whole.WholeResponse` that
    arrived whole with its head."""

    def is_eof(self) -> bool: ...
    def at_eof(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def set_exception(self, exc: BaseException) -> None: ...
    def read_nowait(self) -> bytes: ...
    async def readany(self) -> bytes: ...


class H1Failure(Exception):
    """A failed exchange. kind: "reset" (closed or malformed), "timeout", or "error" (a request-side fault)."""

    def __init__(self, kind: ErrorKind, message: str, *, sent: bool, responded: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.sent = sent
        self.responded = responded


class ResponseHead:
    """The final response head arrived: `H1State.msg`, and `H1State.payload` to read its body from (possibly empty,
    possibly complete already). The event itself carries nothing, so the hot path allocates no event objects."""

    __slots__ = ()


class InformationalResponse(NamedTuple):
    """An interim 1xx head (100 Continue, 103 Early Hints): skipped, the final head follows."""

    code: int


class EndOfMessage:
    """The final response's body is complete."""

    __slots__ = ()


class OutOfStep:
    """Bytes that belong to no exchange (a second final response, data after the end, data between exchanges):
    the response in hand stands, but the connection must close."""

    __slots__ = ()


RESPONSE_HEAD = ResponseHead()
END_OF_MESSAGE = EndOfMessage()
OUT_OF_STEP = OutOfStep()
# H1Failure is the error event: the exchange ends with it (see H1State.fail).
Event = ResponseHead | InformationalResponse | EndOfMessage | OutOfStep | H1Failure
_NONE: tuple[Event, ...] = ()
_OUT_OF_STEP_ONLY: tuple[Event, ...] = (OUT_OF_STEP,)
_HEAD: tuple[Event, ...] = (RESPONSE_HEAD,)
_END: tuple[Event, ...] = (END_OF_MESSAGE,)
_HEAD_AND_END: tuple[Event, ...] = (RESPONSE_HEAD, END_OF_MESSAGE)
_END_OUT_OF_STEP: tuple[Event, ...] = (END_OF_MESSAGE, OUT_OF_STEP)
_INTERIM: dict[int, InformationalResponse] = {}


def new_parser(flow: object, loop: object, *, with_body: bool) -> HttpResponseParser:
    """An llhttp response parser with this module's limits.

    `flow` gets pause_reading()/resume_reading(resume_parser=...) and is asked `connected` by the body readers;
    `loop` is only used by a body reader that has to wait for data.
    """
    return HttpResponseParser(
        cast(Any, flow),
        cast(Any, loop),
        READ_LIMIT,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        response_with_body=with_body,
        read_until_eof=True,
        auto_decompress=False,
    )


class H1State:
    """One connection's exchange state: one request at a time, no pipelining.

    Drive it with start() per request, receive_data() per packet, receive_eof() when the socket ends, and
    finish() when the caller is done with the response; each returns what happened, nothing here does I/O.
    An H1Failure event ends the exchange: pass it to fail(), which says whether the head waiter raises it.
    """

    __slots__ = (
        "_flow",
        "_head_parser",
        "_loop",
        "_parser",
        "active",
        "awaiting_head",
        "busy",
        "done",
        "msg",
        "payload",
        "rx",
        "seen",
        "sent",
        "should_close",
    )

    def __init__(self, flow: object, loop: object) -> None:
        self._flow = flow
        self._loop = loop
        self._parser = new_parser(flow, loop, with_body=True)
        self._head_parser: HttpResponseParser | None = None
        self.active = self._parser  # the parser of the current exchange (HEAD needs one that expects no body)
        self.busy = False  # an exchange is under way
        self.done = False  # its final response is complete
        self.awaiting_head = False  # its final head has not arrived (and the exchange has not failed)
        self.should_close = False  # the connection must not carry another request
        self.sent = False  # a request byte was written (set by the I/O side)
        self.rx = False  # a response byte arrived
        self.msg: ResponseMessage | None = None
        self.payload: BodyReader | None = None
        self.seen = b""  # the exchange's bytes read while its final head is still incomplete (rare: a split head)

    def start(self, head_only: bool, close: bool) -> None:
        """A new exchange: `head_only` for a HEAD request, `close` when the request asks to close."""
        if head_only:
            if self._head_parser is None:
                self._head_parser = new_parser(self._flow, self._loop, with_body=False)
            self.active = self._head_parser
        else:
            self.active = self._parser
        self.busy = True
        self.done = False
        self.awaiting_head = True
        self.should_close = close
        self.sent = False
        self.rx = False
        self.msg = None
        self.payload = None
        self.seen = b""

    def request_written(self) -> None:
        """A streamed request body is fully written. If the final head came before that, the upstream answered an
        incomplete request and the stream position is unknowable: the connection is not reused."""
        if not self.awaiting_head:
            self.should_close = True

    def receive_data(self, data: bytes) -> Sequence[Event]:
        """Bytes from the socket: the events they complete (body bytes themselves go into the payload reader)."""
        if not self.busy or self.done:
            # Bytes outside an exchange (a 408 on an idle connection, trailing garbage): never reuse this one.
            self.should_close = True
            return _OUT_OF_STEP_ONLY
        if not self.rx and self.active is self._parser:
            # The exchange's first read: a small response usually comes whole in it (proxy.upstream.whole).
            whole = parse_whole(data)
            if whole is not None:
                self.rx = True
                self.awaiting_head = False
                self.msg = whole
                self.payload = whole
                if whole.should_close:
                    self.should_close = True
                self.done = True
                return _HEAD_AND_END
        self.rx = True
        body = self.payload  # a body under way (its head came in an earlier read), and how much of it was read
        read = cast(Any, body).total_bytes if body is not None else 0
        try:
            # Read through Any, typed by what is read: the C parser's types are not the stubs' (see ResponseMessage).
            parser: Any = self.active
            fed = parser.feed_data(data)
            messages: Sequence[tuple[ResponseMessage, StreamReader]] = fed[0]
            upgraded: bool = fed[1]
        except _PARSE_ERRORS as err:
            if body is not None and body.is_eof():  # llhttp refused only bytes after the body's end: no exchange's
                self.should_close = self.done = True
                return _END_OUT_OF_STEP
            leading = self._leading_response(self.seen + data) if self.awaiting_head else None
            if leading is not None:
                return leading
            return (H1Failure("reset", f"malformed response from upstream: {err}", sent=True, responded=True),)
        if self.awaiting_head and not messages:
            self.seen += data
        head = False
        if messages:
            if len(messages) != 1 or not self.awaiting_head or messages[0][0].code < 200:
                return self._receive_heads(messages, upgraded)
            # The common case, without building a list: one final head.
            msg, reader = messages[0]
            self.awaiting_head = False
            self.msg = msg
            self.payload = reader
            if msg.should_close:
                self.should_close = True
            head = True
        if upgraded:
            self.should_close = True
        payload = self.payload
        if payload is not None and payload.is_eof():
            self.done = True
            if self._bytes_after(payload, data, head, read):
                self.should_close = True  # bytes after the response in its read (part of a head): of no exchange
            return _HEAD_AND_END if head else _END
        return _HEAD if head else _NONE

    def _bytes_after(self, body: BodyReader, data: bytes, head: bool, read: int) -> bool:
        """Whether `data`, the read that ended the response, holds bytes after it that llhttp kept rather than refused
        (the start of another head). With the head: past the head and its Content-Length body. Without: more bytes
        than went into the body, when no chunk framing is among them. (Read-until-close bodies end at EOF.)"""
        if head:
            return leading_response_end(self.seen + data, self.active is self._parser) is not None
        msg = self.msg
        chunked = msg is not None and "chunked" in msg.headers.get(hdrs.TRANSFER_ENCODING, "").lower()
        return not chunked and cast(Any, body).total_bytes - read < len(data)

    def _leading_response(self, data: bytes) -> Sequence[Event] | None:
        """The exchange's bytes, refused by llhttp only after a whole final response at their start: that response,
        and the connection closed after it (as `OutOfStep`); else None (`whole.leading_response_end`)."""
        with_body = self.active is self._parser
        cut = leading_response_end(data, with_body)
        if cut is None:
            return None
        parser = new_parser(self._flow, self._loop, with_body=with_body)
        try:
            messages: Sequence[tuple[ResponseMessage, StreamReader]] = cast(Any, parser).feed_data(data[:cut])[0]
        except _PARSE_ERRORS:
            return None
        if len(messages) != 1 or messages[0][0].code < 200 or not messages[0][1].is_eof():
            return None
        self.active = parser  # (the refused parser is not used again: the connection closes)
        self.msg, self.payload = messages[0]
        self.awaiting_head = False
        self.should_close = self.done = True
        return _HEAD_AND_END

    def _receive_heads(self, messages: Sequence[tuple[ResponseMessage, StreamReader]], upgraded: bool) -> list[Event]:
        """receive_data for interim heads, more than one head, or a head not awaited."""
        events: list[Event] = []
        for msg, reader in messages:
            code = msg.code
            if code < 200:
                if code == 101:
                    events.append(
                        H1Failure("reset", "upstream switched protocols unasked (101)", sent=True, responded=True)
                    )
                    return events
                interim = _INTERIM.get(code)
                if interim is None:  # three-digit codes below 200: the cache stays small
                    interim = _INTERIM[code] = InformationalResponse(code)
                events.append(interim)
                continue
            if not self.awaiting_head:
                # A second final response to one request: the stream is out of step.
                self.should_close = True
                events.append(OUT_OF_STEP)
                return events
            self.awaiting_head = False
            self.msg = msg
            self.payload = reader
            if msg.should_close:
                self.should_close = True
            events.append(RESPONSE_HEAD)
        if upgraded:
            self.should_close = True
        payload = self.payload
        if payload is not None and not self.done and payload.is_eof():
            self.done = True
            events.append(END_OF_MESSAGE)
        return events

    def receive_buffered(self) -> Sequence[Event]:
        """Parse what the parser kept in its tail when reading paused (the reader drained below its low mark)."""
        if not self.busy or self.done:
            return _NONE
        return self.receive_data(b"")  # bytes did arrive, so marking `rx` again changes nothing

    def receive_eof(self, exc: BaseException | None) -> Sequence[Event]:
        """The socket ended (`exc` when it broke): a read-until-close body completes, anything else fails."""
        self.should_close = True
        if self.awaiting_head:
            detail = f": {exc}" if exc is not None else ""
            message = f"upstream closed the connection before the response head{detail}"
            return (H1Failure("reset", message, sent=self.sent, responded=self.rx),)
        payload = self.payload
        if payload is None or self.done or payload.exception() is not None:
            return _NONE
        if exc is None:
            try:
                self.active.feed_eof()
            except _PARSE_ERRORS as err:
                message = f"upstream closed the connection mid-body ({err})"
            else:
                if payload.is_eof():
                    self.done = True
                    return (END_OF_MESSAGE,)
                message = "upstream closed the connection mid-body"
        else:
            message = f"upstream connection broke mid-body: {exc}"
        return (H1Failure("reset", message, sent=True, responded=True),)

    def timeout_failure(self, timeout: float) -> H1Failure:
        """The failure for `timeout` seconds without a byte, named for what was awaited."""
        if self.awaiting_head:
            message = f"no response head from upstream within {timeout:g}s"
        else:
            message = f"upstream sent no body bytes for {timeout:g}s"
        return H1Failure("timeout", message, sent=True, responded=self.rx)

    def fail(self, failure: H1Failure) -> bool:
        """End the exchange with `failure`. True when the head waiter must raise it; otherwise the body reader
        raises it (set here), or the response already ended and it is dropped."""
        self.should_close = True
        if self.awaiting_head:
            self.awaiting_head = False
            return True
        payload = self.payload
        if payload is not None and not self.done and payload.exception() is None:
            payload.set_exception(failure)
        return False

    def abandon(self) -> None:
        """The caller gave up on the exchange (failure or cancellation): this connection is not reused."""
        self.awaiting_head = False
        self.busy = False
        self.should_close = True

    def finish(self) -> bool:
        """The caller is done with the response. True when the protocol allows another request on the connection:
        the response was complete, read to its end, and neither side asked to close."""
        payload = self.payload
        self.payload = None
        self.msg = None
        self.busy = False
        return not self.should_close and self.done and payload is not None and payload.at_eof()
