"""Mixed template segments through the running proxy: `/db/{table}.json` and `/db/{table}.csv` route by suffix, and
`strangler explain` names the same route and shows the bound parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner

from cli.main import app
from tests.proxy.app_fixtures import backend_app, hits, running_proxy, url, write_config

ROUTES = """\
  - id: tables-json
    match: {path: "/db/{table}.json"}
    mode: new
  - id: tables-csv
    match: {path: "/db/{table}.csv"}
    mode: legacy
  - id: tables-any
    match: {path: "/db/{table}"}
    mode: legacy
"""


def _explain(config: Path, path: str, *, fmt: str = "json") -> Any:
    args = ["explain", "GET", path, "-c", str(config), "-f", fmt]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if fmt == "json" else result.stdout


async def test_mixed_segments_route_by_suffix_and_explain_agrees(tmp_path: Path) -> None:
    """`.json` and `.csv` requests reach their own routes (and upstreams), other suffixes the bare parameter, and
    explain names each request's route, upstream and params as the proxy served it."""
    legacy, new = TestServer(backend_app("legacy")), TestServer(backend_app("new"))
    await legacy.start_server()
    await new.start_server()
    try:
        assert legacy.port is not None
        assert new.port is not None
        config = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=ROUTES)
        expected = {
            "/db/orders.json": ("tables-json", "new", {"table": "orders"}),
            "/db/Orders.JSON": ("tables-json", "new", {"table": "Orders"}),
            "/db/orders.csv": ("tables-csv", "legacy", {"table": "orders"}),
            "/db/orders.xml": ("tables-any", "legacy", {"table": "orders.xml"}),
        }
        async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as session:
            for path, (route_id, side, params) in expected.items():
                doc = _explain(config, path)
                assert (doc["route"], doc["served_by"], doc["params"]) == (route_id, side, params), path
                async with session.get(url(running, path)) as resp:
                    body = await resp.json()
                    assert resp.headers["X-Strangler-Route"] == route_id, path
                    assert resp.headers["X-Strangler-Upstream"] == doc["upstream"], path
                    assert (body["side"], body["path"]) == (side, path)
        assert [h.path for h in hits(new)] == ["/db/orders.json", "/db/Orders.JSON"]
        assert [h.path for h in hits(legacy)] == ["/db/orders.csv", "/db/orders.xml"]
        shown = _explain(config, "/db/orders.csv", fmt="table")
        assert "tables-csv" in shown
        assert "table=orders" in shown
        assert "'orders.csv' does not match '{table}.json'" in shown
    finally:
        await legacy.close()
        await new.close()
