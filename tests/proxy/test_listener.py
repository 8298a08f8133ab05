"""The proxy listener switch (listen.server, $STRANGLER_SERVER, start_proxy(server=...)) and what the fast listener
(strangler's protocol-level listener) changes: requests on one connection are served in that connection's own task,
started at its first request."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_protocol import RequestHandler

from proxy.app import SERVER_ENV
from proxy.config.model import SERVERS, ConfigError, Server
from proxy.events import ExchangeObserver, ExchangeStart
from proxy.listener import ProtocolListener
from tests.proxy.app_fixtures import running_proxy, url, wait_until, write_config


class TaskRecorder:
    """A listener that notes which task told it about each request."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any] | None] = []

    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        self.tasks.append(asyncio.current_task())
        return None


async def _two_requests_on_one_connection(path: Path, server: Server) -> list[asyncio.Task[Any] | None]:
    recorder = TaskRecorder()
    async with running_proxy(path, server=server, listeners=[recorder]) as running:
        assert running.listener == server
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as client:
            for _ in range(2):
                async with client.get(url(running, "/api/x")) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["side"] == "legacy"
    return recorder.tasks


async def test_fast_listener_serves_a_connections_requests_in_one_task(legacy: TestServer, tmp_path: Path) -> None:
    """With server=fast, two requests on one keep-alive connection run in the same task (no Task per request)."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    tasks = await _two_requests_on_one_connection(path, "fast")
    assert len(tasks) == 2
    assert tasks[0] is not None
    assert tasks[0] is tasks[1]


def _serving_tasks() -> list[asyncio.Task[Any]]:
    """The fast listener's per-connection serving tasks now running."""
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "").endswith("_serve_connection")]


async def test_fast_listener_starts_a_connections_task_at_its_first_request_not_at_accept(
    legacy: TestServer, tmp_path: Path
) -> None:
    """With server=fast, an accepted connection that has sent nothing costs no task; its first request starts one
    task, which then serves the connection's later requests too, and ends when the connection closes."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    async with running_proxy(path, server="fast") as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.proxy_port)
        try:
            await asyncio.sleep(0.1)  # accepted by now
            assert _serving_tasks() == []
            request = b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n"
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
            (first,) = _serving_tasks()
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
            assert _serving_tasks() == [first]
        finally:
            writer.close()
        await wait_until(lambda: not _serving_tasks())


async def test_fast_listener_is_a_protocol_of_its_own(legacy: TestServer, tmp_path: Path) -> None:
    """With server=fast, connections are served by strangler's protocol-level listener, not aiohttp's
    RequestHandler (the aiohttp listener's)."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    for server, kind in (("fast", ProtocolListener), ("aiohttp", RequestHandler)):
        async with running_proxy(path, server=server) as running:
            reader, writer = await asyncio.open_connection("127.0.0.1", running.proxy_port)
            try:
                writer.write(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
                await reader.readuntil(b"\r\n\r\n")
                (conn,) = running.connections
                assert isinstance(conn, kind)
                assert isinstance(conn, RequestHandler) == (server == "aiohttp")
            finally:
                writer.close()


async def test_aiohttp_listener_is_kept_with_a_task_per_request(legacy: TestServer, tmp_path: Path) -> None:
    """With server=aiohttp, the previous listener still serves, one Task per request."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    tasks = await _two_requests_on_one_connection(path, "aiohttp")
    assert len(tasks) == 2
    assert tasks[0] is not tasks[1]


async def test_listen_server_in_the_config_chooses_the_listener(
    legacy: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """listen.server in routes.yaml picks the listener when neither the caller nor $STRANGLER_SERVER names one."""
    monkeypatch.delenv(SERVER_ENV, raising=False)
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    path.write_text(path.read_text().replace("port: 0}", "port: 0, server: aiohttp}", 1), encoding="utf-8")
    async with running_proxy(path) as running:
        assert running.listener == "aiohttp"
    path.write_text(path.read_text().replace("port: 0, server: aiohttp}", "port: 0}", 1), encoding="utf-8")
    async with running_proxy(path) as running:
        assert running.listener == "fast"  # the default


async def test_strangler_server_env_overrides_the_config(
    legacy: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$STRANGLER_SERVER overrides listen.server; an unknown name is a config error naming the known ones."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    monkeypatch.setenv(SERVER_ENV, "aiohttp")
    async with running_proxy(path) as running:
        assert running.listener == "aiohttp"
    monkeypatch.setenv(SERVER_ENV, "fast")
    async with running_proxy(path) as running:
        assert running.listener == "fast"
    monkeypatch.setenv(SERVER_ENV, "nginx")
    with pytest.raises(ConfigError, match="unknown server 'nginx' \\(known: fast, aiohttp\\)"):
        async with running_proxy(path):
            pass


def streaming_backend() -> web.Application:
    """A back end that echoes a request body's size and streams a large chunked answer on request."""
    app = web.Application()

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(STREAM_CHUNKS):
            await resp.write(bytes([i % 256]) * STREAM_CHUNK)
        await resp.write_eof()
        return resp

    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    return app


STREAM_CHUNK = 64 * 1024
STREAM_CHUNKS = 64  # 4 MiB each way: past every buffer's high-water mark, so reading pauses and resumes


async def _chunks() -> AsyncIterator[bytes]:
    for i in range(STREAM_CHUNKS):
        yield bytes([i % 256]) * STREAM_CHUNK


def _expected_digest() -> str:
    digest = hashlib.sha256()
    for i in range(STREAM_CHUNKS):
        digest.update(bytes([i % 256]) * STREAM_CHUNK)
    return digest.hexdigest()


@pytest.mark.parametrize("server", SERVERS)
async def test_large_chunked_bodies_stream_both_ways_intact(
    aiohttp_server: Any, tmp_path: Path, server: Server
) -> None:
    """A 4 MiB chunked upload and a 4 MiB chunked download pass through either listener byte for byte, read slowly."""
    backend = await aiohttp_server(streaming_backend())
    path = write_config(tmp_path / "routes.yaml", legacy=backend.port, new=backend.port)
    async with running_proxy(path, server=server) as running, aiohttp.ClientSession() as client:
        async with client.post(url(running, "/upload"), data=_chunks()) as resp:
            assert resp.status == 200
            assert await resp.json() == {"size": STREAM_CHUNK * STREAM_CHUNKS, "sha256": _expected_digest()}
        async with client.get(url(running, "/download")) as resp:
            assert resp.status == 200
            assert resp.headers["Transfer-Encoding"] == "chunked"
            digest = hashlib.sha256()
            size = 0
            async for chunk in resp.content.iter_chunked(8192):
                digest.update(chunk)
                size += len(chunk)
                if size % (1024 * 1024) < 8192:
                    await asyncio.sleep(0.01)  # a slow reader: the proxy must pause the back end, not buffer it all
            assert (size, digest.hexdigest()) == (STREAM_CHUNK * STREAM_CHUNKS, _expected_digest())


async def test_reload_changing_listen_server_says_a_restart_applies_it(
    legacy: TestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload that changes only listen.server warns that a restart applies it, and names no address change."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    async with running_proxy(path, server="fast", watch=False) as running:
        path.write_text(path.read_text().replace("port: 0}", "port: 0, server: aiohttp}", 1), encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="strangler.reload"):
            result = await running.reload("test")
        assert result.ok
        assert "listen.server changed (fast -> aiohttp): restart strangler to apply it" in caplog.text
        assert "listen address changed" not in caplog.text
