"""Hostile HTTP/1.1 against the real running proxy: exact bytes on a raw socket, and proof no back end saw them.

Three raw-socket back ends sit behind the proxy: `public` (route /public/**), `admin` (route /admin/**) and
`legacy` (the default upstream for unmatched paths). They keep every byte they receive, so "never reached a back
end" means not even a connection was opened, and a forwarded request can be checked down to its framing headers on
the wire. Literal segments match case-insensitively and without ';' parameters or trailing dots, so /ADMIN,
/admin;x and /admin. all go to the admin back end (proxy.paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from proxy.app import RunningProxy
from tests.proxy.app_fixtures import raw_exchange, read_until_closed, running_proxy, wait_until, write_config

ROUTES = """\
  - id: public
    match: {path: "/public/**"}
    mode: new
    upstream: public
  - id: admin
    match: {path: "/admin/**"}
    mode: new
    upstream: admin
  - id: buffered
    match: {path: "/buffered/**"}
    mode: new
    upstream: public
    fallback: legacy
"""
# write_config puts `settings` right after its upstreams mapping, so these indented lines add two upstreams.
UPSTREAMS = """\
  public: {{url: "http://127.0.0.1:{public}"}}
  admin: {{url: "http://127.0.0.1:{admin}"}}
"""
FRAMING = ("content-length", "transfer-encoding")


@dataclass(frozen=True, slots=True)
class Seen:
    """One complete request as a raw back end read it off the wire."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]

    def framing(self) -> list[tuple[str, str]]:
        return [(n.lower(), v) for n, v in self.headers if n.lower() in FRAMING]


