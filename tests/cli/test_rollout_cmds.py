"""`routes flip` (gated), `routes history`, `routes revert` and `routes promote`, on stores the real pipeline filled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from typer.testing import CliRunner, Result

from cli.main import app
from proxy.app import start_proxy
from proxy.config.loader import load_config
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener
from shadow.store.database import Store
from shadow.values import ExchangeRecord
from tests.pipeline import REPO_CONFIG, fill_store


def invoke(*args: str, user: str = "ana") -> Result:
    runner = CliRunner(env={"COLUMNS": "160", "STRANGLER_USER": user})
    return runner.invoke(app, list(args))


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def history(config: Path, route: str | None = None) -> list[dict[str, Any]]:
    result = invoke("routes", "history", *([route] if route else []), "-c", str(config), "--format", "json")
    assert result.exit_code == 0, result.stderr
    docs: list[dict[str, Any]] = json.loads(result.stdout)
    return docs


def mode_and_weight(config: Path, route: str) -> tuple[str, float | None]:
    r = load_config(config).route(route)
    assert r is not None
    return r.mode, r.canary.weight if r.canary is not None else None


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pipeline's store, filled once: orders-read diverges ($.currency), orders-list matches."""
    folder = tmp_path_factory.mktemp("demo")
    text = REPO_CONFIG.read_text(encoding="utf-8").replace("min_compared: 500", "min_compared: 40")
    asyncio.run(fill_store(folder, requests=300, config_text=text))
    return folder


@pytest.fixture
def demo(demo_files: Path, tmp_path: Path) -> Path:
    """A private copy of the demo config and store (tests edit and record into them)."""
    for source in demo_files.iterdir():
        shutil.copy2(source, tmp_path / source.name)
    return tmp_path / "routes.yaml"


async def test_forward_flip_is_refused_when_not_ready(demo: Path) -> None:
    """A diverging route cannot move to canary: every figure is printed with its limit, exit 1, file unchanged."""
    before = text_of(demo)
    result = invoke("routes", "flip", "orders-read", "--to", "canary", "--weight", "10", "-c", str(demo))
    assert result.exit_code == 1
    assert "not ready" in result.stderr
    assert "diverging" in result.stderr
    for figure in ("compared", "mismatch_rate", "error_rate"):
        assert figure in result.stdout
    assert "FAILED" in result.stdout
    assert "≤ 0.1%" in result.stdout
    assert text_of(demo) == before
    assert history(demo) == []


async def test_force_needs_a_reason(demo: Path) -> None:
    """--force without --reason is a usage error and changes nothing."""
    before = text_of(demo)
    result = invoke("routes", "flip", "orders-read", "--to", "new", "--force", "-c", str(demo))
    assert result.exit_code == 2
    assert text_of(demo) == before


