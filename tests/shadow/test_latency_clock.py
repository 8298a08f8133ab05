"""Latencies are measured to the microsecond under `strangler serve` (uvloop, in the proxy and the shadow worker),
not in the event loop's whole milliseconds: the report's legacy / new latency ratio read 0.00× for fast back ends
(legacy p50 1.0 ms, new 0.0 ms) because every stored latency was a multiple of 1,000 µs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.proxy.app_fixtures import free_ports, wait_until
from tests.serve_process import child_process, ready_while_running, strangler
from tests.shadow.shadow_fixtures import backends, query, write_config

DELAY = 0.0025  # each back end answers after 2.5 ms: any latency below it, or a whole number of ms, is mismeasured
N = 12


async def _slow_answer(request: web.Request) -> web.Response:
    await asyncio.sleep(DELAY)
    return web.json_response({"path": request.path})


async def test_latencies_have_microsecond_resolution_under_serve(tmp_path: Path) -> None:
    """Both sides' stored latencies, and the request-duration metric, are at least the back end's 2.5 ms delay and
    are not whole milliseconds."""
    db = tmp_path / "latency.db"
    port, admin = free_ports(2)
    async with backends(_slow_answer, _slow_answer) as (legacy, new):
        config = write_config(tmp_path, legacy.url, new.url, "- {id: api, match: {path: /api/**}, mode: shadow}")
        argv = ["serve", "-c", str(config), "--db", str(db), "--port", str(port), "--admin-port", str(admin)]
        async with child_process(strangler(*argv), grace=20) as proc, aiohttp.ClientSession() as session:
            await wait_until(lambda: ready_while_running(proc, admin), limit=10)
            for i in range(N + 1):
                async with session.get(f"http://127.0.0.1:{port}/api/{i}") as r:
                    assert r.status == 200
            async with session.get(f"http://127.0.0.1:{admin}/metrics") as r:
                metrics = await r.text()
            await wait_until(lambda: db.exists() and len(_latencies(db)) > N, limit=10)
    served = _duration_sum(metrics, 'route="api"')  # the request-duration metric: N + 1 requests, each >= DELAY
    assert served >= (N + 1) * DELAY
    assert abs(served * 1000 - round(served * 1000)) > 1e-6, served  # not a sum of whole milliseconds
    rows = _latencies(db)
    for side in ("legacy", "new"):
        values = [row[side] for row in rows]
        assert min(values) >= DELAY * 1_000_000, (side, values)  # never less than the back end took
        assert any(v % 1000 for v in values), (side, values)  # finer than whole milliseconds


def _latencies(db: Path) -> list[dict[str, int]]:
    rows = query(
        db,
        "SELECT legacy_latency_us, new_latency_us FROM exchanges WHERE path LIKE '/api/%' AND outcome = 'match'",
    )
    return [{"legacy": row[0], "new": row[1]} for row in rows]


def _duration_sum(metrics: str, labels: str) -> float:
    prefix = "strangler_request_duration_seconds_sum{"
    [line] = [line for line in metrics.splitlines() if line.startswith(prefix) and labels in line]
    return float(line.rsplit(" ", 1)[1])
