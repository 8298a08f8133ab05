"""The real `strangler serve --workers 2` in a subprocess on loopback, for the supervisor's tests."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.proxy.app_fixtures import wait_until
from tests.serve_process import child_process, strangler

START_LIMIT = 60.0  # two workers, each with its shadow worker, on a busy 2-core machine


@dataclass
class ServedWorkers:
    """A running `serve --workers N`: its process, ports, store and stderr file."""

    process: subprocess.Popen[bytes]
    port: int
    admin: int
    db: Path
    stderr: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def admin_get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{self.admin}{path}") as r:
            return r.status, await r.text()

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{self.admin}/stats") as r:
            document: dict[str, Any] = await r.json()
            return document

    async def metric(self, name: str, labels: str = "") -> float:
        """The sum of one family's samples on /metrics whose label text contains `labels`."""
        _, text = await self.admin_get("/metrics")
        total = 0.0
        for line in text.splitlines():
            found = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if found and labels in (found.group(1) or ""):
                total += float(found.group(2))
        return total

    def bannered(self) -> bool:
        """The banner is out (every worker got ready); `port` and `admin` are read from it."""
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.stderr_text()}")
        found = re.search(
            r"proxy  http://127\.0\.0\.1:(\d+)(?: \(\w+ listener\))?    admin  http://127\.0\.0\.1:(\d+)",
            self.stderr_text(),
        )
        if found is None:
            return False
        self.port, self.admin = int(found.group(1)), int(found.group(2))
        return True

    async def ready(self) -> bool:
        """Ready, and really this supervisor answering (not another test's proxy that took the released port)."""
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.stderr_text()}")
        try:
            status, _ = await self.admin_get("/readyz")
            return status == 200 and (await self.stats())["workers"]["supervisor_pid"] == self.process.pid
        except (aiohttp.ClientError, KeyError):
            return False

    def worker_pids(self, stats: Mapping[str, Any]) -> list[int]:
        return [p["pid"] for p in stats["workers"]["processes"]]

    async def stop(self, sig: signal.Signals = signal.SIGTERM, limit: float = 60.0) -> int:
        self.process.send_signal(sig)
        await wait_until(lambda: self.process.poll() is not None, limit=limit)
        return self.process.returncode

    def stderr_text(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


async def get_fresh(url: str, count: int, headers: Mapping[str, str] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """`count` GETs, each on its own connection (so the kernel spreads them over the workers): (status, JSON)."""
    out: list[tuple[int, dict[str, Any]]] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        for _ in range(count):
            async with client.get(url, headers=headers) as r:
                out.append((r.status, await r.json()))
    return out


@contextlib.asynccontextmanager
async def serving_workers(
    tmp_path: Path, config: Path, *flags: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[ServedWorkers]:
    """`strangler serve --workers 2` (unless flags say otherwise) on free ports, ready; stopped (killed if need be)
    afterwards."""
    db, stderr = tmp_path / "s.db", tmp_path / "serve.stderr"
    # Port 0 for both: the supervisor picks and holds the ports (no race with other programs for a released port);
    # the banner says which.
    command = strangler("serve", "--config", str(config), "--port", "0", "--admin-port", "0")
    command += ["--db", str(db), "--workers", "2", *flags]
    # The supervisor's socket directory goes in one of the test's own (short: unix socket paths are limited), which
    # is removed afterwards even when a test killed the supervisor before it could clean up.
    sockets = Path(tempfile.mkdtemp(prefix="sw-"))
    environment = {"TMPDIR": str(sockets), **(env or {})}
    try:
        with stderr.open("wb") as err:
            async with child_process(command, env=environment, stderr=err, grace=60.0) as process:
                served = ServedWorkers(process, 0, 0, db, stderr)
                await wait_until(served.bannered, limit=START_LIMIT)
                await wait_until(served.ready, limit=START_LIMIT)
                yield served
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
