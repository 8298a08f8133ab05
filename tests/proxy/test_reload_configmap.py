"""A Kubernetes ConfigMap update reaches a running `strangler serve`: the kubelet's atomic symlink swap of `..data`
is picked up within a few polls, and deleting the old timestamped directory does no harm."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.reload import POLL_INTERVAL, STABLE_FOR
from tests.proxy.app_fixtures import free_ports, wait_until
from tests.serve_process import child_process, ready_while_running, strangler

# A few poll intervals past the time a change must hold still: a hang guard, not a speed check.
RELOAD_WITHIN = STABLE_FOR + 6 * POLL_INTERVAL


class ConfigMapVolume:
    """A directory laid out and updated the way the kubelet's atomic writer does it for a ConfigMap volume:
    `..<timestamp>/routes.yaml`, `..data -> ..<timestamp>`, `routes.yaml -> ..data/routes.yaml`; an update writes a
    new timestamped directory, points a new `..data_tmp` at it, renames that over `..data` (atomic), then deletes
    the old directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = 0
        self.current: Path | None = None

    @property
    def config(self) -> Path:
        return self.root / "routes.yaml"

    def _write_version(self, text: str) -> Path:
        self.versions += 1
        version = self.root / f"..2026_12_06_15_00_{self.versions:02d}.{self.versions:09d}"
        version.mkdir()
        (version / "routes.yaml").write_text(text, encoding="utf-8")
        return version

    def create(self, text: str) -> None:
        self.root.mkdir()
        self.current = self._write_version(text)
        os.symlink(self.current.name, self.root / "..data")
        os.symlink("..data/routes.yaml", self.config)

    def update(self, text: str) -> None:
        old = self.current
        self.current = self._write_version(text)
        os.symlink(self.current.name, self.root / "..data_tmp")
        os.rename(self.root / "..data_tmp", self.root / "..data")
        if old is not None:
            shutil.rmtree(old)


def routes_yaml(legacy: int, new: int, mode: str) -> str:
    """The ConfigMap's routes.yaml: one route in `mode`; the same length for every mode, so only the swap (not the
    file's size) can tell the proxy that something changed."""
    return f"""\
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
routes:
  - {{id: orders, match: {{path: "/api/orders/**"}}, mode: {mode:<6}}}
"""


@dataclass
class Serve:
    """A running `strangler serve --config <volume>/routes.yaml`."""

    process: subprocess.Popen[str]
    port: int
    admin: int

    async def get(self, client: aiohttp.ClientSession, path: str, *, admin: bool = False) -> Any:
        port = self.admin if admin else self.port
        async with client.get(f"http://127.0.0.1:{port}{path}") as resp:
            assert resp.status == 200
            return await (resp.text() if path == "/metrics" else resp.json())


@pytest.fixture
async def volume(tmp_path: Path, ports: tuple[int, int]) -> ConfigMapVolume:
    mounted = ConfigMapVolume(tmp_path / "config")
    mounted.create(routes_yaml(*ports, "legacy"))
    return mounted


@pytest.fixture
async def served(volume: ConfigMapVolume, tmp_path: Path, client: aiohttp.ClientSession) -> AsyncIterator[Serve]:
    port, admin = free_ports(2)
    command = strangler("serve", "--config", str(volume.config), "--port", str(port), "--admin-port", str(admin))
    command += ["--db", str(tmp_path / "s.db"), "--no-shadow-worker", "--quiet"]
    async with child_process(command, text=True, grace=10.0) as process:
        await wait_until(lambda: ready_while_running(process, admin), limit=20.0)
        yield Serve(process, port, admin)


async def _side(served: Serve, client: aiohttp.ClientSession) -> str:
    return str((await served.get(client, "/api/orders/1"))["side"])


@pytest.mark.slow
async def test_configmap_symlink_swap_reloads(
    volume: ConfigMapVolume, served: Serve, ports: tuple[int, int], client: aiohttp.ClientSession
) -> None:
    """Two kubelet-style updates (each deleting the old directory) flip the route both ways: traffic, /config and
    /metrics show each reload, and no reload fails."""
    assert await _side(served, client) == "legacy"
    for generation, mode in ((2, "new"), (3, "legacy")):
        volume.update(routes_yaml(*ports, mode))

        async def reloaded(want: int = generation) -> bool:
            return int((await served.get(client, "/config", admin=True))["generation"]) >= want

        await wait_until(reloaded, limit=RELOAD_WITHIN)
        assert await _side(served, client) == mode
        config = await served.get(client, "/config", admin=True)
        assert config["source"] == str(volume.config)
        assert config["generation"] == generation
        assert config["last_reload"]["ok"] is True
        assert config["last_reload"]["trigger"] == "file"
    metrics = await served.get(client, "/metrics", admin=True)
    assert 'strangler_reloads_total{result="ok"} 2' in metrics
    assert 'strangler_reloads_total{result="failed"}' not in metrics
    assert "strangler_config_last_reload_ok 1" in metrics
    assert served.process.poll() is None
