"""`strangler watch`: the frame built from /stats, and frames read from a running proxy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer
from rich.console import Console
from typer.testing import CliRunner, Result

from cli.main import app
from proxy.app import start_proxy
from proxy.events import ExchangeListener
from proxy.metrics import STORE_FAILING, Metrics
from proxy.reload import build_snapshot_parts
from proxy.state import RuntimeState, Snapshot
from proxy.stats import stats_document
from reports.fmt import ms, percent
from reports.live import UNROUTED, LiveRoute, StatsFormatError, live_frame, live_table
from shadow.runner import ShadowListener
from tests.faults.store import allow_writes, refuse_writes
from tests.proxy.app_fixtures import dead_port, wait_until
from tests.proxy.stats_fixtures import ROUTES, backend, proxy_with_traffic


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))


def stats_of(metrics_setup: Callable[[Metrics], None], tmp_path: Path) -> dict[str, Any]:
    """The /stats document of a proxy whose registry `metrics_setup` filled (routes: orders, canary 20%)."""
    config = tmp_path / "routes.yaml"
    config.write_text(CANARY_ROUTES, encoding="utf-8")
    loaded, table = build_snapshot_parts(config)
    state = RuntimeState(Snapshot(loaded, table, 1))
    metrics_setup(state.metrics)
    doc: dict[str, Any] = json.loads(json.dumps(stats_document(state)))  # as served: through JSON text
    return doc


CANARY_ROUTES = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9"}
  new: {url: "http://127.0.0.1:9"}
routes:
  - {id: orders, match: {path: /orders}, mode: canary, canary: {weight: 20}}
"""


def test_live_frame_splits_sides_counts_candidate_outcomes_and_rates(tmp_path: Path) -> None:
    """A frame from /stats: requests per side, candidate outcomes apart from noise, request rate since the previous
    frame, and an unrouted row when requests matched no route."""

    def fill(m: Metrics) -> None:
        m.requests.inc(("orders", "legacy", "2xx"), 8)
        m.requests.inc(("orders", "new", "2xx"), 2)
        m.requests.inc(("orders", "new", "5xx"), 1)
        m.requests.inc(("unmatched", "legacy", "2xx"), 4)
        m.shadow.inc(("orders", "candidate", "match", ""), 6)
        m.shadow.inc(("orders", "candidate", "mismatch", ""), 2)
        m.shadow.inc(("orders", "candidate", "dropped", "queue_full"), 3)
        m.shadow.inc(("orders", "noise", "mismatch", ""), 5)  # legacy vs legacy: not a comparison of the new side
        for _ in range(10):
            m.latency.observe(("orders", "legacy"), 0.004)

    frame = live_frame(stats_of(fill, tmp_path), previous={"orders": 1}, elapsed=2.0)
    orders, unrouted = frame.routes
    assert (orders.mode, orders.weight) == ("canary", 20.0)
    assert (orders.legacy_requests, orders.new_requests, orders.errors) == (8, 3, 1)
    assert (orders.compared, orders.match_rate, orders.rate) == (8, 0.75, 5.0)
    assert (orders.dropped, orders.noise_mismatched) == (3, 5)
    assert orders.p99_legacy_ms == 5.0  # the bound of the bucket holding 4 ms
    assert orders.p99_new_ms is None
    assert (unrouted.id, unrouted.routed, unrouted.legacy_requests, unrouted.rate) == (UNROUTED, False, 4, None)


def test_live_frame_refuses_a_document_that_is_not_stats() -> None:
    """A JSON document without the /stats figures is one clear error, not a KeyError."""
    with pytest.raises(StatsFormatError, match="not a strangler /stats document"):
        live_frame({"routes": [{"id": "x"}]})


