"""The upstream pool against real loopback servers: aiohttp for well-behaved ones, raw sockets for the rest."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.upstream.response import UpstreamResponse
from proxy.upstream.transport import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamPoolTimeout,
    UpstreamReset,
    UpstreamTimeout,
)
from tests.proxy.app_fixtures import dead_port, wait_until

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

T = 2.0  # connect and read timeouts where the test does not exercise them


# Helpers


async def read_all(resp: UpstreamResponse) -> bytes:
    try:
        parts = []
        while chunk := await resp.read():
            parts.append(chunk)
        return b"".join(parts)
    finally:
        resp.close()


async def fetch(pool: UpstreamPool, path: str = "/", method: str = "GET", **kw: Any) -> tuple[int, bytes]:
    params: dict[str, Any] = {"connect_timeout": T, "read_timeout": T, "retry_stale": True, "content_length": None}
    params.update(kw)
    body = params.pop("body", None)
    resp = await pool.request(method, path, [("Host", "upstream")], body, **params)
    return resp.status, await read_all(resp)


class Peers:
    """Records which client connection (peer address) carried each request, and the server's end of it."""

    def __init__(self) -> None:
        self.seen: list[object] = []
        self.transports: list[asyncio.BaseTransport] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        assert request.transport is not None
        self.seen.append(request.transport.get_extra_info("peername"))
        self.transports.append(request.transport)
        resp: web.StreamResponse = await handler(request)
        return resp

    @property
    def connections(self) -> int:
        return len(set(map(str, self.seen)))


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request from a raw socket: (head, de-framed body); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += data[:-2]
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[URL]]]:
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: RawHandler) -> URL:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return URL(f"http://127.0.0.1:{port}")

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., UpstreamPool]]:
    made: list[UpstreamPool] = []

    def make(url: URL, **kw: Any) -> UpstreamPool:
        pool = UpstreamPool(url, **kw)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


def url_of(server: TestServer) -> URL:
    return URL(f"http://127.0.0.1:{server.port}")


# Response framing


async def test_content_length_body(aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]) -> None:
    """A Content-Length body arrives whole, with status, reason, version and headers."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100_000, headers={"X-Up": "1"})

    app = web.Application()
    app.router.add_get("/", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts())
    assert (resp.status, resp.reason, resp.version) == (200, "OK", (1, 1))
    assert resp.headers["X-Up"] == "1"
    assert (b"X-Up", b"1") in resp.raw_headers
    assert await read_all(resp) == b"x" * 100_000


async def test_chunked_response_is_dechunked_and_streamed(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """A chunked body comes out de-chunked, and its first chunk is readable before the server has finished."""
    first_read, second_read = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"first;")
        await asyncio.wait_for(first_read.wait(), 5)  # only the client's read of chunk one lets us go on
        await resp.write(b"second;")
        await asyncio.wait_for(second_read.wait(), 5)  # the last chunk comes apart, once the client has more
        await resp.write(b"third")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts())
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert await resp.read() == b"first;"
    first_read.set()
    more = await resp.read()
    second_read.set()
    assert more + await read_all(resp) == b"second;third"


async def test_head_has_no_body_and_keeps_the_connection(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """HEAD returns the Content-Length header but no body, and the next request on the connection is intact."""
    peers = Peers()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * 500)

    app = web.Application(middlewares=[peers.middleware])
    app.router.add_get("/", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    resp = await pool.request("HEAD", "/", [("Host", "a")], None, **_timeouts())
    assert resp.headers["Content-Length"] == "500"
    assert await read_all(resp) == b""
    assert await fetch(pool) == (200, b"y" * 500)
    assert peers.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_statuses(
    status: int, raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """204 and 304 have no body even when a Content-Length is present, and the connection stays usable."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(f'HTTP/1.1 {status} Nothing\r\nContent-Length: 40\r\nETag: "e"\r\n\r\n'.encode())
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        await writer.drain()

    pool = pools(await raw_server(handler))
    assert await fetch(pool) == (status, b"")
    assert await fetch(pool) == (200, b"next")
    assert connections == 1


