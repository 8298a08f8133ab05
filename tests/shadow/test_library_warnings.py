"""No library warnings on the user's terminal (issue 8 item 16): `strangler serve` with a shadow worker comparing pairs
that used to make deepdiff warn ("reached the max number of diffs", "math_epsilon in conjunction with
ignore_order") writes none of them to its log."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.proxy.app_fixtures import free_port
from tests.shadow.shadow_fixtures import backends, exchanges, write_config


def _doc(sign: int) -> dict[str, object]:
    return {"rows": [{"id": i, "v": sign * i} for i in range(1, 301)], "tags": [sign, 2 * sign, 3]}


async def test_serve_log_has_no_deepdiff_warnings(tmp_path: Path) -> None:
    """Pairs with 300 differing rows and a differing order-blind array under a tolerance leave the serve log
    (stderr of the proxy and its shadow worker) free of deepdiff's warnings."""

    async def legacy_app(request: web.Request) -> web.StreamResponse:
        return web.json_response(_doc(1))

    async def new_app(request: web.Request) -> web.StreamResponse:
        return web.json_response(_doc(-1))

    routes = """
    - id: api
      match: {path: /api/**}
      mode: shadow
    - id: blind
      match: {path: /blind/**}
      mode: shadow
      compare: {ignore_order: true, float_tolerance: 0.01}
    """
    db = tmp_path / "served.db"
    port, admin = free_port(), free_port()
    async with backends(legacy_app, new_app) as (legacy, new):
        config = write_config(tmp_path, legacy.url, new.url, routes)
        argv = ["-c", "from cli.main import run; run()", "serve", "-c", str(config), "--db", str(db), "--quiet"]
        argv += ["--port", str(port), "--admin-port", str(admin)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):  # up to ~10 s for the interpreter to start and bind
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/api/first") as r:
                            assert r.status == 200
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                for path in ("/api/2", "/blind/1", "/blind/2"):
                    async with session.get(f"http://127.0.0.1:{port}{path}") as r:
                        assert r.status == 200
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            out, err = await proc.communicate()
    assert [r["outcome"] for r in exchanges(db)] == ["mismatch"] * 4
    log = (out + err).decode()
    assert "deepdiff" not in log.lower()  # --quiet: no banner, whose paths may name the test
    assert "max number of diffs" not in log
    assert "math_epsilon" not in log