async def test_forced_flip_passes_and_is_recorded(demo: Path) -> None:
    """--force --reason overrides the gate; the flip is recorded with user, reason, forced and the gate's figures."""
    result = invoke(
        "routes", "flip", "orders-read", "--to", "canary", "-w", "10", "--force", "--reason", "hotfix 42", "-c",
        str(demo),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "orders-read: shadow → canary (weight 10)" in result.stdout
    assert "forced past the readiness gate" in result.stdout
    assert mode_and_weight(demo, "orders-read") == ("canary", 10.0)
    [flip] = history(demo, "orders-read")
    assert (flip["user"], flip["action"], flip["forced"], flip["reason"]) == ("ana", "flip", True, "hotfix 42")
    assert (flip["from_mode"], flip["to_mode"], flip["from_weight"], flip["to_weight"]) == (
        "shadow",
        "canary",
        None,
        10,
    )
    gate = flip["gate"]
    assert gate["verdict"] == "diverging"
    assert gate["figures"]["mismatched"] > 0
    assert gate["figures"]["compared"] >= 40
    table = invoke("routes", "history", "-c", str(demo))
    assert "shadow → canary 10%" in table.stdout
    assert "forced: hotfix 42" in table.stdout


async def test_ready_route_flips_without_force(demo: Path) -> None:
    """A route inside every readiness threshold moves forward; the record says it was not forced."""
    result = invoke("routes", "flip", "orders-list", "--to", "canary", "-w", "10", "-c", str(demo))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "ready" in result.stdout
    assert mode_and_weight(demo, "orders-list") == ("canary", 10.0)
    [flip] = history(demo)
    assert flip["forced"] is False
    assert flip["gate"]["verdict"] == "ready"


async def test_backward_flip_is_always_allowed(demo: Path) -> None:
    """Moving a diverging route back to legacy needs no gate and is recorded."""
    result = invoke("routes", "flip", "orders-read", "--to", "legacy", "-c", str(demo))
    assert result.exit_code == 0
    assert result.stdout.startswith("orders-read: shadow → legacy")
    assert [(f["from_mode"], f["to_mode"], f["forced"]) for f in history(demo)] == [("shadow", "legacy", False)]


async def test_revert_restores_the_previous_mode_and_weight(demo: Path) -> None:
    """revert undoes the last recorded change (mode and weight) and is recorded; reverting again goes further back."""
    forced = ("--force", "--reason", "try it")
    assert (
        invoke("routes", "flip", "orders-read", "--to", "canary", "-w", "10", *forced, "-c", str(demo)).exit_code == 0
    )
    assert invoke("routes", "flip", "orders-read", "--to", "canary", "-w", "5", "-c", str(demo)).exit_code == 0
    assert mode_and_weight(demo, "orders-read") == ("canary", 5.0)
    result = invoke("routes", "revert", "orders-read", *forced, "-c", str(demo))  # 5 → 10 is forward: gated
    assert result.exit_code == 0, result.stderr
    assert mode_and_weight(demo, "orders-read") == ("canary", 10.0)
    last = history(demo, "orders-read")[-1]
    assert (last["action"], last["from_weight"], last["to_weight"]) == ("revert", 5.0, 10.0)
    assert last["gate"]["reverts"]["to_weight"] == 5.0
    assert invoke("routes", "revert", "orders-read", "-c", str(demo)).exit_code == 0
    assert mode_and_weight(demo, "orders-read") == ("shadow", None)


async def test_revert_without_history_fails(demo: Path) -> None:
    """A route with no recorded change cannot be reverted: exit 1 and the file is unchanged."""
    before = text_of(demo)
    result = invoke("routes", "revert", "catalog", "-c", str(demo))
    assert result.exit_code == 1
    assert "no recorded change" in result.stderr
    assert text_of(demo) == before


# --- promote on a store written directly ---------------------------------------------------------------------

CANARY_ROUTE = """\
version: 1
store: {{path: strangler.db}}
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
routes:
  - id: items
    match: {{path: "/items/{{id}}"}}
    mode: canary
    shadow: {{}}
    readiness: {{min_compared: 50}}
    canary:
      weight: {weight}   # rollout
      steps: [{steps}]
      interval: {interval}
      guards: {{max_mismatch_rate: 5%, max_error_rate: 5%}}
"""


def canary_config(
    tmp_path: Path,
    *,
    legacy: int = 9001,
    new: int = 9002,
    weight: float = 5,
    steps: str = "5, 25",
    interval: str = "1h",
) -> Path:
    path = tmp_path / "routes.yaml"
    text = CANARY_ROUTE.format(legacy=legacy, new=new, weight=weight, steps=steps, interval=interval)
    path.write_text(text, encoding="utf-8")
    return path


def matches(t: float, n: int) -> list[ExchangeRecord]:
    record = ExchangeRecord(
        time=t, route_id="items", mode="canary", pair="candidate", method="GET", template="/items/{id}",
        path="/items/1", query="", request_id="r", served_by="legacy", outcome="match", reason=None,
        legacy_status=200, legacy_latency_ms=5.0, legacy_size=10, new_status=200, new_latency_ms=5.0, new_size=10,
    )  # fmt: skip
    return [record] * n


def test_promote_steps_after_each_interval(tmp_path: Path) -> None:
    """promote advances one step when the guards pass, waits for the interval, and ends by flipping to new."""
    config = canary_config(tmp_path)
    with Store.open(tmp_path / "strangler.db") as store:
        store.write_batch(matches(time.time() - 60, 10))
    first = invoke("routes", "promote", "items", "-c", str(config))
    assert first.exit_code == 0, first.stderr
    assert "items: canary → canary (weight 25)" in first.stdout
    assert mode_and_weight(config, "items") == ("canary", 25.0)
    flipped_at = history(config)[-1]["time"]
    no_samples = invoke("routes", "promote", "items", "-c", str(config))  # nothing compared since the promote
    assert no_samples.exit_code == 1
    assert "0 attempts in the window" in no_samples.stderr
    with Store.open(tmp_path / "strangler.db") as store:
        store.write_batch(matches(flipped_at + 0.5, 10))
    unbaked = invoke("routes", "promote", "items", "-c", str(config))  # clean, but the 25% step has not baked
    assert unbaked.exit_code == 1
    assert "interval" in unbaked.stderr
    assert mode_and_weight(config, "items") == ("canary", 25.0)
    time.sleep(max(0.0, flipped_at + 1.0 - time.time()))
    last = invoke("routes", "promote", "items", "--interval", "1s", "-c", str(config))
    assert last.exit_code == 0, last.stderr
    assert "items: canary → new" in last.stdout
    assert mode_and_weight(config, "items") == ("new", None)
    steps = [(f["action"], f["from_weight"], f["to_mode"], f["to_weight"]) for f in history(config)]
    assert steps == [("promote", 5.0, "canary", 25.0), ("promote", 25.0, "new", None)]
    assert history(config)[-1]["gate"]["figures"]["compared"] == 10  # only exchanges since the last promote


def test_reverting_promote_steps_restores_the_file(tmp_path: Path) -> None:
    """Promote steps record the route's text; reverting both gives the canary block back byte for byte."""
    config = canary_config(tmp_path, steps="5")
    original = text_of(config)
    with Store.open(tmp_path / "strangler.db") as store:
        store.write_batch(matches(time.time() - 60, 10))
    assert invoke("routes", "promote", "items", "-c", str(config)).exit_code == 0  # 5 → new: the last step
    assert mode_and_weight(config, "items") == ("new", None)
    [promote] = history(config)
    assert "weight: 5   # rollout" in promote["before_text"]
    assert "# canary:" in promote["after_text"]
    result = invoke("routes", "revert", "items", "-c", str(config))
    assert result.exit_code == 0, result.stderr
    assert text_of(config) == original


def test_promote_refuses_without_evidence(tmp_path: Path) -> None:
    """With too few compared pairs in the window promote exits 1, prints why, and changes nothing."""
    config = canary_config(tmp_path)
    result = invoke("routes", "promote", "items", "-c", str(config))
    assert result.exit_code == 1
    assert "need at least 5" in result.stderr
    assert mode_and_weight(config, "items") == ("canary", 5.0)
    assert history(config) == []


# --- promote --auto against the real proxy -------------------------------------------------------------------


@dataclass
class Backends:
    diverge: bool = False
    legacy: Any = None
    new: Any = None
    seen: list[str] = field(default_factory=list)


def item_app(backends: Backends, side: str) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        doc: dict[str, object] = {"id": request.match_info["id"], "name": "widget"}
        if side == "new" and backends.diverge:
            doc["name"] = "WIDGET"
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/items/{id}", handle)
    return app


@contextlib.asynccontextmanager
async def proxy_with_traffic(config: Path, db: Path) -> AsyncIterator[None]:
    """The real proxy + shadow listener on `config` (reloaded when the file changes), with steady traffic."""

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, db)]

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch_interval=0.05)
    stop = asyncio.Event()

    async def drive() -> None:
        async with aiohttp.ClientSession() as session:
            n = 0
            while not stop.is_set():
                n += 1
                async with session.get(f"http://127.0.0.1:{running.proxy_port}/items/{n}") as resp:
                    await resp.read()
                await asyncio.sleep(0.005)

    driver = asyncio.gather(drive())
    try:
        yield
    finally:
        stop.set()
        await driver
        await running.stop(drain_timeout=2.0)


