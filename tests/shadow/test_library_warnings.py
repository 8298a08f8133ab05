"""No library warnings on the user's terminal (issue 8 item 16): `strangler serve` with a shadow worker comparing pairs
that used to make deepdiff warn ("reached the max number of diffs", "math_epsilon in conjunction with
ignore_order") writes none of them to its log."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from tests.proxy.app_fixtures import free_ports, wait_until
from tests.serve_process import child_process, ready_while_running, stop_cleanly, strangler
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
    port, admin = free_ports(2)
    async with backends(legacy_app, new_app) as (legacy, new):
        config = write_config(tmp_path, legacy.url, new.url, routes)
        argv = ["serve", "-c", str(config), "--db", str(db), "--quiet", "--port", str(port), "--admin-port", str(admin)]
        async with child_process(strangler(*argv), text=True) as proc, aiohttp.ClientSession() as session:
            await wait_until(lambda: ready_while_running(proc, admin), limit=10)  # the interpreter starts and binds
            for path in ("/api/1", "/api/2", "/blind/1", "/blind/2"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as r:
                    assert r.status == 200
            assert await stop_cleanly(proc) == 0
            assert proc.stderr is not None
            log = proc.stderr.read()  # the proxy's and its shadow worker's (stdout is not used: logs go to stderr)
    assert [r["outcome"] for r in exchanges(db)] == ["mismatch"] * 4
    assert "deepdiff" not in log.lower()  # --quiet: no banner, whose paths may name the test
    assert "max number of diffs" not in log
    assert "math_epsilon" not in log
