"""A websocket handshake that does not switch (the back end refuses it or cannot be reached) is answered with
`Connection: close` and the connection closes: bytes the client sends after its Upgrade are never read as
requests (README "HTTP behaviour")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from proxy.app import RunningProxy
from tests.proxy.app_fixtures import dead_port, hits, running_proxy, write_config

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
AFTER = b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture
async def proxy(legacy: TestServer, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    async with running_proxy(path, watch=False) as running:
        yield running


async def _exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """What the proxy answered to `data`, and whether it closed the connection after (within 5 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(data)
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(5.0):
                while chunk := await reader.read(65536):
                    received += chunk
        return received, reader.at_eof()
    finally:
        writer.close()


async def test_a_handshake_the_back_end_refuses_closes_the_connection(proxy: RunningProxy, legacy: TestServer) -> None:
    """The back end answers the handshake 200 without switching: 502 with Connection: close, then the connection
    closes, and the request sent after the Upgrade never reaches the back end."""
    data, closed = await _exchange(proxy.proxy_port, UPGRADE + AFTER)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 502 ")
    assert b"connection: close" in head
    assert closed
    assert data.count(b"HTTP/1.1 ") == 1
    assert [h.path for h in hits(legacy)] == ["/ws"]


async def test_a_handshake_to_an_unreachable_back_end_closes_the_connection(tmp_path: Path) -> None:
    """No back end listening: 502 with Connection: close, and the connection closes."""
    port = dead_port()
    async with running_proxy(write_config(tmp_path / "routes.yaml", legacy=port, new=port), watch=False) as proxy:
        data, closed = await _exchange(proxy.proxy_port, UPGRADE + AFTER)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 502 ")
    assert b"connection: close" in head
    assert closed
