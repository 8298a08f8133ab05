"""The upstream HTTP/1.1 exchange state machine, driven by feeding bytes: no socket, no event loop, no sleeps."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.upstream.h1_protocol import (
    END_OF_MESSAGE,
    READ_LIMIT,
    BodyReader,
    EndOfMessage,
    Event,
    H1Failure,
    H1State,
    InformationalResponse,
    OutOfStep,
    ResponseHead,
    ResponseMessage,
)
from proxy.upstream.request_head import encode_head
from proxy.upstream.whole import MAX_FIELD_SIZE, MAX_HEADERS

pytestmark = pytest.mark.unit
SOURCE = Path(__file__).resolve().parents[3] / "proxy" / "upstream" / "h1_protocol.py"

# A body reader only touches its loop to wait for data, and these tests never wait.
NO_LOOP = object()


class Flow:
    """The flow-control side the body readers talk to: counts pauses, never blocks."""

    connected = True

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self, resume_parser: bool = True) -> None:
        self.resumed += 1


@dataclass(frozen=True, slots=True)
class Run:
    """What one exchange produced."""

    events: list[Event]
    kinds: list[str]
    state: H1State
    flow: Flow

    @property
    def msg(self) -> ResponseMessage:
        """The one final head of the exchange."""
        assert sum(kind.startswith("head ") for kind in self.kinds) == 1, self.kinds
        assert self.state.msg is not None
        return self.state.msg

    @property
    def payload(self) -> BodyReader:
        """The body reader of the one final head."""
        assert self.msg is not None
        assert self.state.payload is not None
        return self.state.payload

    @property
    def failure(self) -> H1Failure:
        """The one error event."""
        failures = [event for event in self.events if isinstance(event, H1Failure)]
        assert len(failures) == 1, self.kinds
        return failures[0]


def _kinds(events: Sequence[Event], state: H1State) -> list[str]:
    """Events as words; a head as "head <status>" (the state holds the head that event announced)."""
    kinds = []
    for event in events:
        if isinstance(event, InformationalResponse):
            kinds.append(f"informational {event.code}")
        elif isinstance(event, ResponseHead):
            assert state.msg is not None
            kinds.append(f"head {state.msg.code}")
        else:
            kinds.append(type(event).__name__)
    return kinds


def start(*, head_only: bool = False, close: bool = False) -> tuple[H1State, Flow]:
    flow = Flow()
    state = H1State(flow, NO_LOOP)
    state.start(head_only=head_only, close=close)
    state.sent = True  # as the I/O side does once the request is written
    return state, flow


def drive(pieces: Sequence[bytes], *, head_only: bool = False, close: bool = False, eof: bool = False) -> Run:
    """Feed `pieces` one receive_data call each, then the end of the stream when `eof`.

    As on a socket: no empty reads, and nothing more after a failure or bytes out of step (the I/O side closes).
    """
    state, flow = start(head_only=head_only, close=close)
    events: list[Event] = []
    kinds: list[str] = []

    def take(new: Sequence[Event]) -> None:
        events.extend(new)
        kinds.extend(_kinds(new, state))

    for piece in pieces:
        if piece:
            take(state.receive_data(piece))
        if events and isinstance(events[-1], H1Failure | OutOfStep):
            return Run(events, kinds, state, flow)
    if eof:
        take(state.receive_eof(None))
    return Run(events, kinds, state, flow)


def splits(data: bytes) -> list[list[bytes]]:
    """`data` whole, cut in two at every position, and one byte at a time."""
    ways = [[data[:cut], data[cut:]] for cut in range(len(data) + 1)]
    ways.append([data[i : i + 1] for i in range(len(data))])
    return ways


def body_and_reuse(run: Run) -> tuple[bytes, bool]:
    """Read the whole body as the caller would, then ask whether the connection may carry another request."""
    body = run.payload.read_nowait()
    return body, run.state.finish()


# Complete responses, fed split at every position

FIXED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n6;flag\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
INTERIM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
)


@pytest.mark.parametrize(
    ("response", "kinds", "body"),
    [
        (FIXED, ["head 200", "EndOfMessage"], b"hello"),
        (CHUNKED, ["head 200", "EndOfMessage"], b"hello world"),
        (INTERIM, ["informational 100", "informational 103", "head 201", "EndOfMessage"], b"ok"),
    ],
    ids=["content-length", "chunked-extensions-trailers", "1xx-then-final"],
)
def test_framed_response_gives_the_same_events_however_it_is_split(
    response: bytes, kinds: list[str], body: bytes
) -> None:
    """A framed response yields head then end of message, its exact body and a reusable connection at every split."""
    for pieces in splits(response):
        run = drive(pieces)
        assert run.kinds == kinds, pieces
        assert body_and_reuse(run) == (body, True), pieces


def test_head_fields_are_kept_verbatim() -> None:
    """The head event carries the status, the parsed fields and the raw fields in order."""
    run = drive([FIXED])
    msg = run.msg
    assert (msg.code, msg.reason, msg.version) == (200, "OK", (1, 1))
    assert msg.headers["x-up"] == "1"
    assert msg.raw_headers == ((b"Content-Length", b"5"), (b"X-Up", b"1"))


def test_close_delimited_body_ends_at_eof_at_every_split() -> None:
    """A response without length or chunking reads until the upstream closes; the connection is not reused."""
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    for pieces in splits(response):
        run = drive(pieces, eof=True)
        assert run.kinds == ["head 200", "EndOfMessage"], pieces
        assert body_and_reuse(run) == (b"until the end", False), pieces


def test_body_is_incomplete_until_eof_when_close_delimited() -> None:
    """Before the close, a close-delimited body has no end of message."""
    run = drive([b"HTTP/1.1 200 OK\r\n\r\npartial"])
    assert run.kinds == ["head 200"]
    assert not run.state.done


@pytest.mark.parametrize(
    ("response", "head_only"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", True),
        (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", False),
        (b'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: "x"\r\n\r\n', False),
    ],
    ids=["HEAD", "204", "304"],
)
def test_bodyless_responses_end_at_the_head(response: bytes, head_only: bool) -> None:
    """HEAD, 204 and 304 end at their head whatever Content-Length says, and the connection stays reusable."""
    for pieces in splits(response):
        run = drive(pieces, head_only=head_only)
        assert run.kinds == [f"head {run.msg.code}", "EndOfMessage"], pieces
        assert body_and_reuse(run) == (b"", True), pieces


def test_head_parser_is_used_only_for_head_requests() -> None:
    """After a HEAD exchange, a GET on the same state reads a body again."""
    state, _ = start(head_only=True)
    events = state.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert _kinds(events, state) == ["head 200", "EndOfMessage"]
    assert state.finish()
    state.start(head_only=False, close=False)
    events = state.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert _kinds(events, state) == ["head 200", "EndOfMessage"]
    assert state.payload is not None
    assert state.payload.read_nowait() == b"abc"


# Malformed responses: the error event


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ],
    ids=["status", "status-line", "field-name", "content-length", "chunk-size", "chunk-end"],
)
def test_malformed_response_is_a_reset_at_every_split(response: bytes) -> None:
    """Malformed heads and chunk framing give one "reset" failure naming the malformed response, wherever cut."""
    for pieces in splits(response):
        run = drive(pieces)
        failure = run.failure
        assert failure.kind == "reset", pieces
        assert "malformed response from upstream" in str(failure), pieces
        assert (failure.sent, failure.responded) == (True, True)
        assert isinstance(run.events[-1], H1Failure), pieces  # nothing follows the error
        delivered_head = any(isinstance(event, ResponseHead) for event in run.events)
        # Before the head the waiter raises it; after the head the body reader does.
        assert run.state.fail(failure) is not delivered_head, pieces
        if delivered_head:
            assert run.payload.exception() is failure
        assert not run.state.finish()


def test_unasked_protocol_switch_is_a_reset() -> None:
    """A 101 to a request that asked for no upgrade fails the exchange before the head."""
    run = drive([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"])
    assert "switched protocols unasked (101)" in str(run.failure)
    assert run.state.fail(run.failure) is True


@pytest.mark.parametrize(
    ("field", "count"),
    [(b"X-Big: " + b"a" * (MAX_FIELD_SIZE + 1) + b"\r\n", 1), (b"X-Many: 1\r\n", MAX_HEADERS + 1)],
    ids=["field-size", "field-count"],
)
def test_head_past_the_limits_is_a_reset(field: bytes, count: int) -> None:
    """A field longer than MAX_FIELD_SIZE or more than MAX_HEADERS fields fail as a malformed response."""
    run = drive([b"HTTP/1.1 200 OK\r\n" + field * count + b"Content-Length: 0\r\n\r\n"])
    assert "malformed response from upstream" in str(run.failure)


# The end of the stream


@pytest.mark.parametrize(
    ("pieces", "message"),
    [
        ([], "upstream closed the connection before the response head"),
        ([b"HTTP/1.1 200 OK\r\nContent-Le"], "upstream closed the connection before the response head"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"], "upstream closed the connection mid-body"),
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"],
            "upstream closed the connection mid-body",
        ),
    ],
    ids=["nothing", "mid-head", "short-length", "chunked-cut"],
)
def test_eof_before_the_end_is_a_reset(pieces: list[bytes], message: str) -> None:
    """A stream that ends before the framing says the response is complete fails; it never ends cleanly short."""
    run = drive(pieces, eof=True)
    assert run.failure.kind == "reset"
    assert message in str(run.failure)
    assert not any(isinstance(event, EndOfMessage) for event in run.events)
    assert run.failure.responded is bool(pieces)


def test_broken_connection_mid_body_names_the_error() -> None:
    """A socket error mid-body is a reset that carries the error's text."""
    state, _ = start()
    state.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort")
    (failure,) = state.receive_eof(ConnectionResetError("peer reset"))
    assert isinstance(failure, H1Failure)
    assert str(failure) == "upstream connection broke mid-body: peer reset"


