"""The whole-response fast path (`proxy.upstream.whole`) against llhttp: what it accepts, llhttp reads the same way."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import hdrs
from aiohttp.streams import StreamReader
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import istr

from proxy.upstream.h1_protocol import END_OF_MESSAGE, RESPONSE_HEAD, BodyReader, H1State, new_parser
from proxy.upstream.whole import _KNOWN, MAX_HEADERS, WholeResponse, parse_whole

pytestmark = pytest.mark.unit

NO_LOOP = object()
ROOT = Path(__file__).resolve().parents[3]


class Flow:
    """The flow-control side a body reader talks to: never pauses anything here."""

    connected = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def llhttp(data: bytes) -> tuple[object, ...] | None:
    """What llhttp (aiohttp's C parser, as the upstream client configures it) makes of `data` as one exchange's
    first read: the head, keep-alive and body of a response complete in it, or None."""
    parser = new_parser(Flow(), NO_LOOP, with_body=True)
    try:
        messages, upgraded, tail = parser.feed_data(data)
    except Exception:
        return None
    if len(messages) != 1 or upgraded or tail:
        return None
    msg, payload = messages[0]
    if not payload.is_eof():
        return None
    body = payload.read_nowait()
    return (msg.version, msg.code, msg.reason, msg.raw_headers, list(msg.headers.items()), msg.should_close, body)


def fast(data: bytes) -> tuple[object, ...] | None:
    whole = parse_whole(data)
    if whole is None:
        return None
    headers = list(whole.headers.items())
    body = whole.read_nowait()
    return (whole.version, whole.code, whole.reason, whole.raw_headers, headers, whole.should_close, body)


NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 10:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 16\r\nConnection: keep-alive\r\n\r\n"
    b'{"status":"ok"}\n'
)


def test_an_ordinary_small_response_is_read_by_the_fast_path_as_llhttp_reads_it() -> None:
    """The common case takes the fast path, and its result equals llhttp's field for field."""
    assert parse_whole(NGINX) is not None
    assert fast(NGINX) == llhttp(NGINX)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (NGINX[:-1], "the body is not all here"),
        (NGINX + b"HTTP/1.1 200 OK\r\n", "bytes past the body"),
        (NGINX.split(b"\r\n\r\n")[0], "the head is not all here"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "two Content-Lengths"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", "CL and TE"),
        (b"HTTP/1.1 200 OK\r\n\r\nabc", "read until close"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc", "204 has no body whatever it says"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\nabc", "304 likewise"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "interim head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: a\r\n b\r\n\r\nabc", "folded line"),
        (b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc", "space before the colon"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", "a signed length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: caf\xc3\xa9\r\n\r\nabc", "non-ASCII"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close, x\r\n\r\nabc", "a Connection list"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nProxy-Connection: close\r\n\r\nabc", "Proxy-Connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nUpgrade: h2c\r\n\r\nabc", "Upgrade"),
        (b"HTTP/2 200 OK\r\nContent-Length: 3\r\n\r\nabc", "not HTTP/1"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSec-WebSocket-Key1: x\r\n\r\nabc", "aiohttp refuses it"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + b"X: y\r\n" * MAX_HEADERS + b"\r\nabc", "too many"),
    ],
)
def test_what_the_fast_path_declines_is_left_to_llhttp(data: bytes, why: str) -> None:
    """Anything outside the strict subset is None, so llhttp parses it (and refuses what it refuses)."""
    assert parse_whole(data) is None, why


def test_the_whole_response_reads_as_an_ended_stream() -> None:
    """Its body reads once, then b""; it is at its end only once read; a set exception is raised on read."""
    whole = parse_whole(NGINX)
    assert isinstance(whole, WholeResponse)
    assert whole.is_eof()
    assert not whole.at_eof()
    assert asyncio.run(whole.readany()) == b'{"status":"ok"}\n'
    assert whole.at_eof()
    assert whole.read_nowait() == b""
    whole.set_exception(ValueError("broken"))
    with pytest.raises(ValueError, match="broken"):
        whole.read_nowait()


_TOKEN = st.text(alphabet="abcXYZ-_!#0129", min_size=1, max_size=8)
_CLEAN = st.sampled_from([b"", b" padded ", b"\ta\tb\t", b"close", b"keep-alive", b"Close", b"chunked", b"3", b"007"])
_VALUE = _CLEAN | _CLEAN | _CLEAN | st.binary(max_size=10).map(lambda b: bytes(x for x in b if x not in (13, 10)))
_SPECIAL = st.sampled_from(
    [
        "Content-Length",
        "content-length",
        "Connection",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Connection",
        "Server",
        "sec-websocket-key1",
    ]
)


def _mostly(common: bytes, *others: bytes) -> st.SearchStrategy[bytes]:
    """`common` three times in four, else one of `others`: most responses stay near the fast path."""
    return (
        st.sampled_from([common, common, common, *others])
        if len(others) == 1
        else (st.sampled_from([common] * (3 * len(others)) + list(others)))
    )


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """Responses near and off the fast path: versions, codes, reasons, odd fields, lengths right and wrong."""
    version = draw(_mostly(b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1"))
    code = draw(_mostly(b"200", b"201", b"204", b"304", b"404", b"500", b"599", b"100", b"600", b"20"))
    reason = draw(_mostly(b" OK", b" ", b"", b"  Two spaces", b" Tab\there", b" caf\xc3\xa9"))
    body = draw(st.binary(max_size=20))
    fields = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(_SPECIAL | _TOKEN | _TOKEN).encode()
        value = draw(_VALUE)
        separator = draw(_mostly(b": ", b":", b":  ", b" : ", b":\t"))
        fields.append(name + separator + value)
    if draw(st.integers(0, 4)):
        length = len(body) + draw(_mostly(b"0", b"1", b"-1").map(int))
        fields.insert(draw(st.integers(0, len(fields))), b"Content-Length: " + str(max(length, 0)).encode())
    head = version + b" " + code + reason + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    return head + body + draw(_mostly(b"", b"x", b"HTTP/1.1 200 OK\r\n"))


@settings(max_examples=3000, deadline=None)
@given(responses())
def test_whatever_the_fast_path_accepts_llhttp_reads_the_same_way(data: bytes) -> None:
    """On generated responses: when the fast path reads one, llhttp reads the same version, status, reason, raw and
    decoded fields, keep-alive and body (so taking the fast path never changes what the proxy passes on)."""
    got = fast(data)
    if got is not None:
        assert got == llhttp(data)


def test_the_generated_responses_reach_the_fast_path() -> None:
    """The property above is not vacuous: a good share of generated responses take the fast path."""
    taken = 0

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True)
    @given(responses())
    def count(data: bytes) -> None:
        nonlocal taken
        taken += parse_whole(data) is not None

    count()
    assert taken >= 20


def body_of(state: H1State) -> BodyReader | None:
    """The exchange's body reader (a call, so a type narrowed by an earlier exchange does not stick)."""
    return state.payload


def test_the_exchange_takes_the_fast_path_only_for_a_whole_first_read_of_a_get() -> None:
    """H1State reads a whole first read through `parse_whole` (head and end at once); a HEAD, a split response and
    the next exchange after a fast one go through llhttp, which stays in step."""
    state = H1State(Flow(), NO_LOOP)
    state.start(head_only=False, close=False)
    assert state.receive_data(NGINX) == (RESPONSE_HEAD, END_OF_MESSAGE)
    assert isinstance(state.payload, WholeResponse)
    assert state.payload.read_nowait().endswith(b"\n")
    assert state.finish()  # complete and read: the connection may carry the next request

    state.start(head_only=False, close=False)  # split over two reads: llhttp's StreamReader
    assert state.receive_data(NGINX[:40]) == ()
    assert state.receive_data(NGINX[40:]) == (RESPONSE_HEAD, END_OF_MESSAGE)
    reader = body_of(state)
    assert isinstance(reader, StreamReader)
    assert reader.read_nowait() == b'{"status":"ok"}\n'
    assert state.finish()

    state.start(head_only=True, close=False)  # HEAD: its parser expects no body, whatever Content-Length says
    head = NGINX.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert state.receive_data(head) == (RESPONSE_HEAD, END_OF_MESSAGE)
    assert isinstance(body_of(state), StreamReader)
    assert state.finish()


def test_a_whole_response_that_asks_to_close_ends_the_connection() -> None:
    """Connection: close (or HTTP/1.0 without keep-alive) read on the fast path still closes the connection."""
    for data in (
        NGINX.replace(b"keep-alive", b"close"),
        NGINX.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Connection: keep-alive\r\n", b""),
    ):
        state = H1State(Flow(), NO_LOOP)
        state.start(head_only=False, close=False)
        assert state.receive_data(data) == (RESPONSE_HEAD, END_OF_MESSAGE)
        assert isinstance(state.payload, WholeResponse)
        state.payload.read_nowait()
        assert not state.finish()


def test_every_field_name_aiohttp_knows_is_spelled_as_its_parser_spells_it() -> None:
    """Known names (each `aiohttp.hdrs` one, here lower- and upper-cased) come out in hdrs's spelling, others as
    they came: the decoded fields equal llhttp's whatever the case on the wire."""
    skip = {"content-length", "transfer-encoding", "upgrade", "connection", "proxy-connection", "sec-websocket-key1"}
    names = [n for n in vars(hdrs).values() if isinstance(n, istr) and n.lower() not in skip]
    for spell in (str.lower, str.upper):
        fields = b"".join(spell(str(n)).encode() + b": v\r\n" for n in names) + b"X-Own-Case: v\r\n"
        data = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n"
        assert parse_whole(data) is not None
        assert fast(data) == llhttp(data)


def test_in_aiohttps_debug_mode_llhttp_reads_every_response() -> None:
    """Under python -X dev aiohttp parses responses strictly, so the fast path steps aside (the two never differ)."""
    code = "import sys; from proxy.upstream.whole import parse_whole as p; sys.exit(p(sys.stdin.buffer.read()) is None)"
    ran = subprocess.run([sys.executable, "-X", "dev", "-c", code], input=NGINX, check=False, cwd=ROOT)
    assert ran.returncode == 1
    ran = subprocess.run([sys.executable, "-c", code], input=NGINX, check=False, cwd=ROOT)
    assert ran.returncode == 0


def test_the_known_names_are_those_aiohttps_c_parser_was_generated_from() -> None:
    """The spelling table (every istr in `aiohttp.hdrs`) lists exactly the names aiohttp's `_headers.pxi` does."""
    pxi = Path(aiohttp.__file__).parent / "_headers.pxi"
    if not pxi.exists():
        pytest.skip(f"this aiohttp ({aiohttp.__version__}) ships no _headers.pxi to compare with")
    generated = {getattr(hdrs, n) for n in re.findall(r"hdrs\.([A-Z_0-9]+)", pxi.read_text(encoding="utf-8"))}
    assert set(_KNOWN.values()) == generated
