"""`strangler store pull` against two running proxies, each with its own store and real traffic: the merged file's
report equals the sum of the replicas' own reports; failures name the replica and what failed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from cli.demo.driver import drive, plan_requests
from cli.demo.legacy_app import make_legacy_app
from cli.demo.new_app import make_new_app
from cli.main import app
from proxy.app import RunningProxy, start_proxy
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener
from tests.pipeline import write_config
from tests.proxy import app_fixtures
from tests.proxy.app_fixtures import backend_app, dead_port, running_proxy
from tests.reports.report_fixtures import REPORT_CONFIG

TOKEN_ENV = "STRANGLER_ADMIN_TOKEN"  # admin.token_env's default, and `store pull --token-env`'s
TOKEN = "pull-test-token-5f2c"
ENV = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}


@dataclass
class Replica:
    running: RunningProxy
    listener: ShadowListener
    config: Path
    db: Path

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.running.admin_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.proxy_port}"


async def _serve(app_: web.Application, stack: AsyncExitStack) -> str:
    runner = web.AppRunner(app_, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _replica(directory: Path, legacy: str, new: str, stack: AsyncExitStack) -> Replica:
    config = write_config(directory, legacy, new, REPORT_CONFIG)
    db = directory / "strangler.db"
    made: list[ShadowListener] = []

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        made.append(ShadowListener.create(state.config, state.metrics, db))
        return made

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch=False)
    stack.push_async_callback(running.stop, 2.0)
    return Replica(running, made[0], config, db)


@pytest.fixture
async def replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Replica]]:
    """Two proxies in front of the demo apps, each writing its own store, both with the admin token set."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with AsyncExitStack() as stack:
        legacy = await _serve(make_legacy_app(), stack)
        new = await _serve(make_new_app(), stack)
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        yield [await _replica(tmp_path / name, legacy, new, stack) for name in ("a", "b")]


async def cli(*args: str | Path) -> tuple[int, str, str]:
    """Run the CLI in a thread, so the proxies on this loop keep serving it."""
    result = await asyncio.to_thread(CliRunner().invoke, app, [str(a) for a in args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


async def report(config: Path, *dbs: Path) -> dict[str, Any]:
    code, out, err = await cli("report", "--config", config, *(a for db in dbs for a in ("--db", db)), "-f", "json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    for volatile in ("generated_at", "sources"):
        document.pop(volatile)
    return document


ADDED = ("served", "compared", "matched", "mismatched", "candidate_errors", "dropped", "skipped")


def route_totals(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: {k: r[k] for k in ADDED} for r in document["routes"]}


def summed(*documents: dict[str, Any]) -> dict[str, dict[str, Any]]:
    total: dict[str, dict[str, Any]] = {}
    for document in documents:
        for rid, figures in route_totals(document).items():
            into = total.setdefault(rid, {k: {"legacy": 0, "new": 0} if k == "served" else 0 for k in ADDED})
            for key, value in figures.items():
                if key == "served":
                    into[key] = {side: into[key][side] + value[side] for side in ("legacy", "new")}
                else:
                    into[key] += value
    return total


async def test_merged_report_is_the_sum_of_the_replicas(replicas: list[Replica], tmp_path: Path) -> None:
    """Pulled while traffic flows, then again once flushed: the merged report is the replicas' reports summed."""
    a, b = replicas
    into = tmp_path / "merged.db"
    pull = ("store", "pull", "--admin", a.admin, "--admin", b.admin, "--into", into)
    traffic = asyncio.gather(drive(a.url, plan_requests(120, 1)), drive(b.url, plan_requests(90, 2)))
    (code, out, err), _ = await asyncio.gather(cli(*pull), traffic)
    assert code == 0, err
    assert "merged 2 of 2 replicas" in out
    for replica in replicas:
        await replica.listener.aclose()  # flush every row to the replica's store (the proxy keeps serving)
    code, out, err = await cli(*pull, "--format", "json")
    assert code == 0, err
    pulled = json.loads(out)
    assert [r["replaced"] for r in pulled["replicas"]] == [True, True]
    assert all(r["bytes"] > 0 for r in pulled["replicas"])
    merged = await report(a.config, into)
    own_a, own_b = await report(a.config, a.db), await report(b.config, b.db)
    assert merged["traffic"]["total"] == own_a["traffic"]["total"] + own_b["traffic"]["total"] == 210
    assert route_totals(merged) == summed(own_a, own_b)
    # Everything else (rates, percentiles, fields, verdicts) reads as both files read together.
    both = await report(a.config, a.db, b.db)
    assert {**merged, "config": None} == {**both, "config": None}


async def test_pull_failures_name_the_replica(replicas: list[Replica], tmp_path: Path, aiohttp_server: Any) -> None:
    """Unreachable, wrong token and not-a-store replicas are each named with what failed; the good one merges."""
    a, _ = replicas
    await drive(a.url, plan_requests(20, 3))
    not_strangler = await aiohttp_server(backend_app("legacy"))  # answers 200 JSON on every path
    dead = f"http://127.0.0.1:{dead_port()}"
    other = f"http://127.0.0.1:{not_strangler.port}"
    into = tmp_path / "merged.db"
    code, out, err = await cli("store", "pull", "--admin", a.admin, "--admin", dead, "--admin", other, "--into", into)
    assert code == 1
    assert "merged 1 of 3 replicas" in out
    assert f"{dead}: unreachable" in err
    assert f"{other}: not a strangler store" in err
    code, _, err = await cli("store", "pull", "--admin", a.admin, "--into", into, "--token-env", "WRONG_TOKEN")
    assert code == 1
    assert "set WRONG_TOKEN" in err


async def test_pull_with_a_wrong_token_is_401(
    replicas: list[Replica], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token the replica does not accept is reported as 401 for that replica, and nothing is merged."""
    a, _ = replicas
    monkeypatch.setenv("OTHER_TOKEN", "not-the-token")
    into = tmp_path / "merged.db"
    code, _, err = await cli("store", "pull", "--admin", a.admin, "--into", into, "--token-env", "OTHER_TOKEN")
    assert code == 1
    assert f"{a.admin}: 401 unauthorized" in " ".join(err.split())
    assert not into.exists()


async def test_pull_from_a_replica_without_a_token_is_403(
    tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica with no admin token configured refuses snapshots: the pull says so for that replica."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the puller has one
    monkeypatch.delenv(app_fixtures.TOKEN_ENV, raising=False)  # the replica's admin.token_env is unset
    backend = await aiohttp_server(backend_app("legacy"))
    config = app_fixtures.write_config(tmp_path / "routes.yaml", legacy=backend.port, new=backend.port)
    async with running_proxy(config, watch=False, db=str(tmp_path / "s.db")) as running:
        admin = f"http://127.0.0.1:{running.admin_port}"
        code, _, err = await cli("store", "pull", "--admin", admin, "--into", tmp_path / "merged.db")
    assert code == 1
    assert f"{admin}: 403 forbidden: the replica has no admin token configured" in " ".join(err.split())


def test_pull_help_has_an_example() -> None:
    """`store pull --help` ends with a runnable example."""
    result = CliRunner().invoke(app, ["store", "pull", "--help"], env=ENV)
    assert result.exit_code == 0
    assert "strangler store pull --admin" in result.stdout
