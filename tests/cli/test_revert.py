"""`routes revert` is exact: it restores the route's routes.yaml entry byte for byte, walks back one recorded change
per run, and a revert that moves a route forward is gated like a flip. Real CLI, real routes.yaml copy, real store."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer
from typer.testing import CliRunner, Result

from cli.flip import route_text
from cli.main import app
from proxy.config.loader import load_config
from tests.pipeline import REPO_CONFIG, fill_store
from tests.proxy.app_fixtures import backend_app, running_proxy, url, wait_until, write_config

FORCE = ("--force", "--reason", "try it")


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "160", "STRANGLER_USER": "ana"}).invoke(app, list(args))


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def history(config: Path, route: str) -> list[dict[str, Any]]:
    result = invoke("routes", "history", route, "-c", str(config), "--format", "json")
    assert result.exit_code == 0, result.stderr
    docs: list[dict[str, Any]] = json.loads(result.stdout)
    return docs


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo config with customers at canary weight 30 (sticky header, shadow block), its store filled by the real
    pipeline: orders-read and customers diverge, orders-list is ready."""
    folder = tmp_path_factory.mktemp("revert-demo")
    text = REPO_CONFIG.read_text(encoding="utf-8").replace("min_compared: 500", "min_compared: 40")
    text = text.replace("      weight: 25 ", "      weight: 30 ")
    asyncio.run(fill_store(folder, requests=300, config_text=text))
    return folder


@pytest.fixture
def demo(demo_files: Path, tmp_path: Path) -> Path:
    """A private copy of the config and store."""
    for source in demo_files.iterdir():
        shutil.copy2(source, tmp_path / source.name)
    return tmp_path / "routes.yaml"


def test_revert_restores_the_canary_block_byte_for_byte(demo: Path) -> None:
    """canary 30 (sticky, shadow) → new comments out canary: and shadow:; revert writes the entry back exactly."""
    original = text_of(demo)
    before = route_text(demo, "customers")
    assert "weight: 30" in before
    assert "sticky: {header: X-User-Id}" in before
    flip = invoke("routes", "flip", "customers", "--to", "new", *FORCE, "-c", str(demo))
    assert flip.exit_code == 0, flip.stderr
    assert "commented out: canary, shadow" in flip.stdout
    result = invoke("routes", "revert", "customers", "-c", str(demo))
    assert result.exit_code == 0, result.stderr
    assert "customers: new → canary (weight 30)" in result.stdout
    assert text_of(demo) == original
    route = load_config(demo).route("customers")
    assert route is not None
    assert route.canary is not None
    assert route.canary.weight == 30
    assert route.canary.sticky is not None
    assert route.shadow is not None
    flipped, reverted = history(demo, "customers")
    assert reverted["action"] == "revert"
    assert reverted["reverts"] == flipped["id"]
    assert (flipped["before_text"], flipped["after_text"]) == (before, reverted["before_text"])
    assert reverted["after_text"] == before


def test_each_revert_goes_one_step_further_back(demo: Path) -> None:
    """Revert, then revert again: the second undoes the change before the first one, never the revert itself."""
    original = text_of(demo)
    assert invoke("routes", "flip", "orders-list", "--to", "canary", "-w", "10", "-c", str(demo)).exit_code == 0
    at_ten = text_of(demo)
    assert invoke("routes", "flip", "orders-list", "--to", "canary", "-w", "5", "-c", str(demo)).exit_code == 0
    first = invoke("routes", "revert", "orders-list", "-c", str(demo))
    assert first.exit_code == 0, first.stderr
    assert text_of(demo) == at_ten
    second = invoke("routes", "revert", "orders-list", "-c", str(demo))
    assert second.exit_code == 0, second.stderr
    assert "orders-list: canary → shadow" in second.stdout
    assert text_of(demo) == original
    third = invoke("routes", "revert", "orders-list", "-c", str(demo))
    assert third.exit_code == 1
    assert "already reverted" in third.stderr
    assert text_of(demo) == original
    to_ten, to_five, undo_five, undo_ten = history(demo, "orders-list")
    assert (undo_five["reverts"], undo_ten["reverts"]) == (to_five["id"], to_ten["id"])


