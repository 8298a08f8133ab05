"""Every mirrored request is accounted for: it ends as a stored row, or as a drop counted with its reason, even when
the worker process is killed under load or the store refuses writes (issue 10, items 6 and 7)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from aiohttp import web

from tests.faults.store import allow_writes, refuse_writes
from tests.shadow.shadow_fixtures import backends, query
from tests.shadow.worker_fixtures import WorkerProxy, until, worker_proxy


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"path": request.path})


async def slow_ok(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(0.02)  # copies stay in flight in the worker, so a kill catches some of them
    return web.json_response({"path": request.path})


def shadow_sum(wp: WorkerProxy, route: str = "api") -> float:
    """Every outcome strangler_shadow_total counted for a route (stored, dropped and skipped alike)."""
    return sum(v for (r, _, _, _), v in wp.running.state.metrics.shadow.values.items() if r == route)


def rows(db: Path) -> int:
    return int(query(db, "SELECT COUNT(*) AS n FROM exchanges")[0]["n"])


async def load(wp: WorkerProxy, prefix: str, count: int, concurrency: int = 16) -> int:
    """`count` GETs, `concurrency` at a time; every client must get a 200. Returns how many were sent."""
    sent = 0

    async def one() -> None:
        nonlocal sent
        while sent < count:
            sent += 1
            status, _ = await wp.get(f"{prefix}/{sent}")
            assert status == 200

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return sent


async def test_killing_the_worker_under_load_loses_no_request_uncounted(tmp_path: Path) -> None:
    """kill -9 of the worker mid-load: mirrored = stored rows, every lost copy is counted worker_lost and still gets
    its row from the next worker, and the outcome counts add up to the requests mirrored."""
    async with backends(ok, slow_ok) as (legacy, new), worker_proxy(tmp_path, legacy.url, new.url) as wp:
        first = await wp.worker_started()
        loader = asyncio.ensure_future(load(wp, "/api/a", 600))
        await until(lambda: wp.metric("strangler_shadow_mirrored_total", "api") >= 150, "copies under way")
        os.kill(first, signal.SIGKILL)
        sent = await loader
        await wp.worker_started(other_than=first)
        sent += await load(wp, "/api/b", 50)
    lost = wp.shadow("dropped", "worker_lost")  # after the stop: the last worker's final report is in
    assert lost > 0
    assert rows(wp.db) == sent
    assert rows(wp.db) == len({r["path"] for r in query(wp.db, "SELECT path FROM exchanges")})  # no duplicates
    stored_lost = query(wp.db, "SELECT COUNT(*) AS n FROM exchanges WHERE reason = 'worker_lost'")[0]["n"]
    assert stored_lost == lost
    assert shadow_sum(wp) == sent, wp.running.state.metrics.shadow.values


async def test_a_store_refusing_writes_is_visible_and_loses_nothing(tmp_path: Path) -> None:
    """150 compared requests while the store refuses writes: write errors on /metrics at once, 0 rows meanwhile,
    and all 150 rows once it takes writes again."""
    async with backends(ok, ok) as (legacy, new), worker_proxy(tmp_path, legacy.url, new.url) as wp:
        await wp.worker_started()
        refuse_writes(wp.db)
        try:
            sent = await load(wp, "/api/full", 150)
            await until(lambda: wp.metric("strangler_store_write_errors_total") >= 2, "write errors on /metrics")
            await until(lambda: wp.metric("strangler_store_failing") == 1, "the store shown failing")
            async with wp.session.get(wp.admin_url + "/metrics") as resp:
                text = await resp.text()
            assert "strangler_store_write_errors_total" in text
            assert rows(wp.db) == 0
        finally:
            allow_writes(wp.db)
        await until(lambda: rows(wp.db) == sent, "the rows once the store takes writes")
        await until(lambda: wp.metric("strangler_store_failing") == 0, "the store shown healthy again")
    assert rows(wp.db) == sent
    assert wp.metric("strangler_store_rows_lost_total", "store_error") == 0
