"""`strangler serve` says on stderr what it serves when it starts and what it did when it exits (`--quiet`: neither)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy import native
from proxy.app import chosen_server
from proxy.config.model import Listen
from tests.proxy.app_fixtures import backend_app, free_ports, wait_until, write_config
from tests.serve_process import ROOT, admin_ready, child_env, child_process, strangler

ROUTES = """\
  - {id: a, match: {path: /a}, mode: shadow}
  - {id: b, match: {path: /b}, mode: new}
  - {id: c, match: {path: /c}, mode: legacy}
"""


async def _serve(tmp_path: Path, *flags: str) -> tuple[int, str]:
    """Run the real `strangler serve` (in-process shadow side) against a loopback back end, send 3 requests, stop it
    with SIGTERM; returns (exit code, stderr)."""
    backend = TestServer(backend_app("legacy"))
    await backend.start_server()
    try:
        assert backend.port is not None
        config = write_config(tmp_path / "routes.yaml", legacy=backend.port, new=backend.port, routes=ROUTES)
        port, admin = free_ports(2)
        command = strangler("serve", "--config", str(config), "--port", str(port), "--admin-port", str(admin))
        command += ["--db", str(tmp_path / "s.db"), "--no-shadow-worker", *flags]
        async with child_process(command, text=True) as process:
            await wait_until(lambda: admin_ready(admin), limit=20.0)
            async with aiohttp.ClientSession() as client:
                for path in ("/a", "/b", "/c"):
                    async with client.get(f"http://127.0.0.1:{port}{path}") as resp:
                        assert resp.status == 200
            process.send_signal(signal.SIGTERM)
            await wait_until(lambda: process.poll() is not None, limit=20.0)
            assert process.stderr is not None
            return process.returncode, process.stderr.read()
    finally:
        await backend.close()


@pytest.mark.slow
async def test_serve_prints_a_banner_and_an_exit_line(tmp_path: Path) -> None:
    """The banner names the version, the proxy and admin addresses, the routes by mode, the store and the shadow
    side; the exit line counts the requests served and the shadow outcomes recorded."""
    code, err = await _serve(tmp_path)
    assert code == 0, err
    assert "strangler " in err
    assert "serving " in err
    assert "proxy  http://127.0.0.1:" in err
    assert f"({chosen_server(None, Listen().server)} listener)" in err  # the default, or $STRANGLER_SERVER's
    assert "admin  http://127.0.0.1:" in err
    assert "workers 1" in err
    assert "routes 3 (1 legacy, 1 shadow, 1 new)" in err
    assert "shadow side: in-process" in err
    assert str(tmp_path / "s.db") in err
    assert f"code   {native.status().describe()}" in err  # the same build and $STRANGLER_NATIVE as this process
    assert "strangler stopped: 3 requests served" in err


@pytest.mark.slow
async def test_serve_quiet_prints_neither(tmp_path: Path) -> None:
    """--quiet drops the banner and the exit line."""
    code, err = await _serve(tmp_path, "--quiet")
    assert code == 0, err
    assert "routes 3" not in err
    assert "strangler stopped" not in err


@pytest.mark.slow
async def test_serve_server_option_picks_the_listener(tmp_path: Path) -> None:
    """--server aiohttp serves on the previous listener, and the banner names it."""
    code, err = await _serve(tmp_path, "--server", "aiohttp")
    assert code == 0, err
    assert "(aiohttp listener)" in err
    assert "strangler stopped: 3 requests served" in err


def test_serve_refuses_an_unknown_server(tmp_path: Path) -> None:
    """--server with a name that is no listener is a usage error (exit 2) naming the known ones."""
    result = subprocess.run(
        strangler("serve", "--config", str(tmp_path / "routes.yaml"), "--server", "nginx"),
        cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown server 'nginx' (known: fast, aiohttp)" in result.stderr
