"""`strangler watch`: the Prometheus text parser, the per-route view, and one frame read from a running proxy."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from typer.testing import CliRunner, Result

from cli.main import app
from proxy.app import start_proxy
from proxy.events import ExchangeListener
from proxy.metrics import Metrics
from proxy.state import RuntimeState
from reports.live import MetricsFormatError, histogram_quantile, live_routes, parse_prometheus
from shadow.runner import ShadowListener
from tests.proxy.app_fixtures import free_port, wait_until


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))


def test_parser_reads_labels_escapes_and_special_values() -> None:
    """Comments are skipped, escaped label values are unescaped, +Inf and timestamps are handled."""
    text = (
        "# HELP x_total Things.\n# TYPE x_total counter\n"
        'x_total{route="a\\"b",path="c\\\\d\\n"} 3\n'
        "plain 1.5 1700000000000\n"
        'h_bucket{le="+Inf"} 7\n'
        "\n"
    )
    samples = parse_prometheus(text)
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("x_total", (("route", 'a"b'), ("path", "c\\d\n")), 3.0),
        ("plain", (), 1.5),
        ("h_bucket", (("le", "+Inf"),), 7.0),
    ]
    with pytest.raises(MetricsFormatError, match="line 1"):
        parse_prometheus('x{route="a" 1')
    with pytest.raises(MetricsFormatError, match="bad value"):
        parse_prometheus("x abc")


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    """Quantiles interpolate linearly inside the bucket that holds the rank, as Prometheus does."""
    buckets = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 10.0)]) == 0.1  # past the last bound
    assert histogram_quantile(0.5, [(math.inf, 0.0)]) is None


def test_live_routes_split_sides_and_count_outcomes() -> None:
    """Requests are split by the route's legacy/new upstream; match rate and rate come from the counters."""
    m = Metrics()
    m.requests.inc(("orders", "legacy", "2xx"), 8)
    m.requests.inc(("orders", "new", "2xx"), 2)
    m.requests.inc(("orders", "new", "5xx"), 1)
    m.requests.inc(("unmatched", "legacy", "2xx"), 4)
    m.shadow.inc(("orders", "match", ""), 6)
    m.shadow.inc(("orders", "mismatch", ""), 2)
    for _ in range(10):
        m.latency.observe(("orders", "legacy"), 0.004)
    routes = [{"id": "orders", "mode": "canary", "legacy": "legacy", "upstream": "new", "weight": 20}]
    rows = live_routes(parse_prometheus(m.render()), routes, previous={"orders": 1}, elapsed=2.0)
    orders, unrouted = rows
    assert (orders.legacy_requests, orders.new_requests, orders.errors) == (8, 3, 1)
    assert (orders.compared, orders.match_rate, orders.rate) == (8, 0.75, 5.0)
    assert orders.p99_legacy_ms is not None
    assert 2.5 < orders.p99_legacy_ms <= 5.0
    assert orders.p99_new_ms is None
    assert (unrouted.id, unrouted.legacy_requests) == ("unmatched", 4)


def backend(name: str) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info.get("id", ""), "v": 1})

    application = web.Application()
    application.router.add_get("/items/{id}", handle)
    application.router.add_get("/search", handle)
    application.router.add_get("/other", handle)
    return application


ROUTES = """\
version: 1
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
routes:
  - {{id: items, match: {{path: "/items/{{id}}"}}, mode: shadow}}
  - {{id: search, match: {{path: /search}}, mode: new}}
"""


async def test_watch_once_shows_a_running_proxy(tmp_path: Path, aiohttp_server: AiohttpServer) -> None:
    """One frame from a real proxy lists every route with its mode, traffic per side and match rate."""
    legacy, new = await aiohttp_server(backend("legacy")), await aiohttp_server(backend("new"))
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.format(legacy=legacy.port, new=new.port), encoding="utf-8")

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, tmp_path / "strangler.db")]

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch=False)
    try:
        async with aiohttp.ClientSession() as session:
            for path in [*(f"/items/{i}" for i in range(12)), "/search", "/search", "/search", "/other"]:
                async with session.get(f"http://127.0.0.1:{running.proxy_port}{path}") as resp:
                    await resp.read()
        shadow = running.state.metrics.shadow
        await wait_until(lambda: shadow.get(("items", "match", "")) == 12)
        admin = f"http://127.0.0.1:{running.admin_port}"
        table = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin)
        doc = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin, "--format", "json")
    finally:
        await running.stop(drain_timeout=2.0)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    items = next(line for line in lines if line.lstrip().startswith("items"))
    assert items.split()[:4] == ["items", "shadow", "12", "0"]
    assert "100.0%" in items
    search = next(line for line in lines if line.lstrip().startswith("search"))
    assert search.split()[:4] == ["search", "new", "0", "3"]
    assert any(line.lstrip().startswith("(unrouted)") for line in lines)
    assert doc.exit_code == 0, doc.stderr
    rows = {r["id"]: r for r in json.loads(doc.stdout)}
    assert (rows["items"]["matched"], rows["items"]["match_rate"]) == (12, 1.0)
    assert rows["search"]["new_requests"] == 3
    assert rows["unmatched"]["legacy_requests"] == 1


def test_watch_reports_an_unreachable_admin_api() -> None:
    """An admin address nobody listens on is one error line and exit 1."""
    result = invoke("watch", "--once", "--admin", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "cannot read the admin API" in result.stderr


async def test_watch_shows_a_store_refusing_writes(tmp_path: Path, aiohttp_server: AiohttpServer) -> None:
    """While the shadow store refuses writes, the watch frame says so, with its write errors and rows lost."""
    from tests.faults.store import allow_writes, refuse_writes

    legacy, new = await aiohttp_server(backend("legacy")), await aiohttp_server(backend("new"))
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.format(legacy=legacy.port, new=new.port), encoding="utf-8")
    db = tmp_path / "strangler.db"

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, db)]

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch=False)
    refuse_writes(db)
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(5):
                async with session.get(f"http://127.0.0.1:{running.proxy_port}/items/{i}") as resp:
                    await resp.read()
        failing = running.state.metrics.extra_gauge("strangler_store_failing", "")
        await wait_until(lambda: failing.get() == 1)
        admin = f"http://127.0.0.1:{running.admin_port}"
        table = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin)
    finally:
        allow_writes(db)
        await running.stop(drain_timeout=2.0)
    assert table.exit_code == 0, table.stderr
    assert "store refusing writes" in table.stdout
    assert "write errors" in table.stdout