class RawBackend:
    """A loopback HTTP/1.1 server on raw sockets that keeps every byte and every complete request it receives,
    answering each with 200 and the body `<name> <target>`. A request whose body never completes is in
    `received` but not in `requests`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.received = bytearray()
        self.requests: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def untouched(self) -> bool:
        return self.connections == 0 and not self.received

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while (seen := await self._read_request(reader)) is not None:
                self.requests.append(seen)
                text = f"{self.name} {seen.target}".encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(text)
                writer.write(head + text)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # the request never completed (or made no sense): its bytes stay in `received` only
        finally:
            self._writers.discard(writer)
            writer.close()
            self._tasks.discard(task)

    async def _recv(self, read: Awaitable[bytes]) -> bytes:
        try:
            data = await read
        except asyncio.IncompleteReadError as exc:
            self.received += exc.partial
            raise
        self.received += data
        return data

    async def _read_request(self, reader: asyncio.StreamReader) -> Seen | None:
        try:
            head = await self._recv(reader.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None  # the proxy closed an idle pooled connection
        line, *fields = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = tuple((n.strip(), v.strip()) for n, _, v in (f.partition(":") for f in fields))
        seen = Seen(method, target, headers, b"")
        if seen.values("transfer-encoding"):
            return replace(seen, body=await self._read_chunked(reader))
        lengths = seen.values("content-length")
        if lengths:
            return replace(seen, body=await self._recv(reader.readexactly(int(lengths[0]))))
        return seen

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size = int((await self._recv(reader.readuntil(b"\r\n"))).split(b";")[0], 16)
            data = await self._recv(reader.readexactly(size + 2))
            if data[-2:] != b"\r\n":
                raise ValueError("chunk without CRLF")
            if size == 0:
                return bytes(body)
            body += data[:-2]


@dataclass(frozen=True, slots=True)
class Backends:
    public: RawBackend
    admin: RawBackend
    legacy: RawBackend

    @property
    def all(self) -> tuple[RawBackend, RawBackend, RawBackend]:
        return (self.public, self.admin, self.legacy)

    def by_name(self, name: str) -> RawBackend:
        return next(b for b in self.all if b.name == name)


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    group = Backends(RawBackend("public"), RawBackend("admin"), RawBackend("legacy"))
    try:
        for backend in group.all:
            await backend.start()
        yield group
    finally:
        for backend in group.all:
            await backend.aclose()


@pytest.fixture
async def proxy(backends: Backends, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    path = write_config(
        tmp_path / "routes.yaml",
        legacy=backends.legacy.port,
        new=backends.legacy.port,
        routes=ROUTES,
        settings=UPSTREAMS.format(public=backends.public.port, admin=backends.admin.port),
    )
    async with running_proxy(path, watch=False) as running:
        yield running


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def parse_answers(data: bytes) -> list[Answer]:
    """Split the raw bytes a client received into responses (each framed by Content-Length; 1xx has no body)."""
    answers: list[Answer] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response: {data[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        answers.append(Answer(int(status_line.split(" ", 2)[1]), headers, rest[:length]))
        data = rest[length:]
    return answers


async def until_closed(proxy: RunningProxy, data: bytes, *, limit: float = 5.0) -> list[Answer]:
    """Send `data` on a fresh connection and read until the proxy closes it; TimeoutError if it stays open."""
    received, closed = await read_until_closed(proxy.proxy_port, data, limit=limit)
    if not closed:
        raise TimeoutError(f"the proxy kept the connection open past {limit} s")
    return parse_answers(received)


def get(target: bytes, *extra: bytes) -> bytes:
    """A GET for `target` that asks the proxy to close the connection after answering."""
    return b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n" + b"".join(extra) + b"Connection: close\r\n\r\n"


POST = b"POST /public/x HTTP/1.1\r\nHost: a\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
SMUGGLED = b"GET /admin/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

# Each is refused by the proxy's parser (or its header limits) before any route is chosen; the connection closes.
REFUSED: dict[str, tuple[bytes, int]] = {
    "cl-te": (POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-cl": (
        POST
        + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        + b"%x\r\n" % len(SMUGGLED)
        + SMUGGLED
        + b"\r\n0\r\n\r\n",
        400,
    ),
    "te-cl-zero-on-get": (
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "two-different-cl": (POST + b"Content-Length: 5\r\nContent-Length: 46\r\n\r\nhello" + SMUGGLED, 400),
    "cl-list": (POST + b"Content-Length: 5, 46\r\n\r\nhello" + SMUGGLED, 400),
    "cl-plus": (POST + b"Content-Length: +5\r\n\r\nhello", 400),
    "cl-minus": (POST + b"Content-Length: -1\r\n\r\nhello", 400),
    "cl-hex": (POST + b"Content-Length: 0x5\r\n\r\nhello", 400),
    "cl-decimal": (POST + b"Content-Length: 5.0\r\n\r\nhello", 400),
    "cl-empty": (POST + b"Content-Length: \r\n\r\nhello", 400),
    "te-xchunked": (POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-chunked-identity": (POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-unknown-coding": (POST + b"Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-space-before-colon": (POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-tab-before-colon": (POST + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-vertical-tab": (POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-twice": (POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-obs-fold": (POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "obs-fold": (b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
    "obs-fold-tab": (b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400),
    "bare-lf": (b"GET /public/x HTTP/1.1\nHost: a\nX-A: b\n\n", 400),
    "bare-lf-in-headers": (b"GET /public/x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400),
    "cr-without-lf": (b"GET /public/x HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400),
    "nul-in-value": (b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400),
    "del-in-value": (b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", 400),
    "control-in-name": (b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-\x01: b\r\n\r\n", 400),
    "space-in-name": (b"GET /public/x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400),
    "empty-name": (b"GET /public/x HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    "nul-in-method": (b"G\x00T /public/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "space-after-version": (b"GET /public/x HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    "bad-version": (b"GET /public/x HTTP/1.x\r\nHost: a\r\n\r\n", 400),
    "asterisk-form": (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "no-host-http11": (b"GET /public/x HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET /admin/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "chunk-size-not-hex": (CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-negative": (CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-0x": (CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-overflow": (CHUNKED + b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-space": (CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n", 400),
    "chunk-data-overrun": (CHUNKED + b"5\r\nhelloXX0\r\n\r\n", 400),
    "chunk-bare-lf": (CHUNKED + b"5\nhello\n0\n\n", 400),
    "chunk-ext-bare-lf": (CHUNKED + b"5;a=b\nc\r\nhello\r\n0\r\n\r\n", 400),
    "trailer-content-length": (CHUNKED + b"5\r\nhello\r\n0\r\nContent-Length: 46\r\n\r\n" + SMUGGLED, 400),
    "header-line-too-long": (b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 400),
    # Host + Connection + 99 more = 101 header lines, one over the default max_headers of 100.
    "too-many-headers": (get(b"/public/x", *(b"X-%d: v\r\n" % i for i in range(99))), 400),
    # Every line under the line limit, all together over max_header_size (32 KiB): refused by the handler.
    "header-block-too-large": (get(b"/public/x", *(b"X-%d: %b\r\n" % (i, b"v" * 4000) for i in range(10))), 431),
    "connect": (b"CONNECT admin.internal:80 HTTP/1.1\r\nHost: admin.internal:80\r\nConnection: close\r\n\r\n", 400),
}


@pytest.mark.parametrize(("data", "status"), REFUSED.values(), ids=REFUSED.keys())
async def test_hostile_request_is_refused_and_reaches_no_back_end(
    proxy: RunningProxy, backends: Backends, data: bytes, status: int
) -> None:
    """Ambiguous framing, malformed heads and over-limit requests get one error answer (strangler's JSON error with
    an X-Request-Id, also when aiohttp's parser refused the request), the connection is closed, and no back end
    ever sees a connection (so no smuggled second request can reach one)."""
    answers = await until_closed(proxy, data)
    assert [a.status for a in answers] == [status]
    [answer] = answers
    assert len(answer.headers["x-request-id"]) == 32
    assert answer.headers["content-type"].startswith("application/json")
    error = json.loads(answer.body)
    assert error["error"] in ("bad_request", "headers_too_large", "bad_path")
    assert error["request_id"] == answer.headers["x-request-id"]
    assert all(b.untouched for b in backends.all)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
async def test_other_http_versions_get_505_on_an_http11_status_line(
    proxy: RunningProxy, backends: Backends, version: bytes
) -> None:
    """A request line naming HTTP/2.0 or HTTP/0.9 (aiohttp's parser lets both through) gets one 505 on an HTTP/1.1
    status line with an X-Request-Id, the connection is closed, and no back end is contacted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(b"GET /public/x " + version + b"\r\nHost: a\r\n\r\n")
        async with asyncio.timeout(5):
            received = await reader.read()  # to the end: the proxy closes the connection
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert received.startswith(b"HTTP/1.1 505 ")
    [answer] = parse_answers(received)
    assert answer.headers["connection"] == "close"
    assert answer.headers["x-request-id"]
    assert b"http_version_not_supported" in answer.body
    assert all(b.untouched for b in backends.all)


async def test_request_shaped_chunked_body_stays_one_request(proxy: RunningProxy, backends: Backends) -> None:
    """A chunked body holding a whole request reaches the back end as body bytes of one request, re-chunked with
    exactly one framing header; the admin back end never sees it."""
    data = CHUNKED + b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n" + get(b"/public/after")
    answers = await until_closed(proxy, data)
    assert [a.status for a in answers] == [200, 200]
    assert [a.body for a in answers] == [b"public /public/x", b"public /public/after"]
    first, second = backends.public.requests
    assert first.body == SMUGGLED
    assert first.framing() == [("transfer-encoding", "chunked")]
    assert second.target == "/public/after"
    assert second.framing() == []
    assert backends.admin.untouched
    assert backends.legacy.untouched


async def test_request_shaped_length_body_stays_one_request(proxy: RunningProxy, backends: Backends) -> None:
    """A Content-Length body holding a whole request is forwarded as that body with one Content-Length."""
    answers = await until_closed(
        proxy, POST + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED
    )
    assert [a.status for a in answers] == [200]
    (seen,) = backends.public.requests
    assert (seen.body, seen.framing()) == (SMUGGLED, [("content-length", str(len(SMUGGLED)))])
    assert backends.admin.untouched


async def test_duplicate_equal_content_length_is_refused_or_sent_once(proxy: RunningProxy, backends: Backends) -> None:
    """Two equal Content-Length headers are either refused untouched or forwarded with exactly one."""
    data = POST + b"Content-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello" + SMUGGLED
    answers = await until_closed(proxy, data)
    if answers[0].status == 400:
        assert all(b.untouched for b in backends.all)
    else:
        assert [a.status for a in answers] == [200]
        (seen,) = backends.public.requests
        assert (seen.body, seen.framing()) == (b"hello", [("content-length", "5")])
    assert backends.admin.untouched


async def test_declared_body_over_max_body_is_refused_unread(proxy: RunningProxy, backends: Backends) -> None:
    """A Content-Length over limits.max_body gets 413 with Connection: close before any byte of it is read or sent
    on. (aiohttp then lingers up to 10 s discarding what the client still sends, so closure is announced here.)"""
    response = await raw_exchange(proxy.proxy_port, POST + b"Content-Length: 99999999\r\n\r\nhello" + SMUGGLED)
    (answer,) = parse_answers(response)
    assert answer.status == 413
    assert answer.headers["connection"] == "close"
    assert all(b.untouched for b in backends.all)


TOLERATED: dict[str, tuple[bytes, tuple[tuple[str, str], ...]]] = {
    "cl-ows": (POST + b"Content-Length:  5 \r\n", (("content-length", "5"),)),
    "cl-leading-zeros": (POST + b"Content-Length: 005\r\n", (("content-length", "5"),)),
    "te-upper-case": (POST + b"Transfer-Encoding: CHUNKED\r\n", (("transfer-encoding", "chunked"),)),
    "te-tab-ows": (POST + b"Transfer-Encoding:\tchunked \r\n", (("transfer-encoding", "chunked"),)),
    "te-identity-chunked": (POST + b"Transfer-Encoding: identity, chunked\r\n", (("transfer-encoding", "chunked"),)),
    "http10-no-host": (b"POST /public/x HTTP/1.0\r\nContent-Length: 5\r\n", (("content-length", "5"),)),
}


@pytest.mark.parametrize(("head", "framing"), TOLERATED.values(), ids=TOLERATED.keys())
async def test_tolerated_framing_is_reframed_with_one_header(
    proxy: RunningProxy, backends: Backends, head: bytes, framing: tuple[tuple[str, str], ...]
) -> None:
    """Framing the RFC allows (optional whitespace, case, leading zeros, chunked last) is forwarded with the body
    intact and exactly one clean framing header of the proxy's own making."""
    body = b"5\r\nhello\r\n0\r\n\r\n" if framing[0][0] == "transfer-encoding" else b"hello"
    answers = await until_closed(proxy, head + b"Connection: close\r\n\r\n" + body)
    assert [a.status for a in answers] == [200]
    (seen,) = backends.public.requests
    assert (seen.body, tuple(seen.framing())) == (b"hello", framing)
    assert backends.admin.untouched
    assert backends.legacy.untouched


async def test_chunk_extensions_and_trailers_are_not_forwarded(proxy: RunningProxy, backends: Backends) -> None:
    """Chunk extensions (even long ones) and trailer fields are dropped: the back end gets a clean re-chunked body."""
    chunks = b"5;name=value;" + b"x" * 1000 + b'\r\nhello\r\n6;q="a\\"b"\r\n world\r\n0\r\nX-Trailer: evil\r\n\r\n'
    answers = await until_closed(proxy, POST + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
    assert [a.status for a in answers] == [200]
    (seen,) = backends.public.requests
    assert seen.body == b"hello world"
    assert b";" not in backends.public.received
    assert b"X-Trailer" not in backends.public.received


@pytest.mark.parametrize("path", [b"/public/x", b"/buffered/x"], ids=["streamed", "buffered-for-fallback"])
@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nhelloXX", b"5\nhello"], ids=["size", "overrun", "bare-lf"])
async def test_broken_chunk_after_the_head_never_completes_a_request(
    proxy: RunningProxy, backends: Backends, path: bytes, bad: bytes
) -> None:
    """A chunked body that breaks after the head was forwarded gets a prompt 400 and a closed connection (read()
    reaching EOF proves it); the back
    end sees its connection dropped, never a final chunk that would make a truncated request look complete."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        if path == b"/public/x":  # streamed: the head is on its way before the body is complete
            await wait_until(lambda: b"hello" in backends.public.received)
        else:  # buffered: give the handler time to start reading the body (nothing to observe from outside)
            await asyncio.sleep(0.1)
        writer.write(bad)
        await writer.drain()
        async with asyncio.timeout(5.0):
            answers = parse_answers(await reader.read())
    finally:
        writer.close()
    assert [a.status for a in answers] == [400]
    if path == b"/public/x":
        await wait_until(lambda: backends.public.open_connections == 0)
        assert backends.public.requests == []
        assert not backends.public.received.endswith(b"0\r\n\r\n")
    else:  # read whole before any upstream is contacted, so nobody saw anything
        assert backends.public.untouched
    assert backends.admin.untouched
    assert backends.legacy.untouched


async def test_client_leaving_mid_body_never_completes_a_request(proxy: RunningProxy, backends: Backends) -> None:
    """A client that disconnects mid-body leaves the back end with a dropped connection, not a short request."""
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    writer.write(CHUNKED + b"5\r\nhello\r\n")
    await writer.drain()
    await wait_until(lambda: b"hello" in backends.public.received)
    writer.close()
    await wait_until(lambda: backends.public.open_connections == 0)
    assert backends.public.requests == []
    assert not backends.public.received.endswith(b"0\r\n\r\n")


# (raw request target, expected): 400, or (back end, path it must receive). Every forwarded path is the canonical
# form the route matched: dot segments resolved, unreserved escapes decoded, repeated slashes merged.
PATHS: dict[str, tuple[bytes, int | tuple[str, str]]] = {
    "encoded-slash": (b"/public/..%2Fadmin/x", 400),
    "encoded-slash-lower": (b"/public/..%2fadmin/x", 400),
    "encoded-dots-and-slash": (b"/public/%2e%2e%2fadmin/x", 400),
    "encoded-backslash": (b"/public/..%5Cadmin/x", 400),
    "raw-backslash": (b"/public\\..\\admin/x", 400),
    "encoded-dot-segment": (b"/public/%2e%2e/admin/x", ("admin", "/admin/x")),
    "half-encoded-dot-segment": (b"/public/.%2E/admin/x", ("admin", "/admin/x")),
    "dot-then-dot-dot": (b"/public/./../admin/x", ("admin", "/admin/x")),
    "dot-dot-from-admin": (b"/admin/../public/x", ("public", "/public/x")),
    "above-root": (b"/public/%2e%2e/%2e%2e/%2e%2e/admin/x", ("admin", "/admin/x")),
    "double-slash": (b"//admin/x", ("admin", "/admin/x")),
    "encoded-unreserved": (b"/%61dmin/x", ("admin", "/admin/x")),
    "semicolon-dot-dot": (b"/public/..;/admin/x", 400),
    "semicolon-empty-segment": (b"/;x/admin/x", 400),
    "semicolon-params": (b"/admin;x/secret", ("admin", "/admin;x/secret")),
    "encoded-semicolon": (b"/admin%3Bx", ("admin", "/admin%3Bx")),
    "trailing-dot": (b"/admin.", ("admin", "/admin.")),
    "trailing-dot-segment": (b"/admin./x", ("admin", "/admin./x")),
    "trailing-space": (b"/admin%20/x", ("admin", "/admin%20/x")),
    "overlong-utf8-dots": (b"/public/%c0%ae%c0%ae/admin/x", ("public", "/public/%C0%AE%C0%AE/admin/x")),
    "double-encoded-dots": (b"/public/%252e%252e/admin/x", ("public", "/public/%252e%252e/admin/x")),
    "dots-in-query": (b"/public/x?/../../admin/x", ("public", "/public/x?/../../admin/x")),
    "upper-case": (b"/ADMIN", ("admin", "/ADMIN")),
    "mixed-case": (b"/Admin/x", ("admin", "/Admin/x")),
    "case-and-params": (b"/ADMIN;x.", ("admin", "/ADMIN;x.")),
    "fragment": (b"/public/x#/../../admin/x", 400),
    "encoded-nul": (b"/admin%00", 400),
    "encoded-nul-in-segment": (b"/public/x%00/../../admin/x", 400),
    "encoded-crlf": (b"/public/x%0d%0aX-Evil:%201", 400),
    "bad-escape": (b"/public/%zz/../../admin/x", 400),
    "absolute-form-admin": (b"http://evil.example/admin/x", 400),
    "absolute-form-public": (b"http://admin.internal/public/x", 400),
}


@pytest.mark.parametrize(("target", "expected"), PATHS.values(), ids=PATHS.keys())
async def test_path_tricks_are_refused_or_routed_by_canonical_form(
    proxy: RunningProxy, backends: Backends, target: bytes, expected: int | tuple[str, str]
) -> None:
    """A path trick is a 400 that reaches nobody, or reaches exactly the back end whose route matches its canonical
    form, which receives that canonical path (never the raw spelling a back end could read another way)."""
    (answer,) = await until_closed(proxy, get(target))
    if isinstance(expected, int):
        assert answer.status == expected
        assert all(b.untouched for b in backends.all)
        return
    name, path = expected
    assert answer.status == 200
    assert answer.body == f"{name} {path}".encode()
    assert answer.headers["x-strangler-upstream"] == name
    chosen = backends.by_name(name)
    assert [seen.target for seen in chosen.requests] == [path]
    assert all(b.untouched for b in backends.all if b is not chosen)


async def test_refused_path_leaves_the_connection_usable(proxy: RunningProxy, backends: Backends) -> None:
    """After a 400 for a bad path, the next request on the same connection is served; only it reaches a back end."""
    data = b"GET /public/..%2Fadmin/x HTTP/1.1\r\nHost: a\r\n\r\n" + get(b"/admin/ok")
    answers = await until_closed(proxy, data)
    assert [a.status for a in answers] == [400, 200]
    assert [seen.target for seen in backends.admin.requests] == ["/admin/ok"]
    assert backends.public.untouched
    assert backends.legacy.untouched


async def test_pipelined_requests_are_answered_in_order(proxy: RunningProxy, backends: Backends) -> None:
    """Two valid requests written at once on one connection are both answered, in order, each by its own route."""
    data = b"GET /admin/one HTTP/1.1\r\nHost: a\r\n\r\n" + POST + b"Content-Length: 3\r\n\r\nabc" + get(b"/public/two")
    answers = await until_closed(proxy, data)
    assert [(a.status, a.body) for a in answers] == [
        (200, b"admin /admin/one"),
        (200, b"public /public/x"),
        (200, b"public /public/two"),
    ]
    assert [s.target for s in backends.admin.requests] == ["/admin/one"]
    assert [(s.target, s.body) for s in backends.public.requests] == [("/public/x", b"abc"), ("/public/two", b"")]


async def test_max_headers_itself_is_accepted(proxy: RunningProxy, backends: Backends) -> None:
    """Exactly max_headers (100) header lines is still a valid request: the limit is not off by one."""
    answers = await until_closed(proxy, get(b"/public/x", *(b"X-%d: v\r\n" % i for i in range(98))))
    assert [a.status for a in answers] == [200]
    assert len(backends.public.requests) == 1
