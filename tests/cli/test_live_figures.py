"""Figures from a real proxy, shadow pipeline and store: exact latencies in the report, and `watch` counting the same
pairs the report counts (noise pairs labelled apart in /metrics)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from typer.testing import CliRunner, Result

from cli.main import app
from proxy.app import RunningProxy, start_proxy
from proxy.events import ExchangeListener
from proxy.percentiles import percentile
from proxy.state import RuntimeState
from shadow.runner import ShadowListener
from tests.proxy.app_fixtures import wait_until

ROUTES = """\
version: 1
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
store: {{path: strangler.db}}
defaults:
  readiness: {{min_compared: 5}}
routes:
  - id: items
    match: {{path: "/items/{{id}}"}}
    mode: shadow
    noise: {{sample: {noise}}}
"""


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))


def backend(version: int, sleeps_ms: Sequence[float]) -> web.Application:
    """GET /items/{id}: {"id", "version"} after sleeping sleeps_ms[id % len] milliseconds."""

    async def handle(request: web.Request) -> web.Response:
        item = int(request.match_info["id"])
        await asyncio.sleep(sleeps_ms[item % len(sleeps_ms)] / 1000)
        return web.json_response({"id": item, "version": version})

    application = web.Application()
    application.router.add_get("/items/{id}", handle)
    return application


async def run_proxy(tmp_path: Path, legacy: int | None, new: int | None, noise: float) -> tuple[Path, RunningProxy]:
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.format(legacy=legacy, new=new, noise=noise), encoding="utf-8")

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, tmp_path / "strangler.db")]

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch=False)
    return config, running


async def drive(running: RunningProxy, count: int) -> None:
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            async with session.get(f"http://127.0.0.1:{running.proxy_port}/items/{i}") as resp:
                await resp.read()


def report_route(config: Path) -> dict[str, Any]:
    result = invoke("report", "-c", str(config), "--format", "json")
    assert result.exit_code == 0, result.stderr
    [route] = json.loads(result.stdout)["routes"]
    assert isinstance(route, dict)
    return route


async def test_stored_latencies_are_microseconds_and_report_percentiles_their_nearest_rank(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """Back ends that sleep known times: each stored latency is an integer count of µs at least that long (not
    whole ms), and the report's p50/p95/p99 are the nearest-rank values of the stored rows, marked exact."""
    legacy_sleeps, new_sleeps = [4.0, 6.5, 9.0, 13.0], [8.0, 11.5]
    legacy = await aiohttp_server(backend(1, legacy_sleeps))
    new = await aiohttp_server(backend(1, new_sleeps))
    config, running = await run_proxy(tmp_path, legacy.port, new.port, noise=0.0)
    try:
        await drive(running, 24)
        shadow = running.state.metrics.shadow
        await wait_until(lambda: sum(shadow.values.values()) == 24)
    finally:
        await running.stop(drain_timeout=2.0)
    with sqlite3.connect(tmp_path / "strangler.db") as conn:
        rows = conn.execute(
            "SELECT path, legacy_latency_us, new_latency_us FROM exchanges WHERE pair = 'candidate'"
        ).fetchall()
    assert len(rows) == 24
    for path, legacy_us, new_us in rows:
        item = int(path.rsplit("/", 1)[1])
        assert isinstance(legacy_us, int)
        assert isinstance(new_us, int)
        assert legacy_us >= legacy_sleeps[item % 4] * 1000, (path, legacy_us)
        assert new_us >= new_sleeps[item % 2] * 1000, (path, new_us)
    assert any(us % 1000 for _, a, b in rows for us in (a, b)), "latencies stored at 1 ms resolution"
    latency = (await asyncio.to_thread(report_route, config))["latency"]
    for side, column in (("legacy", 1), ("new", 2)):
        ordered = sorted(row[column] for row in rows)
        got = latency[side]
        assert (got["count"], got["exact"]) == (24, True)
        for q, name in ((0.50, "p50"), (0.95, "p95"), (0.99, "p99")):
            expected = percentile(ordered, q)
            assert expected is not None
            assert got[name] == expected / 1000, (side, name)


async def test_metrics_label_noise_pairs_and_watch_counts_what_the_report_counts(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """With noise sampling on, /metrics counts noise pairs under pair="noise", and watch's compared and match rate
    are the report's (candidate pairs only): here every candidate pair differs while every noise pair matches."""
    legacy = await aiohttp_server(backend(1, [0.0]))
    new = await aiohttp_server(backend(2, [0.0]))
    config, running = await run_proxy(tmp_path, legacy.port, new.port, noise=1.0)
    admin = f"http://127.0.0.1:{running.admin_port}"
    try:
        await drive(running, 10)
        shadow = running.state.metrics.shadow
        await wait_until(lambda: sum(shadow.values.values()) == 20)
        async with aiohttp.ClientSession() as session, session.get(f"{admin}/metrics") as resp:
            metrics = await resp.text()
        frame = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin, "--format", "json")
        table = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin)
    finally:
        await running.stop(drain_timeout=2.0)
    assert 'strangler_shadow_total{route="items",pair="candidate",outcome="mismatch",reason=""} 10' in metrics
    assert 'strangler_shadow_total{route="items",pair="noise",outcome="match",reason=""} 10' in metrics
    assert frame.exit_code == 0, frame.stderr
    watched = next(r for r in json.loads(frame.stdout)["routes"] if r["id"] == "items")
    reported = await asyncio.to_thread(report_route, config)
    mismatched = watched["shadow"]["candidate"]["outcomes"]["mismatch"]
    assert (watched["compared"], mismatched) == (reported["compared"], reported["mismatched"]) == (10, 10)
    assert watched["match_rate"] == reported["match_rate"] == 0.0
    assert watched["shadow"]["noise"]["outcomes"] == {"match": 10}
    assert table.exit_code == 0, table.stderr
    assert "since the proxy started" in table.stdout
