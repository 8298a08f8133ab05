"""Hot reload: file watching, bad files kept out, atomic swaps under load, pools across reloads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.proxy.app_fixtures import admin_url, backend_app, running_proxy, url, wait_until, write_config


def _routes(mode: str) -> str:
    return f"""\
  - id: orders
    match: {{path: "/api/orders/**"}}
    mode: {mode}
"""


@dataclass
class Backends:
    legacy: TestServer
    new: TestServer

    @property
    def ports(self) -> tuple[int, int]:
        assert self.legacy.port is not None
        assert self.new.port is not None
        return self.legacy.port, self.new.port


@pytest.fixture
async def backends(aiohttp_server: Any) -> Backends:
    return Backends(await aiohttp_server(backend_app("legacy")), await aiohttp_server(backend_app("new")))


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:
        yield session


def _write(path: Path, backends: Backends, mode: str, **kwargs: Any) -> Path:
    legacy, new = backends.ports
    return write_config(path, legacy=legacy, new=new, routes=_routes(mode), **kwargs)


async def _side(client: aiohttp.ClientSession, target: str) -> str:
    async with client.get(target) as resp:
        assert resp.status == 200
        return str((await resp.json())["side"])


async def test_file_change_is_picked_up(backends: Backends, tmp_path: Path, client: aiohttp.ClientSession) -> None:
    """Editing routes.yaml flips a route to the new side without a restart."""
    path = _write(tmp_path / "routes.yaml", backends, "legacy")
    async with running_proxy(path, watch_interval=0.2) as running:
        assert await _side(client, url(running, "/api/orders/1")) == "legacy"
        _write(path, backends, "new")
        await wait_until(lambda: running.state.snapshot.generation >= 2)
        assert await _side(client, url(running, "/api/orders/1")) == "new"
        assert running.state.last_reload.trigger == "file"
        assert running.state.metrics.reloads.get(("ok",)) == 1


async def test_invalid_file_keeps_old_config(backends: Backends, tmp_path: Path, client: aiohttp.ClientSession) -> None:
    """A broken edit is refused: traffic keeps the last good routes and /config shows the errors."""
    path = _write(tmp_path / "routes.yaml", backends, "new")
    async with running_proxy(path, watch_interval=0.2) as running:
        path.write_text(path.read_text() + "  - id: broken\n    mode: sideways\n", encoding="utf-8")
        await wait_until(lambda: not running.state.last_reload.ok)
        assert await _side(client, url(running, "/api/orders/1")) == "new"
        async with client.get(admin_url(running, "/config")) as resp:
            data = await resp.json()
        assert data["generation"] == 1
        assert data["last_reload"]["ok"] is False
        assert any("sideways" in error for error in data["last_reload"]["errors"])
        assert running.state.metrics.reloads.get(("failed",)) == 1
        # Fixing the file recovers without a restart.
        _write(path, backends, "legacy")
        await wait_until(lambda: running.state.snapshot.generation >= 2)
        assert running.state.last_reload.ok
        assert await _side(client, url(running, "/api/orders/1")) == "legacy"


async def test_reload_under_load_loses_nothing(
    backends: Backends, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """200 requests in flight while the route's mode flips six times: every one succeeds."""
    path = _write(tmp_path / "routes.yaml", backends, "legacy")
    async with running_proxy(path, watch=False) as running:

        async def one(i: int) -> int:
            async with client.get(url(running, f"/api/orders/{i}?sleep=0.{i % 3 + 1}")) as resp:
                await resp.read()
                return resp.status

        async def flips() -> None:
            for n in range(6):
                _write(path, backends, "new" if n % 2 == 0 else "legacy")
                result = await running.reload()
                assert result.ok
                await asyncio.sleep(0.03)

        statuses, _ = await asyncio.gather(asyncio.gather(*(one(i) for i in range(200))), flips())
        assert statuses == [200] * 200
        assert running.state.snapshot.generation == 7


async def test_pool_survives_reload_when_upstream_unchanged(backends: Backends, tmp_path: Path) -> None:
    """A reload that changes only routes keeps every upstream's connection pool."""
    path = _write(tmp_path / "routes.yaml", backends, "legacy")
    async with running_proxy(path, watch=False) as running:
        before = dict(running.state.pools)
        _write(path, backends, "new")
        assert (await running.reload()).ok
        assert running.state.pools == before


async def test_changed_upstream_gets_new_pool_after_in_flight_request(
    backends: Backends, aiohttp_server: Any, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """Moving the new upstream lets a request in flight on the old one finish; later ones reach the new address."""
    other: TestServer = await aiohttp_server(backend_app("other"))
    path = _write(tmp_path / "routes.yaml", backends, "new")
    async with running_proxy(path, watch=False) as running:
        old_slot = running.state.pools["new"]
        slow = asyncio.ensure_future(_side(client, url(running, "/api/orders/1?sleep=0.4")))
        await asyncio.sleep(0.1)
        assert other.port is not None
        write_config(path, legacy=backends.ports[0], new=other.port, routes=_routes("new"))
        assert (await running.reload()).ok
        assert running.state.pools["new"] is not old_slot
        assert await _side(client, url(running, "/api/orders/2")) == "other"
        assert await slow == "new"


async def test_listen_change_needs_restart(
    backends: Backends, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload that changes the listen address applies the rest and logs that the address needs a restart."""
    path = _write(tmp_path / "routes.yaml", backends, "legacy")
    async with running_proxy(path, watch=False) as running:
        text = path.read_text().replace("listen: {host: 127.0.0.1, port: 0}", "listen: {host: 127.0.0.1, port: 9}")
        path.write_text(text, encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="strangler.reload"):
            assert (await running.reload()).ok
        assert "restart" in caplog.text


async def test_workers_change_needs_restart(
    backends: Backends, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload that changes `workers:` applies the rest and logs that the worker count needs a restart."""
    path = _write(tmp_path / "routes.yaml", backends, "legacy")
    async with running_proxy(path, watch=False) as running:
        path.write_text(path.read_text() + "workers: 3\n", encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="strangler.reload"):
            assert (await running.reload()).ok
        assert "workers changed (1 -> 3): restart strangler to apply it" in caplog.text
