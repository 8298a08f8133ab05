"""The keep-alive deadline closes idle connections only: never one still reading (and dropping) the body of a
request it answered, so a client still uploading gets to read its answer and what it pipelined after the body."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from proxy.app import RunningProxy
from tests.proxy.app_fixtures import hits, proxy_in_front_of

# One deadline short (1 s) at a time, the other long: the keep-alive deadline, or the head deadline.
SHORT = {
    "keepalive": "limits:\n  keepalive_timeout: 1s\n  header_timeout: 5s\n  body_timeout: 5s\n",
    "head": "limits:\n  keepalive_timeout: 10s\n  header_timeout: 1s\n  body_timeout: 5s\n",
}


@pytest.fixture
async def proxy(legacy: TestServer, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_in_front_of(legacy, tmp_path, SHORT["keepalive"]) as running:
        yield running


@pytest.fixture
async def head_proxy(legacy: TestServer, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_in_front_of(legacy, tmp_path, SHORT["head"]) as running:
        yield running


async def _read_all(reader: asyncio.StreamReader, limit: float) -> bytes:
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                data += chunk
    return data


@pytest.mark.parametrize("deadline", SHORT)
async def test_a_refused_upload_still_arriving_past_a_deadline_is_drained(
    deadline: str, legacy: TestServer, tmp_path: Path
) -> None:
    """A 400 (bad path) answered while its 30,000-byte body is still arriving over 2.4 s, past a 1 s keep-alive or
    head deadline: the connection is neither idle nor reading a head, so the body is read to its end and the request
    pipelined behind it is forwarded and answered."""
    async with proxy_in_front_of(legacy, tmp_path, SHORT[deadline]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
        try:
            writer.write(b"POST /..;/x HTTP/1.1\r\nHost: a\r\nContent-Length: 30000\r\n\r\n" + b"a" * 10_000)
            await writer.drain()
            for _ in range(2):
                await asyncio.sleep(1.2)
                writer.write(b"a" * 5_000)
                await writer.drain()
            writer.write(b"a" * 10_000 + b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await _read_all(reader, 5.0)
        finally:
            writer.close()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert data.count(b"HTTP/1.1 ") == 2, data
    assert b"HTTP/1.1 200 " in data
    assert [h.path for h in hits(legacy)] == ["/second"]


async def test_an_idle_connection_is_still_closed_at_the_keepalive_deadline(proxy: RunningProxy) -> None:
    """After its answer, a connection that sends nothing more is closed once keepalive_timeout (1 s) passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _read_all(reader, 4.0)
        assert reader.at_eof()
        assert loop.time() - started < 3.5
    finally:
        writer.close()


async def test_a_head_that_trickles_in_after_a_drained_upload_is_still_cut_at_the_head_deadline(
    head_proxy: RunningProxy, legacy: TestServer
) -> None:
    """Once the refused body has ended, the next bytes start a head again: a head that then stalls is closed at
    header_timeout (1 s), long before keepalive_timeout (10 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", head_proxy.proxy_port)
    try:
        writer.write(b"POST /..;/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(b"GET /stalled HTTP/1.1\r\nHo")
        await writer.drain()
        await _read_all(reader, 6.0)
        assert reader.at_eof()
        assert loop.time() - started < 4.0
    finally:
        writer.close()
    assert hits(legacy) == []
