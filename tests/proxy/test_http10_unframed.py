"""An HTTP/1.0 client asking for keep-alive, answered with a body of no known length (the upstream streamed it
chunked, or until it closed): HTTP/1.0 has no chunked framing, so the answer ends when the connection closes. The
proxy closes it right after the body, never holding it open until keepalive_timeout with the client waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.proxy.app_fixtures import running_proxy, write_config

BODY = b"x" * 5000


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(5):
        await resp.write(BODY[:1000])
    await resp.write_eof()
    return resp


async def _close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + BODY)
    await writer.drain()
    writer.close()


@pytest.fixture
async def chunked_port(aiohttp_server: object) -> int:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _chunked)
    server: TestServer = await aiohttp_server(app)  # type: ignore[operator]
    assert server.port is not None
    return server.port


@pytest.fixture
async def close_delimited_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_close_delimited, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _answer(port: int, tmp_path: Path) -> tuple[bytes, float]:
    """The whole answer to an HTTP/1.0 keep-alive request through the proxy, and how long until the proxy closed
    the connection (the keep-alive timeout is 30 s: a wait near it is the hang)."""
    path = write_config(tmp_path / "routes.yaml", legacy=port, new=port, settings="limits: {keepalive_timeout: 30s}")
    async with running_proxy(path, watch=False) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        data = b""
        try:
            writer.write(b"GET /stream HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(10.0):
                    while chunk := await reader.read(65536):
                        data += chunk
        finally:
            writer.close()
        return data, loop.time() - started


@pytest.mark.parametrize("upstream", ["chunked", "close-delimited"])
async def test_http10_keepalive_with_an_unframed_body_closes_after_it(
    upstream: str, chunked_port: int, close_delimited_port: int, tmp_path: Path
) -> None:
    """The answer is HTTP/1.0 without Content-Length, Transfer-Encoding or `Connection: keep-alive`, holds the whole
    body, and the connection closes after it (within 10 s, where the keep-alive timeout is 30 s)."""
    port = chunked_port if upstream == "chunked" else close_delimited_port
    data, took = await _answer(port, tmp_path)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 "), head
    lowered = head.lower()
    assert b"content-length" not in lowered
    assert b"transfer-encoding" not in lowered
    assert b"keep-alive" not in lowered
    assert body == BODY
    assert took < 10.0  # closed by the proxy: the read above gives up at 10 s
