"""Slowloris against the real proxy with the real `slowhttptest` tool: trickling heads are cut at header_timeout and
normal clients keep being served during and after the attack. Skipped where slowhttptest is not installed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import RunningProxy
from tests.proxy.app_fixtures import hits, proxy_in_front_of, url

SLOWHTTPTEST = shutil.which("slowhttptest")
CONNECTIONS = 50
LIMITS = """\
limits:
  header_timeout: 1s
"""

pytestmark = pytest.mark.skipif(SLOWHTTPTEST is None, reason="slowhttptest not installed: apt-get install slowhttptest")


@pytest.fixture
async def proxy(legacy: TestServer, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with proxy_in_front_of(legacy, tmp_path, LIMITS) as running:
        yield running


async def _status(session: aiohttp.ClientSession, target: str) -> int:
    async with session.get(target) as resp:
        await resp.read()
        return resp.status


@pytest.mark.slow
async def test_slowloris_does_not_starve_normal_clients(proxy: RunningProxy, legacy: TestServer) -> None:
    """While slowhttptest holds 50 trickling request heads open, and after it ends, normal requests on fresh
    connections are answered; the proxy closes the slow heads at header_timeout, never forwarding them."""
    assert SLOWHTTPTEST is not None
    attack = await asyncio.create_subprocess_exec(
        SLOWHTTPTEST,
        *("-H", "-c", str(CONNECTIONS), "-i", "1", "-r", "50", "-l", "6", "-p", "3"),
        *("-u", url(proxy, "/slow")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    during: list[int] = []
    try:
        # A fresh connection per request: the listener itself must keep accepting while the attack holds sockets.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with asyncio.timeout(30):
                # Its output is a few KiB, well under a pipe buffer, so it cannot block before communicate().
                while attack.returncode is None:
                    during.append(await _status(session, url(proxy, f"/normal/{len(during)}")))
                    await asyncio.sleep(0.2)
                output, _ = await attack.communicate()
            after = await _status(session, url(proxy, "/normal/after"))
    finally:
        if attack.returncode is None:
            attack.kill()
            with contextlib.suppress(ProcessLookupError):
                await attack.wait()

    assert attack.returncode == 0, output.decode(errors="replace")[-2000:]
    assert during, "the attack ended before any normal request was made"
    assert set(during) == {200}
    assert after == 200
    cut = proxy.state.metrics.rejected.get(("header_timeout",))
    assert cut >= CONNECTIONS // 2, f"only {cut} slow heads were cut"
    normal = [h.path for h in hits(legacy) if h.path.startswith("/normal/")]
    assert normal == [*(f"/normal/{i}" for i in range(len(during))), "/normal/after"]
