"""`strangler serve --workers 2`: two proxy workers on one port under a supervisor (`proxy.supervisor`), run for real
as subprocesses against loopback back ends."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.canary import choose_side
from proxy.config.model import Canary
from proxy.supervisor import RESTART_FIRST, RESTART_MAX, restart_delay
from tests.proxy.app_fixtures import TOKEN_ENV, backend_app, wait_until, write_config
from tests.proxy.workers_fixtures import get_fresh, serving_workers
from tests.reports.test_export import schema_errors
from tests.serve_process import ROOT, child_env, strangler

STATS_SCHEMA = Path(__file__).parents[2] / "docs" / "stats.schema.json"
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="serve --workers needs SO_REUSEPORT"),
    pytest.mark.timeout(180),  # several processes start and stop on a possibly busy 2-core machine
]
ROUTES = """\
  - {id: mirrored, match: {path: /m}, mode: shadow}
  - {id: switch, match: {path: /s}, mode: legacy}
  - {id: split, match: {path: /c}, mode: canary, canary: {weight: 50, sticky: {header: X-User-Id}}}
"""


@pytest.fixture
async def backends() -> AsyncIterator[tuple[TestServer, TestServer]]:
    """A legacy and a new back end on loopback, each answering JSON naming its side."""
    legacy, new = TestServer(backend_app("legacy")), TestServer(backend_app("new"))
    await legacy.start_server()
    await new.start_server()
    yield legacy, new
    await legacy.close()
    await new.close()


def _config(tmp_path: Path, backends: tuple[TestServer, TestServer]) -> Path:
    legacy, new = backends
    assert legacy.port is not None
    assert new.port is not None
    return write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=ROUTES)


def test_restart_delay_doubles_to_a_ceiling_and_resets_after_a_healthy_run() -> None:
    """A worker that keeps dying waits 0.5 s, 1 s, 2 s ... up to the ceiling; one that ran a minute starts over."""
    delay, seen = 0.0, []
    for _ in range(10):
        delay = restart_delay(delay, ran_for=1.0)
        seen.append(delay)
    assert seen[:3] == [RESTART_FIRST, RESTART_FIRST * 2, RESTART_FIRST * 4]
    assert seen[-1] == RESTART_MAX
    assert restart_delay(RESTART_MAX, ran_for=120.0) == RESTART_FIRST


@pytest.mark.slow
async def test_both_workers_serve_metrics_sum_and_canary_sides_agree(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """Requests on fresh connections are spread over both workers (each reports its own count in /stats), and the
    supervisor's /metrics and /stats add them up to exactly the requests sent (other admin paths are answered or
    passed on to the workers); each canary sticky key lands on the
    side the pure function gives, whichever worker serves it, every time."""
    async with serving_workers(tmp_path, _config(tmp_path, backends)) as served:
        answers = await get_fresh(served.url("/s"), 120)
        assert {status for status, _ in answers} == {200}
        stats = await served.stats()
        processes = stats["workers"]["processes"]
        assert len({p["pid"] for p in processes}) == 2
        assert all(p["requests"] > 0 for p in processes), processes
        assert sum(p["requests"] for p in processes) == 120
        assert await served.metric("strangler_requests_total", 'route="switch"') == 120
        assert await served.metric("strangler_request_duration_seconds_count", 'route="switch"') == 120
        route = next(r for r in stats["routes"] if r["id"] == "switch")
        assert route["requests"]["total"] == 120
        assert route["latency_ms"]["all"]["count"] == 120
        assert await served.metric("strangler_proxy_workers") == 2
        schema = json.loads(STATS_SCHEMA.read_text(encoding="utf-8"))
        assert schema_errors(stats, schema, schema) == []
        status, text = await served.admin_get("/routes")
        assert status == 200
        assert [r["id"] for r in json.loads(text)["routes"]] == ["mirrored", "switch", "split"]
        assert (await served.admin_get("/no-such-endpoint"))[0] == 404  # passed on to a worker, its answer back
        no_such = f"http://127.0.0.1:{served.admin}/no-such-endpoint"
        async with aiohttp.ClientSession() as client, client.post(no_such) as r:
            assert r.status == 404  # a write goes to every worker; they agree

        canary = Canary(weight=50)
        sides = set()
        for key in [f"user-{i}" for i in range(60)]:
            answers = await get_fresh(served.url("/c"), 3, headers={"X-User-Id": key})
            side = choose_side("split", canary, key)
            assert {body["side"] for _, body in answers} == {side}, key
            sides.add(side)
        assert sides == {"legacy", "new"}


@pytest.mark.slow
async def test_a_killed_worker_is_restarted_and_traffic_keeps_flowing(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """SIGKILL on one worker: /readyz says 503 until it is back, the other keeps serving meanwhile, the supervisor
    starts a new one in its place and counts the restart in /metrics, /stats and `strangler watch`, and both serve
    again; SIGKILL on the supervisor ends its workers too."""
    async with serving_workers(tmp_path, _config(tmp_path, backends)) as served:
        before = served.worker_pids(await served.stats())
        os.kill(before[0], signal.SIGKILL)

        async def not_ready() -> bool:  # for at least the 0.5 s restart delay and the new worker's start
            status, text = await served.admin_get("/readyz")
            return status == 503 and text == "starting: 1 of 2 workers ready"

        await wait_until(not_ready, limit=10.0)
        answers = await get_fresh(served.url("/s"), 30)  # while the new worker starts
        assert {status for status, _ in answers} == {200}

        async def replaced() -> bool:
            stats = await served.stats()
            pids = served.worker_pids(stats)
            return stats["workers"]["ready"] == 2 and pids[0] not in (None, before[0])

        await wait_until(replaced, limit=60.0)
        assert await served.admin_get("/readyz") == (200, "ready")
        stats = await served.stats()
        assert stats["workers"]["restarts"] == 1
        assert served.worker_pids(stats)[1] == before[1]
        assert await served.metric("strangler_proxy_worker_restarts_total") == 1
        watched = await asyncio.to_thread(  # what an operator sees: the real `strangler watch` on the supervisor
            subprocess.run,
            strangler("watch", "--admin", f"http://127.0.0.1:{served.admin}", "--once"),
            cwd=ROOT, env=child_env({"COLUMNS": "160"}), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert watched.returncode == 0, watched.stderr
        assert "proxy workers: 2 of 2 ready, 1 restarts" in watched.stdout
        answers = await get_fresh(served.url("/s"), 60)
        assert {status for status, _ in answers} == {200}
        assert all(p["requests"] > 0 for p in (await served.stats())["workers"]["processes"])

        workers = served.worker_pids(await served.stats())
        os.kill(served.process.pid, signal.SIGKILL)  # the supervisor itself: its workers must not outlive it

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        await wait_until(lambda: served.process.poll() is not None, limit=10.0)
        await wait_until(lambda: all(gone(pid) for pid in workers), limit=60.0)


@pytest.mark.slow
async def test_sigterm_exits_0_with_every_mirrored_request_stored(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """SIGTERM drains both workers and their shadow workers: exit 0, one stored exchange per mirrored request, the
    rollups (written by two processes into one file) count exactly those, and the exit line sums both workers."""
    sent = 80
    async with serving_workers(tmp_path, _config(tmp_path, backends)) as served:
        answers = await get_fresh(served.url("/m"), sent)
        assert {status for status, _ in answers} == {200}
        assert all(p["requests"] > 0 for p in (await served.stats())["workers"]["processes"])
        assert await served.stop() == 0
    with sqlite3.connect(served.db) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM exchanges WHERE route_id = 'mirrored'").fetchone()[0]
        rolled = conn.execute("SELECT SUM(count) FROM route_rollup WHERE route_id = 'mirrored'").fetchone()[0]
    assert rows == sent
    assert rolled == sent
    err = served.stderr_text()
    assert "workers 2" in err
    assert f"strangler stopped: {sent} requests served by 2 workers, {sent} shadow outcomes recorded" in err


@pytest.mark.slow
async def test_file_edits_sighup_admin_reloads_and_sigusr1_reach_every_worker(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """An edit of routes.yaml flips the route in both workers (every request on fresh connections sees it); SIGHUP
    and POST /reload (with the token; refused without) make each worker reload once more; SIGUSR1 reaches the
    workers and kills none; SIGINT (Ctrl-C) stops them all with exit 0, even just after one died."""
    config = _config(tmp_path, backends)
    async with serving_workers(tmp_path, config, env={TOKEN_ENV: "s3cret"}) as served:
        assert {body["side"] for _, body in await get_fresh(served.url("/s"), 20)} == {"legacy"}
        config.write_text(config.read_text().replace("path: /s}, mode: legacy", "path: /s}, mode: new"))

        async def flipped() -> bool:
            return await served.metric("strangler_reloads_total", 'result="ok"') == 2

        await wait_until(flipped, limit=30.0)
        answers = await get_fresh(served.url("/s"), 60)
        assert {body["side"] for _, body in answers} == {"new"}
        pids = served.worker_pids(await served.stats())
        served.process.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return await served.metric("strangler_reloads_total", 'result="ok"') == 4

        await wait_until(reloaded, limit=30.0)
        headers = {"Authorization": "Bearer s3cret"}
        url = f"http://127.0.0.1:{served.admin}/reload"
        async with aiohttp.ClientSession() as client:
            async with client.post(url) as refused:
                assert refused.status == 401
            async with client.post(url, headers=headers) as response:
                assert response.status == 200
                document = await response.json()
        assert document["ok"] is True
        assert [w["status"] for w in document["workers"]] == [200, 200]
        assert await served.metric("strangler_reloads_total", 'result="ok"') == 6

        for _ in range(3):  # passed to every worker (the access log reopens on it); one with no use for it lives on
            served.process.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1.0)  # delivered by now: a worker it killed would be gone
        assert {status for status, _ in await get_fresh(served.url("/s"), 10)} == {200}
        stats = await served.stats()
        assert served.worker_pids(stats) == pids
        assert stats["workers"]["restarts"] == 0

        os.kill(pids[1], signal.SIGKILL)  # a worker dies just before the stop: not a failure to stop

        async def noticed() -> bool:
            return bool((await served.stats())["workers"]["restarts"] == 1)

        await wait_until(noticed, limit=30.0)
        assert await served.stop(signal.SIGINT) == 0  # Ctrl-C drains and exits 0 like SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize("reuse_port", [False, True], ids=["another-program", "another-strangler-with-workers"])
async def test_a_port_in_use_fails_the_start_with_exit_1(
    tmp_path: Path, backends: tuple[TestServer, TestServer], reuse_port: bool
) -> None:
    """When the port is held by another program, or by a listener with SO_REUSEPORT (another `serve --workers`,
    which the kernel would otherwise let share the port), serve says so and exits 1, starting no worker."""
    with socket.socket() as taken:
        if reuse_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = strangler("serve", "--config", str(_config(tmp_path, backends)), "--port")
        command += [str(port), "--admin-port", "0", "--db", str(tmp_path / "s.db"), "--workers", "2"]
        done = await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, env=child_env(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot start: cannot bind 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "proxy worker" not in done.stderr


def _socket_dirs(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob("strangler-workers-*"))


@pytest.mark.slow
async def test_a_killed_supervisors_socket_directory_is_removed_by_the_next_one(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """A SIGKILLed supervisor leaves its workers' socket directory in TMPDIR (nothing runs at such a death); the
    next supervisor started with the same TMPDIR removes it and keeps only its own."""
    shared = Path(tempfile.mkdtemp(prefix="sk-"))  # short: unix socket paths are limited
    try:
        config = _config(tmp_path, backends)
        async with serving_workers(tmp_path, config, env={"TMPDIR": str(shared)}) as served:
            left = _socket_dirs(shared)
            assert len(left) == 1
            await served.stop(signal.SIGKILL)
        assert left[0].exists()
        async with serving_workers(tmp_path, config, env={"TMPDIR": str(shared)}):
            now = _socket_dirs(shared)
            assert len(now) == 1
            assert not left[0].exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
