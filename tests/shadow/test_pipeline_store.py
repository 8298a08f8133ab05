"""The whole pipeline with the bundled demo apps: the demo traffic through the real proxy fills the store with the
planted differences; `strangler serve` and `strangler demo` run with the shadow listener attached.
"""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
from aiohttp import web
from rich.console import Console

from cli.demo.driver import run_demo
from tests.pipeline import REPO_CONFIG, fill_store
from tests.proxy.app_fixtures import free_ports, wait_until
from tests.serve_process import child_process, ready_while_running, stop_cleanly, strangler
from tests.shadow.shadow_fixtures import backends, exchanges, query, write_config


async def test_demo_traffic_fills_the_store_with_the_planted_differences(tmp_path: Path) -> None:
    """Demo traffic through proxy + shadow listener: renamed and added fields, verify pairs and noise pairs land."""
    _, db = await fill_store(tmp_path, requests=200)
    fields = {(r["route_id"], r["grp"]) for r in query(db, "SELECT DISTINCT route_id, grp FROM differences")}
    assert {("customers", "$.phone"), ("customers", "$.phone_number"), ("orders-read", "$.currency")} <= fields
    noise = {
        (r["route_id"], r["grp"])
        for r in query(db, "SELECT DISTINCT route_id, grp FROM differences WHERE pair = 'noise'")
    }
    assert ("orders-list", "$.meta.generated_at") in noise  # differs legacy↔legacy too: the report calls it noise
    assert ("customers", "$.phone") not in noise  # a real rename never shows up between two legacy calls
    rows = exchanges(db)
    assert {r["served_by"] for r in rows if r["route_id"] == "search"} == {"new"}  # verify: legacy got the copy
    assert any(r["pair"] == "noise" and r["route_id"] == "orders-read" for r in rows)
    assert not any(r["route_id"] == "orders-write" for r in rows)  # mode legacy: nothing mirrored
    [[matched]] = query(db, "SELECT COUNT(*) FROM exchanges WHERE outcome = 'match'")
    assert matched > 0


async def test_serve_command_writes_the_store(tmp_path: Path) -> None:
    """`strangler serve --db FILE` mirrors shadow routes into FILE and flushes it on SIGTERM."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"path": request.path})

    routes = """
    - id: api
      match: {path: /api/**}
      mode: shadow
    """
    db = tmp_path / "served.db"
    port, admin = free_ports(2)
    async with backends(answer, answer) as (legacy, new):
        config = write_config(tmp_path, legacy.url, new.url, routes)
        argv = ["serve", "-c", str(config), "--db", str(db), "--port", str(port), "--admin-port", str(admin)]
        served = 0
        async with child_process(strangler(*argv)) as proc, aiohttp.ClientSession() as session:
            await wait_until(lambda: ready_while_running(proc, admin), limit=10)  # the interpreter starts and binds
            for i in range(5):
                async with session.get(f"http://127.0.0.1:{port}/api/{i}") as r:
                    assert r.status == 200
                    served += 1
            assert await stop_cleanly(proc) == 0
    assert served == 5
    assert [r["outcome"] for r in exchanges(db)] == ["match"] * 5
    assert len(new.seen) == 5


async def test_demo_command_fills_the_configured_store(tmp_path: Path) -> None:
    """run_demo attaches the shadow listener: the demo's shadowed routes fill store.path."""
    text = REPO_CONFIG.read_text()
    text = text.replace("port: 8080", "port: 0").replace("port: 8081", "port: 0")
    listen, admin = free_ports(2)
    text = text.replace("127.0.0.1:9001", f"127.0.0.1:{listen}").replace("127.0.0.1:9002", f"127.0.0.1:{admin}")
    config = tmp_path / "routes.yaml"
    config.write_text(text)
    console = Console(file=io.StringIO(), width=120)
    assert await run_demo(config, requests=40, console=console) == 0
    rows = exchanges(tmp_path / "strangler.db")
    assert rows
    assert {"orders-read", "catalog"} & {r["route_id"] for r in rows}