async def test_watch_once_shows_the_figures_of_stats(tmp_path: Path, aiohttp_server: AiohttpServer) -> None:
    """Against a real proxy with shadow (candidate and noise pairs), new, failing and unrouted traffic: `watch --once`
    shows, row by row, the figures /stats serves, and `--format json` prints the /stats document itself."""
    async with proxy_with_traffic(tmp_path, aiohttp_server) as running:
        admin = f"http://127.0.0.1:{running.admin_port}"
        async with aiohttp.ClientSession() as session, session.get(f"{admin}/stats") as resp:
            stats = await resp.json()
        table = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin)
        doc = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin, "--format", "json")
    assert doc.exit_code == 0, doc.stderr
    assert json.loads(doc.stdout) == stats
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    for route in stats["routes"]:
        row = next(line for line in lines if line.lstrip().startswith(route["id"] + " ")).split()
        candidate = route["shadow"]["candidate"]["outcomes"]
        latency = route["latency_ms"]
        expected = [
            route["id"], route["mode"], str(route["requests"]["legacy"]), str(route["requests"]["new"]), "–",
            str(route["errors"]), str(route["compared"]), percent(route["match_rate"]),
            str(candidate.get("mismatch", 0)), str(candidate.get("candidate_error", 0)),
            str(candidate.get("dropped", 0)), str(route["shadow"]["noise"]["outcomes"].get("mismatch", 0)),
            ms(latency["all"] and latency["all"]["p50"]), ms(latency["legacy"] and latency["legacy"]["p99"]),
            ms(latency["new"] and latency["new"]["p99"]),
        ]  # fmt: skip
        assert row == expected, route["id"]
    items = next(line for line in lines if line.lstrip().startswith("items "))
    assert items.split()[:8] == ["items", "shadow", "12", "0", "–", "0", "12", "50.0%"]
    unrouted = next(line for line in lines if line.lstrip().startswith("(unrouted)"))
    assert unrouted.split()[:4] == ["(unrouted)", "legacy", str(stats["unrouted"]["requests"]), "0"]
    footer = " ".join(lines)
    assert "queues: candidates 0, compare 0, store 0" in footer
    assert "worker restarts: 0" in footer
    assert "breakers: new closed" in footer  # only upstreams a breaker gates: the fallback route's new side
    assert "since the proxy started" in footer


def test_watch_reports_an_unreachable_admin_api() -> None:
    """An admin address nobody listens on is one error line and exit 1."""
    result = invoke("watch", "--once", "--admin", f"http://127.0.0.1:{dead_port()}")
    assert result.exit_code == 1
    assert "cannot read the admin API" in result.stderr


@pytest.mark.parametrize("width", [80, 110, 150])
def test_watch_table_never_cuts_a_figure_or_a_route_id(width: int) -> None:
    """On a narrow terminal the least important figure columns are left out, never cut: no ellipsis anywhere in
    the table, every route id whole, and at 150 columns every figure is shown."""
    rows = [
        LiveRoute(
            id=rid,
            mode=mode,
            weight=25.0 if mode == "canary" else None,
            legacy_requests=41220,
            new_requests=2161,
            errors=127,
            matched=3000,
            mismatched=3370,
            candidate_errors=0,
            dropped=0,
            noise_mismatched=1082,
            p50_ms=10.0,
            p99_legacy_ms=50.0,
            p99_new_ms=25.0,
            rate=1179.3,
        )
        for rid, mode in (("orders-read", "shadow"), ("customers", "canary"), ("(unrouted)", "legacy"))
    ]
    console = Console(width=width, record=True)
    console.print(live_table(rows, width=width))
    table = console.export_text().split("* latency")[0]
    assert "…" not in table
    assert all(rid in table for rid in ("orders-read", "customers", "(unrouted)"))
    assert "1179.3" in table
    assert "41220" in table
    if width >= 150:
        assert "new*" in table


async def test_watch_shows_a_store_refusing_writes(tmp_path: Path, aiohttp_server: AiohttpServer) -> None:
    """While the shadow store refuses writes, the watch frame says so, with its write errors and rows lost."""
    legacy, new = await aiohttp_server(backend(1)), await aiohttp_server(backend(2))
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
        failing = running.state.metrics.extra_gauge(STORE_FAILING, "")
        await wait_until(lambda: failing.get() == 1)
        admin = f"http://127.0.0.1:{running.admin_port}"
        table = await asyncio.to_thread(invoke, "watch", "--once", "--admin", admin)
        as_json = await asyncio.to_thread(invoke, "watch", "--once", "--format", "json", "--admin", admin)
    finally:
        allow_writes(db)
        await running.stop(drain_timeout=2.0)
    assert table.exit_code == 0, table.stderr
    assert "store refusing writes" in table.stdout
    assert "write errors" in table.stdout
    assert json.loads(as_json.stdout)["store"]["failing"] is True
