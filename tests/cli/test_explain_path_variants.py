"""`strangler explain` and the running proxy agree on path variants (case, `;params`, `%3B`, trailing dots): both
send them to the route of the plain path, and both refuse segments that read as dot segments."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner
from yarl import URL

from cli.main import app
from tests.proxy.app_fixtures import backend_app, hits, running_proxy, url, write_config

ROUTES = """\
  - id: admin
    match: {path: "/admin/**"}
    mode: new
  - id: orders
    match: {path: "/api/orders/{id:int}"}
    mode: new
"""
ROUTED = {
    "/ADMIN": "admin",
    "/Admin/x": "admin",
    "/admin;x/secret": "admin",
    "/admin%3Bx": "admin",
    "/admin.": "admin",
    "/API/Orders/7;v=1": "orders",
    "/api/orders/7.": "orders",
    "/adminx": None,
}
REFUSED = ("/x/..;/admin", "/;x/admin")


async def test_explain_and_proxy_route_path_variants_alike(tmp_path: Path) -> None:
    """Each variant gets the same route and upstream from explain as from the proxy (its debug headers), and the
    expected route; a path explain says the proxy refuses is a 400 that reaches no back end."""
    legacy, new = TestServer(backend_app("legacy")), TestServer(backend_app("new"))
    await legacy.start_server()
    await new.start_server()
    try:
        assert legacy.port is not None
        assert new.port is not None
        config = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=ROUTES)
        runner = CliRunner()
        async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as session:
            for path, route_id in ROUTED.items():
                result = runner.invoke(app, ["explain", "GET", path, "-c", str(config), "-f", "json"])
                assert result.exit_code == 0, result.output
                doc = json.loads(result.stdout)
                async with session.get(URL(url(running, path), encoded=True)) as resp:
                    await resp.read()
                    assert resp.headers["X-Strangler-Route"] == (doc["route"] or "unmatched"), path
                    assert resp.headers["X-Strangler-Upstream"] == doc["upstream"], path
                assert doc["route"] == route_id, path
            for path in REFUSED:
                result = runner.invoke(app, ["explain", "GET", path, "-c", str(config), "-f", "json"])
                assert result.exit_code == 1
                assert "400" in result.output
                async with session.get(URL(url(running, path), encoded=True)) as resp:
                    assert resp.status == 400, path
        assert [h.path for h in hits(new)] == [p for p, r in ROUTED.items() if r is not None]
        assert [h.path for h in hits(legacy)] == [p for p, r in ROUTED.items() if r is None]
    finally:
        await legacy.close()
        await new.close()