async def test_interim_responses_are_skipped(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """100 Continue and 103 Early Hints before the final head are skipped, across separate packets."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for part in (
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ):
            writer.write(part)
            await writer.drain()
            # Stays: spaces the heads out so each arrives in a read of its own (the case under test). Nothing
            # public tells when the pool has parsed an interim head, which it skips by design.
            await asyncio.sleep(0.01)
        await reader.read()

    pool = pools(await raw_server(handler))
    resp = await pool.request("POST", "/", [("Host", "a")], b"data", **_timeouts())
    assert resp.status == 201
    assert "Link" not in resp.headers
    assert await read_all(resp) == b"ok"


async def test_http10_body_until_close(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """An HTTP/1.0 response without a length is read until the server closes, and is not reused."""
    connections = 0
    first_read = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        first_read.clear()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.wait_for(first_read.wait(), T)  # the rest comes apart, once the client has read the start
        writer.write(b"close")

    async def fetch_in_two_reads() -> tuple[int, bytes]:
        resp = await pool.request("GET", "/", [("Host", "upstream")], None, **_timeouts())
        start = await resp.read()
        first_read.set()
        return resp.status, start + await read_all(resp)

    pool = pools(await raw_server(handler))
    assert await fetch_in_two_reads() == (200, b"until close")
    assert await fetch_in_two_reads() == (200, b"until close")
    assert connections == 2


# Connection reuse


def keep_open_server(counter: list[int], close_header: bool) -> RawHandler:
    """Serves every request on a connection and never closes it, even after saying Connection: close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.append(1)
        extra = b"Connection: close\r\n" if close_header else b""
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: 5\r\n\r\nhello")
            await writer.drain()

    return handler


async def test_keep_alive_reuses_one_connection(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """Sequential requests whose responses are read fully share one server-side connection."""
    peers = Peers()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=request.path)

    app = web.Application(middlewares=[peers.middleware])
    app.router.add_get("/{n}", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    for n in range(5):
        assert await fetch(pool, f"/{n}") == (200, f"/{n}".encode())
    assert peers.connections == 1


async def test_connection_close_from_upstream_is_not_reused(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """A response with Connection: close makes the next request open a new connection."""
    peers = Peers()

    async def handler(request: web.Request) -> web.Response:
        resp = web.Response(text="bye")
        resp.force_close()
        return resp

    app = web.Application(middlewares=[peers.middleware])
    app.router.add_get("/", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    for _ in range(3):
        assert await fetch(pool) == (200, b"bye")
    assert peers.connections == 3


async def test_connection_close_from_request_is_not_reused(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A request that carries Connection: close does not leave its connection in the pool."""
    counter: list[int] = []
    pool = pools(await raw_server(keep_open_server(counter, close_header=False)))
    for _ in range(2):
        resp = await pool.request("GET", "/", [("Host", "a"), ("Connection", "close")], None, **_timeouts())
        assert await read_all(resp) == b"hello"
    assert len(counter) == 2


async def test_partially_read_response_is_not_reused(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """Closing a response before its body was read to the end discards the connection."""
    peers = Peers()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * 1_000_000)

    app = web.Application(middlewares=[peers.middleware])
    app.router.add_get("/", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts())
    assert await resp.read()
    resp.close()
    assert await fetch(pool) == (200, b"z" * 1_000_000)
    assert peers.connections == 2


async def test_connection_close_header_alone_prevents_reuse(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """Connection: close from the upstream stops reuse even when the server leaves the socket open."""
    counter: list[int] = []
    pool = pools(await raw_server(keep_open_server(counter, close_header=True)))
    for _ in range(3):
        assert await fetch(pool) == (200, b"hello")
    assert len(counter) == 3


async def test_unread_complete_response_is_not_reused(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A response closed before the caller read its body is not reused, even if it had fully arrived."""
    counter: list[int] = []
    pool = pools(await raw_server(keep_open_server(counter, close_header=False)))
    # keep_open_server writes head and body at once, so the whole body arrived with the head: no need to wait
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts())
    resp.close()
    assert await fetch(pool) == (200, b"hello")
    assert await fetch(pool) == (200, b"hello")
    assert len(counter) == 2


async def test_idle_connection_closed_by_server_is_dropped(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A pooled connection the server closed while idle is noticed and not used again."""
    noticed = asyncio.Event()
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.write_eof()  # the server's FIN; the client closing its end in turn says it noticed
        assert await reader.read() == b""
        noticed.set()

    pool = pools(await raw_server(handler))
    assert await fetch(pool) == (200, b"ok")
    await asyncio.wait_for(noticed.wait(), T)
    assert await fetch(pool, retry_stale=False) == (200, b"ok")
    assert requests == 2


async def test_idle_timeout_closes_connections(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """A connection idle longer than idle_timeout is closed; the next request opens a new one."""
    peers = Peers()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[peers.middleware])
    app.router.add_get("/", handler)
    pool = pools(url_of(await aiohttp_server(app)), idle_timeout=0.05)
    await fetch(pool)
    await fetch(pool)
    await wait_until(lambda: peers.transports[-1].is_closing())  # the pool closed it once idle past the timeout
    await fetch(pool)
    assert peers.connections == 2


# Request writing


async def test_streamed_body_of_unknown_length_goes_chunked(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """A request body stream without a length is sent chunked and arrives intact."""
    seen: dict[str, Any] = {}
    first_piece = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        seen["te"] = request.headers.get("Transfer-Encoding")
        seen["cl"] = request.headers.get("Content-Length")
        start = await request.content.readany()
        first_piece.set()
        seen["body"] = start + await request.content.read()
        return web.Response(text="got")

    async def body() -> AsyncIterator[bytes]:
        yield b"alpha-"
        yield b""  # an empty piece must not end the chunked body
        await asyncio.wait_for(first_piece.wait(), T)  # the rest goes out once the server has the start
        yield b"beta-" * 20_000
        yield b"gamma"

    app = web.Application()
    app.router.add_post("/", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    assert await fetch(pool, method="POST", body=body()) == (200, b"got")
    assert seen == {"te": "chunked", "cl": None, "body": b"alpha-" + b"beta-" * 20_000 + b"gamma"}


async def test_exactly_one_framing_header(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """Each body kind reaches the server with exactly the one framing header it needs, and the headers verbatim."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (got := await read_request(reader)) is not None:
            heads.append(got[0])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(got[1])).encode() + b"\r\n\r\n" + got[1])
            await writer.drain()

    async def stream() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"de"

    pool = pools(await raw_server(handler))
    assert await fetch(pool, method="POST", body=b"hello") == (200, b"hello")
    assert await fetch(pool, method="GET") == (200, b"")
    assert await fetch(pool, method="POST") == (200, b"")
    assert await fetch(pool, method="DELETE", body=b"") == (200, b"")
    assert await fetch(pool, method="PUT", body=stream(), content_length=5) == (200, b"abcde")
    assert await fetch(pool, method="PATCH", body=stream()) == (200, b"abcde")

    def framing(head: bytes) -> list[bytes]:
        lines = head.lower().split(b"\r\n")
        return [line for line in lines if line.startswith((b"content-length:", b"transfer-encoding:"))]

    assert [framing(h) for h in heads] == [
        [b"content-length: 5"],
        [],
        [b"content-length: 0"],
        [],
        [b"content-length: 5"],
        [b"transfer-encoding: chunked"],
    ]
    assert heads[0] == b"POST / HTTP/1.1\r\nHost: upstream\r\nContent-Length: 5\r\n\r\n"


@pytest.mark.parametrize(("pieces", "declared"), [([b"abc", b"def"], 4), ([b"ab"], 5)])
async def test_streamed_body_of_wrong_length_fails(
    pieces: list[bytes],
    declared: int,
    raw_server: Callable[[RawHandler], Awaitable[URL]],
    pools: Callable[..., UpstreamPool],
) -> None:
    """A stream longer or shorter than its declared length fails with UpstreamError after sending."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    pool = pools(await raw_server(handler))
    with pytest.raises(UpstreamError, match="declared Content-Length") as info:
        await fetch(pool, method="PUT", body=stream(), content_length=declared)
    assert info.value.sent


async def test_header_with_newline_is_refused(pools: Callable[..., UpstreamPool]) -> None:
    """A header value holding CR/LF is refused before anything is sent (no header injection)."""
    pool = pools(URL("http://127.0.0.1:9"))
    with pytest.raises(UpstreamError, match="CR or LF") as info:
        await pool.request("GET", "/", [("X-A", "1\r\nX-Evil: 1")], None, **_timeouts())
    assert not info.value.sent


async def test_early_response_while_uploading(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A final response that arrives before the request body is complete is returned; the connection is not reused."""
    connections = 0
    responded = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\n\r\nearly")
            await writer.drain()
            responded.set()
        while await read_request(reader) is not None:  # drains the upload's chunks, then serves later requests
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        yield b"part one"
        await asyncio.wait_for(responded.wait(), T)
        # Stays: the case under test is a response that arrives before the body ends, so the pool must have read
        # the early head before the last piece goes out; nothing public says when it has (the protocol's own
        # state), and the server's event only says the head was sent.
        await asyncio.sleep(0.05)
        yield b"part two"

    pool = pools(await raw_server(handler))
    assert await fetch(pool, method="POST", body=upload()) == (202, b"early")
    assert await fetch(pool) == (200, b"ok")
    assert connections == 2


def test_pool_checks_its_url() -> None:
    """An https pool builds a default TLS context; other schemes and hostless URLs are refused."""
    UpstreamPool(URL("https://legacy.example"))
    with pytest.raises(ValueError, match="http or https"):
        UpstreamPool(URL("ftp://legacy.example"))
    with pytest.raises(ValueError, match="no host"):
        UpstreamPool(URL("http:///path"))


# Failures


async def test_connect_refused(pools: Callable[..., UpstreamPool]) -> None:
    """A refused connection raises UpstreamConnectError with nothing sent."""
    pool = pools(URL(f"http://127.0.0.1:{dead_port()}"))
    with pytest.raises(UpstreamConnectError) as info:
        await fetch(pool)
    assert (info.value.sent, info.value.responded, info.value.kind) == (False, False, "connect")


async def test_head_timeout(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """No response head within read_timeout raises UpstreamTimeout, sent but not responded."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    pool = pools(await raw_server(handler))
    with pytest.raises(UpstreamTimeout) as info:
        await fetch(pool, read_timeout=0.2)
    assert (info.value.sent, info.value.responded) == (True, False)


async def test_body_stall_timeout(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A body that stops arriving for read_timeout makes read() raise UpstreamTimeout, responded."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        for _ in range(3):  # trickle inside the timeout first: gaps, not the total, are limited
            await asyncio.sleep(0.1)  # stays: a gap shorter than the read timeout is the behaviour under test
            writer.write(b".")
            await writer.drain()
        await reader.read()

    pool = pools(await raw_server(handler))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts(read_timeout=0.25))
    with pytest.raises(UpstreamTimeout) as info:
        await read_all(resp)
    assert info.value.responded


@pytest.mark.parametrize("rst", [False, True])
async def test_mid_body_reset(
    rst: bool, raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A connection closed (FIN or RST) before the body is complete makes read() raise UpstreamReset."""
    some_read = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly-some")
        await writer.drain()
        await asyncio.wait_for(some_read.wait(), T)  # cut the body once the client has read what came
        if rst:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort() if rst else writer.close()

    pool = pools(await raw_server(handler))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts())
    assert await resp.read() == b"only-some"
    some_read.set()
    with pytest.raises(UpstreamReset) as info:
        await read_all(resp)
    assert (info.value.sent, info.value.responded) == (True, True)


async def test_truncated_chunked_body_is_a_reset(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A chunked body cut off before its last chunk raises UpstreamReset, never a short clean end."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()

    pool = pools(await raw_server(handler))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts())
    with pytest.raises(UpstreamReset):
        await read_all(resp)


async def test_close_before_head_is_a_reset(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A server that closes after a partial head raises UpstreamReset, sent and responded."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")

    pool = pools(await raw_server(handler))
    with pytest.raises(UpstreamReset) as info:
        await fetch(pool)
    assert (info.value.sent, info.value.responded) == (True, True)


async def test_malformed_response_is_a_reset(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """Bytes that are not an HTTP response raise UpstreamReset naming the malformed response."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await reader.read()

    pool = pools(await raw_server(handler))
    with pytest.raises(UpstreamReset, match="malformed response"):
        await fetch(pool)


# Stale connections


def stale_server(log: list[bytes]) -> RawHandler:
    """Answers the first request on each connection; on a second one it closes without answering."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await read_request(reader)
        assert got is not None
        log.append(got[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        got = await read_request(reader)
        if got is not None:
            log.append(got[1])

    return handler


async def test_stale_connection_is_retried(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """With retry_stale, an idempotent request on a reused connection closed before any response byte is retried
    on a new one."""
    log: list[bytes] = []
    pool = pools(await raw_server(stale_server(log)))
    assert await fetch(pool, method="PUT", body=b"one") == (200, b"ok")
    assert await fetch(pool, method="PUT", body=b"two", retry_stale=True) == (200, b"ok")
    assert log == [b"one", b"two", b"two"]


async def test_stale_connection_post_is_not_resent(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """Even with retry_stale, a POST that went out on a connection that then closed is not sent again (the
    upstream may have executed it): UpstreamReset, and the server saw it once."""
    log: list[bytes] = []
    pool = pools(await raw_server(stale_server(log)))
    assert await fetch(pool, method="POST", body=b"one") == (200, b"ok")
    with pytest.raises(UpstreamReset) as info:
        await fetch(pool, method="POST", body=b"two", retry_stale=True)
    assert (info.value.sent, info.value.responded) == (True, False)
    # No wait: stale_server logs a request before its close reaches the pool, and the pool resends only inside
    # request(), so once request() has raised the log is final.
    assert log == [b"one", b"two"]


async def test_stale_connection_without_retry_fails(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """Without retry_stale the same race raises UpstreamReset and the server saw the request once."""
    log: list[bytes] = []
    pool = pools(await raw_server(stale_server(log)))
    assert await fetch(pool, method="POST", body=b"one") == (200, b"ok")
    with pytest.raises(UpstreamReset) as info:
        await fetch(pool, method="POST", body=b"two", retry_stale=False)
    assert (info.value.sent, info.value.responded) == (True, False)
    # No wait: stale_server logs a request before its close reaches the pool, and the pool resends only inside
    # request(), so once request() has raised the log is final.
    assert log == [b"one", b"two"]


async def test_retry_opens_a_fresh_connection(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """The stale retry skips other idle connections (they may be dead too) and opens a new one at the limit."""
    log: list[bytes] = []
    pool = pools(await raw_server(stale_server(log)), max_connections=2)
    first, second = await asyncio.gather(
        pool.request("POST", "/", [("Host", "a")], b"a", **_timeouts()),
        pool.request("POST", "/", [("Host", "a")], b"b", **_timeouts()),
    )
    assert await read_all(first) == await read_all(second) == b"ok"
    # Two idle connections, both answered once: each closes on its next request. With one retry that lands on a
    # new connection, the request still succeeds.
    assert await fetch(pool, method="PUT", body=b"c") == (200, b"ok")
    assert sorted(log) == [b"a", b"b", b"c", b"c"]


async def test_streamed_body_is_never_retried(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A streamed body is not retried even with retry_stale: it cannot be replayed."""
    log: list[bytes] = []

    async def stream() -> AsyncIterator[bytes]:
        yield b"two"

    pool = pools(await raw_server(stale_server(log)))
    assert await fetch(pool, method="POST", body=b"one") == (200, b"ok")
    with pytest.raises(UpstreamReset):
        await fetch(pool, method="POST", body=stream(), retry_stale=True)
    assert log == [b"one", b"two"]  # final once request() has raised (see above)


# Pool limits and close


async def test_max_connections_under_concurrency(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """Concurrent requests beyond max_connections wait for a free connection; all complete."""
    peers = Peers()
    in_flight = 0
    peak = 0
    all_busy = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 3:
            all_busy.set()
        await asyncio.wait_for(all_busy.wait(), T)  # the first requests wait until every connection is busy
        in_flight -= 1
        return web.Response(text=request.path)

    app = web.Application(middlewares=[peers.middleware])
    app.router.add_get("/{n}", handler)
    pool = pools(url_of(await aiohttp_server(app)), max_connections=3)
    results = await asyncio.gather(*(fetch(pool, f"/{n}") for n in range(15)))
    assert results == [(200, f"/{n}".encode()) for n in range(15)]
    assert peak == 3
    assert peers.connections == 3


async def test_waiting_for_a_slot_is_bounded_by_pool_timeout(
    aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]
) -> None:
    """With every connection busy, a request gives up after pool_timeout (not connect_timeout) with
    UpstreamPoolTimeout, kind pool_timeout: nothing was sent."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    pool = pools(url_of(await aiohttp_server(app)), max_connections=1)
    held = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts())
    with pytest.raises(UpstreamPoolTimeout, match="no free connection") as info:
        await fetch(pool, connect_timeout=30.0, pool_timeout=0.1)
    assert not info.value.sent
    assert info.value.kind == "pool_timeout"
    assert not isinstance(info.value, UpstreamConnectError)
    assert await read_all(held) == b"ok"
    assert await fetch(pool) == (200, b"ok")


async def test_pool_close(aiohttp_server: ServerFactory, pools: Callable[..., UpstreamPool]) -> None:
    """close() ends idle and busy connections; a busy body raises UpstreamReset; new requests fail to connect."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 10
        await resp.prepare(request)
        await resp.write(b"12345")
        if request.path == "/slow":
            await asyncio.wait_for(release.wait(), 5)
        await resp.write(b"67890")
        return resp

    app = web.Application()
    app.router.add_get("/{p}", handler)
    pool = pools(url_of(await aiohttp_server(app)))
    assert await fetch(pool, "/fast") == (200, b"1234567890")
    busy = await pool.request("GET", "/slow", [("Host", "a")], None, **_timeouts())
    assert await busy.read() == b"12345"
    await pool.close()
    with pytest.raises(UpstreamReset):
        await read_all(busy)
    with pytest.raises(UpstreamConnectError):
        await fetch(pool, "/fast")
    release.set()


async def test_large_body_with_slow_reader(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """A body far larger than the read buffer arrives intact to a slow reader, and the connection is reused."""
    size = 3_000_000
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for i in range(size // 100_000):
                writer.write(bytes([65 + i % 26]) * 100_000)
                await writer.drain()

    pool = pools(await raw_server(handler))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts(read_timeout=0.5))
    total = bytearray()
    while chunk := await resp.read():
        total += chunk
        if len(total) < 600_000:
            await asyncio.sleep(0.002)  # stays: a slow reader is the case under test (the buffer fills, reading pauses)
    resp.close()
    assert len(total) == size
    assert total[:100_000] == b"A" * 100_000
    assert total[-1:] == bytes([65 + (size // 100_000 - 1) % 26])
    assert (await fetch(pool))[0] == 200
    assert connections == 1


async def test_slow_reader_does_not_trip_the_read_timeout(
    raw_server: Callable[[RawHandler], Awaitable[URL]], pools: Callable[..., UpstreamPool]
) -> None:
    """Time the caller spends not reading (socket paused by backpressure) does not count as upstream silence."""
    size = 2_000_000

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"s" * size)
        await writer.drain()
        await reader.read()

    pool = pools(await raw_server(handler))
    resp = await pool.request("GET", "/", [("Host", "a")], None, **_timeouts(read_timeout=0.1))
    await asyncio.sleep(0.3)  # stays: not reading for longer than the read timeout is the behaviour under test
    assert len(await read_all(resp)) == size


# uvloop


def test_works_on_uvloop() -> None:
    """The same pool serves keep-alive, chunked, HEAD and reset cases on a uvloop event loop."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        async def chunked(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for part in (b"a", b"b", b"c"):
                await resp.write(part)
            await resp.write_eof()
            return resp

        async def plain(request: web.Request) -> web.Response:
            return web.Response(body=b"p" * 70_000)

        app = web.Application()
        app.router.add_get("/chunked", chunked)
        app.router.add_get("/plain", plain)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        pool = UpstreamPool(URL(f"http://127.0.0.1:{port}"))
        try:
            assert await fetch(pool, "/chunked") == (200, b"abc")
            assert await fetch(pool, "/plain") == (200, b"p" * 70_000)
            assert await fetch(pool, "/plain", method="HEAD") == (200, b"")
            assert await fetch(pool, "/plain") == (200, b"p" * 70_000)
        finally:
            await pool.close()
            await runner.cleanup()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def _timeouts(**kw: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"content_length": None, "connect_timeout": T, "read_timeout": T, "retry_stale": True}
    params.update(kw)
    return params