@pytest.fixture
async def backends(aiohttp_server: AiohttpServer) -> Backends:
    b = Backends()
    b.legacy = await aiohttp_server(item_app(b, "legacy"))
    b.new = await aiohttp_server(item_app(b, "new"))
    return b


async def test_promote_auto_rolls_back_on_a_breached_guard(tmp_path: Path, backends: Backends) -> None:
    """With a diverging new back end, promote --auto sets weight 0 and records the rollback with the figures."""
    backends.diverge = True
    config = canary_config(tmp_path, legacy=backends.legacy.port, new=backends.new.port, weight=10, steps="10, 50")
    async with proxy_with_traffic(config, tmp_path / "strangler.db"):
        args = ("routes", "promote", "items", "--auto", "--interval", "1s", "--poll", "0.1s", "-c", str(config))
        result = await asyncio.to_thread(invoke, *args)
    assert result.exit_code == 1
    assert "rolled back" in result.stdout
    assert "mismatch_rate" in result.stdout
    assert "rolled back to weight 0" in result.stderr
    assert mode_and_weight(config, "items") == ("canary", 0.0)
    [rollback] = history(config)
    assert (rollback["action"], rollback["from_weight"], rollback["to_weight"]) == ("rollback", 10.0, 0.0)
    assert "mismatch_rate" in rollback["reason"]
    gate = rollback["gate"]
    assert gate["figures"]["mismatched"] > 0
    assert [c["name"] for c in gate["checks"] if not c["passed"]] == ["mismatch_rate"]
    rolled_back = text_of(config)
    undo = invoke("routes", "revert", "items", "-c", str(config))  # back to weight 10 is forward: gated
    assert undo.exit_code == 1
    assert "diverging" in undo.stderr
    assert text_of(config) == rolled_back


async def test_promote_auto_walks_the_steps_to_new(tmp_path: Path, backends: Backends) -> None:
    """With a matching new back end, promote --auto steps through the weights after each interval, then flips to new."""
    config = canary_config(tmp_path, legacy=backends.legacy.port, new=backends.new.port, weight=10, steps="10, 50")
    async with proxy_with_traffic(config, tmp_path / "strangler.db"):
        args = ("routes", "promote", "items", "--auto", "--interval", "0.5s", "--poll", "0.1s", "-c", str(config))
        result = await asyncio.to_thread(invoke, *args)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert mode_and_weight(config, "items") == ("new", None)
    steps = [(f["action"], f["from_weight"], f["to_mode"], f["to_weight"]) for f in history(config)]
    assert steps == [("promote", 10.0, "canary", 50.0), ("promote", 50.0, "new", None)]
    assert all(f["gate"]["figures"]["compared"] >= 5 for f in history(config))
