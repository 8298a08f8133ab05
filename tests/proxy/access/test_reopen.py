"""logrotate's dance on a real `strangler serve`: the log file is renamed, SIGUSR1 is sent, and the next lines go to a
fresh file at the configured path while the renamed file keeps the earlier ones; SIGTERM then flushes the rest."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.proxy.app_fixtures import backend_app, free_ports, wait_until, write_config
from tests.serve_process import admin_ready, child_process, strangler


def _paths(log: Path) -> list[str]:
    return [orjson.loads(line)["path"] for line in log.read_bytes().splitlines()] if log.exists() else []


@pytest.mark.slow
async def test_sigusr1_reopens_the_access_log_after_a_rename(tmp_path: Path) -> None:
    """Lines before the rename stay in the renamed file; after SIGUSR1, new lines go to a new file at the path."""
    backend = TestServer(backend_app("legacy"))
    await backend.start_server()
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    try:
        assert backend.port is not None
        config = write_config(tmp_path / "routes.yaml", legacy=backend.port, new=backend.port)
        config.write_text(config.read_text() + f'access_log: {{path: "{log}"}}\n')
        port, admin = free_ports(2)
        command = strangler("serve", "--config", str(config), "--port", str(port), "--admin-port", str(admin))
        command += ["--db", str(tmp_path / "s.db"), "--no-shadow-worker", "--quiet"]
        async with child_process(command, stderr=subprocess.DEVNULL) as process:
            await wait_until(lambda: admin_ready(admin), limit=20.0)
            async with aiohttp.ClientSession() as client:
                for path in ("/before-1", "/before-2"):
                    async with client.get(f"http://127.0.0.1:{port}{path}") as resp:
                        assert resp.status == 200
                await wait_until(lambda: len(_paths(log)) == 2)
                log.rename(rotated)
                process.send_signal(signal.SIGUSR1)
                await wait_until(log.exists)  # the writer opened the path again
                for path in ("/after-1", "/after-2"):
                    async with client.get(f"http://127.0.0.1:{port}{path}") as resp:
                        assert resp.status == 200
            process.send_signal(signal.SIGTERM)
            await wait_until(lambda: process.poll() is not None, limit=20.0)
            assert process.returncode == 0
    finally:
        await backend.close()
    assert sorted(_paths(rotated)) == ["/before-1", "/before-2"]
    assert sorted(_paths(log)) == ["/after-1", "/after-2"]  # written at exit at the latest: SIGTERM flushes
