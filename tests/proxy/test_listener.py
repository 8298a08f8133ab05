"""The proxy listener switch (listen.server, $STRANGLER_SERVER, start_proxy(server=...)) and what the fast listener
changes: requests on one connection are served in that connection's own task."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import SERVER_ENV
from proxy.config.model import ConfigError, Server
from proxy.events import ExchangeObserver, ExchangeStart
from tests.proxy.app_fixtures import backend_app, running_proxy, url, write_config


@pytest.fixture
async def legacy(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(backend_app("legacy"))
    return server


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
    path.write_text(path.read_text().replace("port: 0}", "port: 0, server: fast}", 1), encoding="utf-8")
    async with running_proxy(path) as running:
        assert running.listener == "fast"


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
