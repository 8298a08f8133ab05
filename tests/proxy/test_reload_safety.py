"""Config safety on reload: half-written files wait, a file that would remove every route is refused unless it says
so, a missing file is reported at once, and the last good config keeps serving (issue 10, item 5)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from tests.proxy.app_fixtures import admin_url, running_proxy, url, wait_until, write_config

ADMIN_ROUTE = """\
  - id: admin
    match: {path: "/admin/**"}
    mode: new
"""


OTHER_ROUTE = """\
  - id: other
    match: {path: "/other/**"}
    mode: new
"""


async def _side(client: aiohttp.ClientSession, target: str) -> str:
    async with client.get(target) as resp:
        assert resp.status == 200
        return str((await resp.json())["side"])


async def _metric(client: aiohttp.ClientSession, target: str, name: str) -> float | None:
    async with client.get(target) as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_file_cut_before_routes_is_refused(
    ports: tuple[int, int], tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """A routes.yaml truncated before `routes:` (valid YAML, no routes) is refused: /admin stays on new."""
    path = write_config(tmp_path / "routes.yaml", legacy=ports[0], new=ports[1], routes=ADMIN_ROUTE)
    full = path.read_text(encoding="utf-8")
    async with running_proxy(path, watch_interval=0.1) as running:
        assert await _side(client, url(running, "/admin/x")) == "new"
        path.write_text(full[: full.index("routes:")], encoding="utf-8")
        await wait_until(lambda: not running.state.last_reload.ok)
        assert running.state.snapshot.generation == 1
        assert await _side(client, url(running, "/admin/x")) == "new"
        async with client.get(admin_url(running, "/config")) as resp:
            data = await resp.json()
        assert data["last_reload"]["ok"] is False
        assert any("routes: []" in error for error in data["last_reload"]["errors"])
        assert await _metric(client, admin_url(running, "/metrics"), "strangler_config_last_reload_ok") == 0
        path.write_text(full, encoding="utf-8")  # the rest of the write arrives: applied
        await wait_until(lambda: running.state.last_reload.ok)
        assert await _metric(client, admin_url(running, "/metrics"), "strangler_config_last_reload_ok") == 1


async def test_explicit_empty_routes_is_applied(
    ports: tuple[int, int], tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """`routes: []` written on purpose removes every route: everything goes to legacy."""
    path = write_config(tmp_path / "routes.yaml", legacy=ports[0], new=ports[1], routes=ADMIN_ROUTE)
    async with running_proxy(path, watch=False) as running:
        write_config(path, legacy=ports[0], new=ports[1], routes="")  # writes `routes:\n  []`
        assert (await running.reload()).ok
        assert await _side(client, url(running, "/admin/x")) == "legacy"


async def test_two_step_write_applies_only_the_settled_file(
    ports: tuple[int, int], tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """An editor's two writes 0.25 s apart reload once, with the second: the first never serves."""
    path = write_config(tmp_path / "routes.yaml", legacy=ports[0], new=ports[1], routes=ADMIN_ROUTE)
    async with running_proxy(path, watch_interval=0.1) as running:
        write_config(path, legacy=ports[0], new=ports[1], routes=ADMIN_ROUTE.replace("mode: new", "mode: legacy"))
        await asyncio.sleep(0.25)
        write_config(path, legacy=ports[0], new=ports[1], routes=ADMIN_ROUTE + OTHER_ROUTE)
        await wait_until(lambda: running.state.snapshot.generation >= 2)
        await asyncio.sleep(0.8)  # time for a further reload, if the first write had been picked up separately
        assert running.state.snapshot.generation == 2
        assert await _side(client, url(running, "/admin/x")) == "new"


async def test_deleted_file_is_reported_at_once(
    ports: tuple[int, int], tmp_path: Path, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting routes.yaml shows on /config, /metrics and the log without SIGHUP; the last good config serves."""
    path = write_config(tmp_path / "routes.yaml", legacy=ports[0], new=ports[1], routes=ADMIN_ROUTE)
    full = path.read_text(encoding="utf-8")
    async with running_proxy(path, watch_interval=0.1) as running:
        with caplog.at_level(logging.ERROR, logger="strangler.reload"):
            path.unlink()
            await wait_until(lambda: not running.state.last_reload.ok)
        assert "missing" in caplog.text
        async with client.get(admin_url(running, "/config")) as resp:
            data = await resp.json()
        assert data["last_reload"]["ok"] is False
        assert any("missing" in error for error in data["last_reload"]["errors"])
        assert await _metric(client, admin_url(running, "/metrics"), "strangler_config_last_reload_ok") == 0
        assert await _side(client, url(running, "/admin/x")) == "new"
        path.write_text(full, encoding="utf-8")  # restored: reloaded and reported good again
        await wait_until(lambda: running.state.last_reload.ok)
        assert running.state.snapshot.generation == 2


async def test_unreadable_file_is_reported_and_the_last_good_config_serves(
    ports: tuple[int, int], tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """routes.yaml replaced by something that cannot be read as a file (a directory): reported on /config, the last
    good config serves, and putting the file back recovers."""
    path = write_config(tmp_path / "routes.yaml", legacy=ports[0], new=ports[1], routes=ADMIN_ROUTE)
    full = path.read_text(encoding="utf-8")
    async with running_proxy(path, watch_interval=0.1) as running:
        path.unlink()
        path.mkdir()
        await wait_until(lambda: any("cannot read" in e for e in running.state.last_reload.errors))
        assert await _side(client, url(running, "/admin/x")) == "new"
        path.rmdir()
        path.write_text(full, encoding="utf-8")
        await wait_until(lambda: running.state.last_reload.ok)