def test_revert_that_moves_a_diverging_route_forward_is_gated(demo: Path) -> None:
    """Undoing a step back (canary 25% → shadow) on a diverging route is refused like a forward flip; --force
    passes."""
    original = text_of(demo)
    assert invoke("routes", "flip", "customers", "--to", "shadow", "-c", str(demo)).exit_code == 0
    at_shadow = text_of(demo)
    refused = invoke("routes", "revert", "customers", "-c", str(demo))
    assert refused.exit_code == 1
    assert "not ready" in refused.stderr
    assert "diverging" in refused.stderr
    assert "FAILED" in refused.stdout
    assert text_of(demo) == at_shadow
    assert len(history(demo, "customers")) == 1
    forced = invoke("routes", "revert", "customers", *FORCE, "-c", str(demo))
    assert forced.exit_code == 0, forced.stderr
    assert text_of(demo) == original
    last = history(demo, "customers")[-1]
    assert (last["action"], last["forced"], last["gate"]["readiness"]["verdict"]) == ("revert", True, "diverging")


def test_revert_refuses_over_a_later_hand_edit(demo: Path) -> None:
    """A route edited by hand since the change is not overwritten unless --force --reason (then the edit is lost)."""
    original = text_of(demo)
    assert invoke("routes", "flip", "orders-list", "--to", "legacy", "-c", str(demo)).exit_code == 0
    edited = text_of(demo).replace("noise: {sample: 0.5}", "noise: {sample: 0.4}")
    demo.write_text(edited, encoding="utf-8")
    result = invoke("routes", "revert", "orders-list", "-c", str(demo))
    assert result.exit_code == 1
    assert "edited since" in result.stderr
    assert "--force" in result.stderr
    assert text_of(demo) == edited
    forced = invoke("routes", "revert", "orders-list", *FORCE, "-c", str(demo))
    assert forced.exit_code == 0, forced.stderr
    assert "forced over later edits" in forced.stdout
    assert text_of(demo) == original
    last = history(demo, "orders-list")[-1]
    assert (last["forced"], last["gate"]["overwrote_edits"], last["reason"]) == (True, True, "try it")


async def test_running_proxy_reloads_the_reverted_route(aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    """A running proxy picks up the flip and the revert: the sticky canary and its shadow block come back."""
    legacy = await aiohttp_server(backend_app("legacy"))
    new = await aiohttp_server(backend_app("new"))
    assert legacy.port is not None
    assert new.port is not None
    routes = """\
  - id: customers
    match: {path: /api/customers/**}
    mode: canary
    canary:
      weight: 30                  # percent served by the new side
      sticky: {header: X-User-Id}
    shadow: {sample: 1.0}         # also mirror the legacy-served share
"""
    config = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=routes)
    db = str(tmp_path / "flips.db")
    users = [str(n) for n in range(20)]

    async def sides(session: aiohttp.ClientSession) -> list[str]:
        found = []
        for user in users:
            async with session.get(url(running, "/api/customers/1"), headers={"X-User-Id": user}) as resp:
                found.append(str((await resp.json())["side"]))
        return found

    async with running_proxy(config, watch_interval=0.1) as running, aiohttp.ClientSession() as session:
        sticky = await sides(session)
        assert (
            invoke("routes", "flip", "customers", "--to", "new", *FORCE, "-c", str(config), "--db", db).exit_code == 0
        )
        await wait_until(lambda: running.state.snapshot.generation >= 2)
        assert set(await sides(session)) == {"new"}
        assert invoke("routes", "revert", "customers", "-c", str(config), "--db", db).exit_code == 0
        await wait_until(lambda: running.state.snapshot.generation >= 3)
        route = running.state.snapshot.config.route("customers")
        assert route is not None
        assert route.canary is not None
        assert route.canary.sticky is not None
        assert route.shadow is not None
        assert await sides(session) == sticky