def test_eof_after_a_complete_response_changes_nothing() -> None:
    """The upstream closing after a complete response gives no event, but the connection is not reused."""
    run = drive([FIXED], eof=True)
    assert run.kinds == ["head 200", "EndOfMessage"]
    assert body_and_reuse(run) == (b"hello", False)


# Bytes out of step, and the keep-alive decision


def test_second_final_response_is_out_of_step_at_every_split() -> None:
    """Another final response after a complete one keeps the first but closes the connection."""
    response = FIXED + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    for pieces in splits(response):
        run = drive(pieces)
        # In one packet with the first, the second head stops the parse before the end-of-message check.
        assert run.kinds in (["head 200", "EndOfMessage", "OutOfStep"], ["head 200", "OutOfStep"]), pieces
        assert body_and_reuse(run) == (b"hello", False), pieces


def test_bytes_between_exchanges_are_out_of_step() -> None:
    """Bytes arriving while no exchange is under way (an idle 408) mean the connection is not reused."""
    state, _ = start()
    state.receive_data(FIXED)
    state.finish()
    events = state.receive_data(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert len(events) == 1
    assert isinstance(events[0], OutOfStep)
    assert state.should_close


@pytest.mark.parametrize(
    ("response", "close", "reusable"),
    [
        (FIXED, False, True),
        (FIXED, True, False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", False, True),
    ],
    ids=["keep-alive", "request-close", "response-close", "http10", "http10-keep-alive"],
)
def test_keep_alive_decision(response: bytes, close: bool, reusable: bool) -> None:
    """A connection is reused only when neither the request nor the response asks to close it."""
    run = drive([response], close=close)
    assert body_and_reuse(run)[1] is reusable


def test_unread_body_is_not_reused() -> None:
    """A response whose body the caller did not read to its end never returns its connection."""
    run = drive([FIXED])
    assert run.state.finish() is False


def test_unfinished_response_is_not_reused() -> None:
    """A response still arriving when the caller gives up leaves the connection unusable."""
    run = drive([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"])
    assert run.payload.read_nowait() == b"half"
    assert run.state.finish() is False


def test_large_body_pauses_reading_past_the_high_water_mark() -> None:
    """More than twice READ_LIMIT of unread body asks the flow side to pause; the body stays intact."""
    size = 3 * READ_LIMIT
    run = drive([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, b"x" * size])
    assert run.flow.paused >= 1
    assert run.kinds == ["head 200", "EndOfMessage"]
    assert body_and_reuse(run) == (b"x" * size, True)


def test_timeout_failure_names_what_was_awaited() -> None:
    """A timeout before the head and one between body bytes say which it was."""
    state, _ = start()
    assert str(state.timeout_failure(1.5)) == "no response head from upstream within 1.5s"
    assert state.timeout_failure(1.5).responded is False
    state.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    failure = state.timeout_failure(2)
    assert (failure.kind, str(failure), failure.responded) == ("timeout", "upstream sent no body bytes for 2s", True)


def test_abandoned_exchange_is_not_reused() -> None:
    """An exchange the caller gave up on marks the connection for closing."""
    state, _ = start()
    state.abandon()
    assert (state.busy, state.awaiting_head, state.should_close) == (False, False, True)


def test_end_of_message_is_one_shared_event() -> None:
    """EndOfMessage carries nothing, so one instance serves every exchange."""
    assert drive([FIXED]).events[-1] is END_OF_MESSAGE


# The request head


def test_request_head_is_encoded_in_order_with_its_framing() -> None:
    """The head lists the request line, the fields in order, then the framing line."""
    encoded = encode_head("POST", "/a?b=1", [("Host", "up"), ("X-A", "1")], "Content-Length: 3\r\n")
    assert encoded == (b"POST /a?b=1 HTTP/1.1\r\nHost: up\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n", False)


@pytest.mark.parametrize(
    ("target", "headers"),
    [("/a\r\nX: 1", [("Host", "up")]), ("/", [("Host", "up\r\nX-Evil: 1")]), ("/", [("X\nA", "1")])],
    ids=["target", "value", "name"],
)
def test_request_head_refuses_cr_or_lf(target: str, headers: list[tuple[str, str]]) -> None:
    """A CR or LF in the target, a name or a value would split the head, so nothing is encoded."""
    assert encode_head("GET", target, headers, "") is None


def test_request_head_reports_connection_close() -> None:
    """A Connection field asking to close is reported, whatever its case."""
    encoded = encode_head("GET", "/", iter([("Host", "up"), ("connection", "Close")]), "")
    assert encoded is not None
    assert encoded[1] is True


def test_request_head_restores_surrogate_escaped_bytes() -> None:
    """Non-UTF-8 bytes that aiohttp decoded with surrogateescape go out as the original bytes."""
    value = b"caf\xe9".decode("utf-8", "surrogateescape")
    encoded = encode_head("GET", "/", [("X-A", value)], "")
    assert encoded is not None
    assert b"X-A: caf\xe9\r\n" in encoded[0]


def test_head_before_the_whole_request_is_not_reused() -> None:
    """A response that arrives while a streamed request body is still going leaves the connection unusable."""
    state, _ = start()
    state.receive_data(FIXED)
    state.request_written()
    assert state.payload is not None
    assert state.payload.read_nowait() == b"hello"
    assert state.finish() is False


def test_request_written_before_the_head_keeps_the_connection() -> None:
    """A streamed request written in full before the response leaves the connection reusable."""
    state, _ = start()
    state.request_written()
    state.receive_data(FIXED)
    assert state.payload is not None
    assert state.payload.read_nowait() == b"hello"
    assert state.finish() is True


class PausingFlow:
    """Flow control as proxy.upstream._h1 does it: a pause stops the parser, a resume parses what it kept back."""

    connected = True

    def __init__(self) -> None:
        self.state = H1State(self, NO_LOOP)
        self.paused = False
        self.pauses = 0
        self.events: list[Event] = []

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            self.pauses += 1
            self.state.active.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self.paused:
            self.paused = False
            if resume_parser:
                self.events.extend(self.state.receive_buffered())


def test_paused_parser_resumes_from_what_it_kept() -> None:
    """Past the high-water mark the parser stops mid-packet; each drain of the reader resumes it, to the end."""
    flow = PausingFlow()
    state = flow.state
    state.start(head_only=False, close=False)
    size = 2 * READ_LIMIT + 1
    chunk = b"%x\r\n%s\r\n" % (size, b"x" * size)
    first = state.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n")
    assert _kinds(first, state) == ["head 200"]  # paused after the first chunk: no end yet
    assert flow.pauses == 1
    assert state.payload is not None
    body = b""
    while not state.done:
        piece = state.payload.read_nowait()
        assert piece, "the reader drained but the parser did not resume"
        body += piece
    assert flow.pauses == 3
    assert _kinds(flow.events, state) == ["EndOfMessage"]
    assert body == b"x" * (3 * size)
    assert state.finish() is True


def test_state_machine_module_does_no_io() -> None:
    """proxy/upstream/h1_protocol.py imports nothing that touches sockets, event loops or clocks: it stays sans-IO."""
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))  # the source, also when the module runs compiled
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"asyncio", "socket", "selectors", "ssl", "time", "threading", "uvloop"}


HEAD_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\n"


@pytest.mark.parametrize(
    ("kept", "stray", "head_only", "body"),
    [
        (HEAD_ANSWER, b"hello", True, b""),
        (FIXED, b"stray bytes", False, b"hello"),
        (FIXED, b"HTTP/1.1 200", False, b"hello"),
    ],
    ids=["body-after-head-answer", "bytes-after-the-body", "part-of-a-second-head"],
)
def test_bytes_after_a_whole_response_keep_it_but_close(
    kept: bytes, stray: bytes, head_only: bool, body: bytes
) -> None:
    """Bytes after a whole final response (a body sent after a HEAD answer, data past a Content-Length body, part of
    a second head) keep that response and close the connection wherever the reads fall: never a failure that costs
    the client the answer in front of them, never a connection pooled again with them in its parser."""
    for pieces in splits(kept + stray):
        run = drive(pieces, head_only=head_only)
        assert not any(isinstance(event, H1Failure) for event in run.events), pieces
        assert run.kinds[:2] == ["head 200", "EndOfMessage"], pieces
        assert run.msg.headers.get("X-Up") == "1"
        assert body_and_reuse(run) == (body, False), pieces


def test_a_refused_response_with_bytes_after_it_is_still_a_reset() -> None:
    """A response llhttp refuses stays refused when bytes follow it: only a whole, valid response in front of
    stray bytes is kept."""
    response = b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\nstray"
    for pieces in splits(response):
        assert "malformed response from upstream" in str(drive(pieces).failure), pieces
