"""Graceful shutdown: drain in-flight requests, refuse new ones, close listeners; signals in a real process."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import start_proxy
from proxy.events import ExchangeObserver, ExchangeStart
from tests.proxy.app_fixtures import admin_url, free_ports, hits, url, wait_until, write_config
from tests.serve_process import SERVE, child_process, ready_while_running


class ClosingListener:
    """A listener with an async close, to check shutdown flushes it."""

    def __init__(self) -> None:
        self.closed = False

    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        return None

    async def aclose(self) -> None:
        self.closed = True


async def test_drain_finishes_in_flight_and_refuses_new(legacy: TestServer, tmp_path: Path) -> None:
    """During stop a slow request completes, /readyz says 503, new connections are refused, listeners close."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    listener = ClosingListener()
    running = await start_proxy(path, port=0, admin_port=0, watch=False, listeners=[listener])
    async with aiohttp.ClientSession() as client:
        slow = asyncio.ensure_future(client.get(url(running, "/slow?sleep=0.6")))
        await wait_until(lambda: len(hits(legacy)) == 1)  # the slow request is in flight at the back end
        stopping = asyncio.ensure_future(running.stop(drain_timeout=5.0))
        await wait_until(lambda: running.state.draining)
        async with client.get(admin_url(running, "/readyz")) as resp:
            assert resp.status == 503
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh:
                await fresh.get(url(running, "/new"))
        resp = await slow
        assert resp.status == 200
        assert (await resp.json())["path"] == "/slow?sleep=0.6"
        resp.release()
        await stopping
    assert listener.closed


async def test_drain_timeout_cuts_off_stragglers(legacy: TestServer, tmp_path: Path) -> None:
    """A request longer than the drain timeout is cut off and stop() still returns."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    running = await start_proxy(path, port=0, admin_port=0, watch=False)
    async with aiohttp.ClientSession() as client:
        slow = asyncio.ensure_future(client.get(url(running, "/stuck?sleep=10")))
        await wait_until(lambda: len(hits(legacy)) == 1)
        async with asyncio.timeout(5.0):
            await running.stop(drain_timeout=0.3)
        with pytest.raises(aiohttp.ClientError):
            await slow


async def _generation_at_least(port: int, generation: int) -> bool:
    async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/config") as resp:
        return int((await resp.json())["generation"]) >= generation


async def test_serve_reloads_on_sighup_and_exits_cleanly_on_sigterm(legacy: TestServer, tmp_path: Path) -> None:
    """The real serve(): SIGHUP reloads the config, SIGTERM drains and exits with code 0."""
    assert legacy.port is not None
    proxy_port, admin_port = free_ports(2)
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    command = [sys.executable, "-c", SERVE, str(path), str(proxy_port), str(admin_port)]
    async with child_process(command) as process:
        await wait_until(lambda: ready_while_running(process, admin_port), limit=20.0)
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{proxy_port}/x") as resp:
            assert resp.status == 200
        process.send_signal(signal.SIGHUP)
        await wait_until(lambda: _generation_at_least(admin_port, 2), limit=10.0)
        process.send_signal(signal.SIGTERM)
        await wait_until(lambda: process.poll() is not None, limit=20.0)
        assert process.returncode == 0, process.stderr.read() if process.stderr else b""
