"""Client-side protections: head deadline (slowloris), header limits, connection cap — all before any back end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from proxy.app import RunningProxy
from tests.proxy.app_fixtures import hits, proxy_in_front_of, raw_exchange, running_proxy, status_of, write_config

LIMITS = """\
limits:
  header_timeout: 500ms
  max_headers: 20
  max_line_size: 2KiB
  max_header_size: 4KiB
  max_connections: 3
  body_timeout: 500ms
"""


@pytest.fixture
async def proxy(legacy: TestServer, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_in_front_of(legacy, tmp_path, LIMITS) as running:
        yield running


async def _closed_by_server(reader: asyncio.StreamReader, limit: float = 5.0) -> bytes:
    """Read until EOF; returns what arrived before the server closed the connection."""
    data = b""
    async with asyncio.timeout(limit):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(4096):
                data += chunk
    return data


async def test_partial_head_is_closed_after_header_timeout(proxy: RunningProxy, legacy: TestServer) -> None:
    """A connection that sends half a request head is closed once header_timeout passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await _closed_by_server(reader) == b""
    finally:
        writer.close()
    assert hits(legacy) == []
    assert proxy.state.metrics.rejected.get(("header_timeout",)) == 1


async def test_trickled_head_is_closed_too(proxy: RunningProxy, legacy: TestServer) -> None:
    """Sending a header byte at a time does not extend the deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    closed = False
    try:
        writer.write(b"GET / HTTP/1.1\r\n")
        async with asyncio.timeout(5.0):
            for _ in range(200):
                await asyncio.sleep(0.05)
                if reader.at_eof():
                    closed = True
                    break
                try:
                    writer.write(b"X")
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.001):
                        if await reader.read(1) == b"":
                            closed = True
                            break
    finally:
        writer.close()
    assert closed
    assert hits(legacy) == []


async def test_second_head_on_keepalive_has_a_deadline(proxy: RunningProxy, legacy: TestServer) -> None:
    """After a complete request, a partial next head on the same connection is also cut off."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.write(b"GET /two HTTP/1.1\r\nHost:")
        await writer.drain()
        await _closed_by_server(reader)
    finally:
        writer.close()
    assert [h.path for h in hits(legacy)] == ["/one"]


async def test_complete_requests_are_not_cut(proxy: RunningProxy) -> None:
    """A prompt client is unaffected by the head deadline."""
    response = await raw_exchange(proxy.proxy_port, b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200


async def test_too_many_headers_is_refused(proxy: RunningProxy, legacy: TestServer) -> None:
    """More header lines than max_headers is a 400 that never reaches the back end."""
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    response = await raw_exchange(proxy.proxy_port, b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    assert status_of(response) in (400, 431)
    assert hits(legacy) == []


async def test_too_long_request_line_is_refused(proxy: RunningProxy, legacy: TestServer) -> None:
    """A request line beyond max_line_size is refused without reaching the back end."""
    response = await raw_exchange(proxy.proxy_port, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) in (400, 414, 431)
    assert hits(legacy) == []


async def test_too_long_header_line_is_refused(proxy: RunningProxy, legacy: TestServer) -> None:
    """A single header beyond max_line_size is refused without reaching the back end."""
    response = await raw_exchange(proxy.proxy_port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n")
    assert status_of(response) in (400, 431)
    assert hits(legacy) == []


async def test_headers_over_total_size_are_431(proxy: RunningProxy, legacy: TestServer) -> None:
    """Header lines each within limits but over max_header_size together are a 431."""
    extra = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(6))
    response = await raw_exchange(
        proxy.proxy_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"
    )
    assert status_of(response) == 431
    assert b"X-Request-Id" in response
    assert hits(legacy) == []


async def test_connections_beyond_max_are_refused(legacy: TestServer, tmp_path: Path) -> None:
    """With max_connections 2, a third concurrent connection is refused; one closing frees a place."""
    assert legacy.port is not None
    settings = "limits: {max_connections: 2, header_timeout: 10s}\n"
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port, settings=settings)
    async with running_proxy(path, watch=False) as running:
        port = running.proxy_port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with contextlib.suppress(ConnectionError):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = await _closed_by_server(reader)
            writer.close()
            assert refused == b"" or status_of(refused) == 503
            assert hits(legacy) == []
            assert running.state.metrics.rejected.get(("max_connections",)) == 1
        finally:
            _, first = held.pop()
            first.close()
        async with asyncio.timeout(5.0):
            while True:
                with contextlib.suppress(ConnectionError):
                    response = await raw_exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if response and status_of(response) == 200:
                        break
                await asyncio.sleep(0.05)
        for _, writer in held:
            writer.close()


@pytest.mark.parametrize(
    ("declared", "note"),
    [(100, "small body, read before the upstream is contacted"), (200_000, "large body, streamed upstream")],
)
async def test_stalled_request_body_gets_408_and_is_closed(
    proxy: RunningProxy, legacy: TestServer, declared: int, note: str
) -> None:
    """A client that stops sending its body mid-way gets 408 after body_timeout and its connection is closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode()
        writer.write(head + b"x" * 10)
        await writer.drain()
        answer = await _closed_by_server(reader)
    finally:
        writer.close()
    assert status_of(answer) == 408, note
    assert b"request_body_timeout" in answer
    # No back end ever received the incomplete request, and the proxy still serves the next client.
    assert [hit.path for hit in hits(legacy)] == []
    assert status_of(await raw_exchange(proxy.proxy_port, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
