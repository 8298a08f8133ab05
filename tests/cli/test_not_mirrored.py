"""A route whose traffic the mirror policy never copies (all POST) is `not mirrored`, with the reason and the fix,
in the report (every format) and at the flip gate; driven through the real proxy and shadow listener."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

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

CONFIG = """\
version: 1
listen: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
store: {path: strangler.db}
upstreams:
  legacy: {url: LEGACY}
  new: {url: NEW}
defaults:
  readiness: {min_compared: 5}
routes:
  - id: orders-write
    match: {path: /api/orders, methods: [POST]}
    mode: shadow                  # writes are not mirrored by default (methods: GET, HEAD, OPTIONS)
  - id: orders-read
    match: {path: /api/orders, methods: [GET]}
    mode: shadow
"""
POSTS = 6


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200", "STRANGLER_USER": "ana"}).invoke(app, list(args))


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _orders_app() -> web.Application:
    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": 1}, status=201)

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"orders": []})

    application = web.Application()
    application.router.add_post("/api/orders", create)
    application.router.add_get("/api/orders", listing)
    return application


async def drive_posts(aiohttp_server: AiohttpServer, tmp_path: Path, config_text: str) -> Path:
    """routes.yaml and a store after POSTs (and one GET) through the real proxy to loopback legacy and new apps."""
    legacy = await aiohttp_server(_orders_app())
    new = await aiohttp_server(_orders_app())
    config = tmp_path / "routes.yaml"
    text = config_text.replace("LEGACY", str(legacy.make_url("/"))[:-1]).replace("NEW", str(new.make_url("/"))[:-1])
    config.write_text(text, encoding="utf-8")
    db = load_config(config).store.path

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, db)]

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch=False)
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(POSTS):
                async with session.post(f"http://127.0.0.1:{running.proxy_port}/api/orders", json={"n": i}) as r:
                    assert r.status == 201
            async with session.get(f"http://127.0.0.1:{running.proxy_port}/api/orders") as r:
                assert r.status == 200
    finally:
        await running.stop()
    return config


@pytest.fixture
async def post_only(aiohttp_server: AiohttpServer, tmp_path: Path) -> Path:
    """A POST-only route in mode shadow with the default mirror policy, after traffic."""
    return await drive_posts(aiohttp_server, tmp_path, CONFIG)


def verdicts(config: Path) -> dict[str, str]:
    result = invoke("report", "-c", str(config), "--format", "json")
    assert result.exit_code == 0, result.stderr
    return {r["id"]: r["verdict"] for r in json.loads(result.stdout)["routes"]}


async def test_post_only_route_is_not_mirrored_in_the_report(post_only: Path) -> None:
    """The report JSON gives the POST-only route the verdict `not mirrored` with the reason and the fix."""
    result = invoke("report", "-c", str(post_only), "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    routes = {r["id"]: r for r in doc["routes"]}
    write = routes["orders-write"]
    assert write["verdict"] == "not mirrored"
    assert write["skipped"] == POSTS
    assert f"the mirror policy skipped all {POSTS} requests" in write["verdict_reason"]
    assert "side_effects: dry_run" in write["verdict_reason"]
    assert "read route" in write["verdict_reason"]
    assert doc["verdicts"]["not mirrored"] == 1
    assert routes["orders-read"]["verdict"] == "needs samples"  # one GET compared: not enough, but mirrored
    assert routes["orders-read"]["verdict_reason"] is None


@pytest.mark.parametrize("fmt", ["table", "markdown", "html", "junit"])
async def test_every_report_format_says_why(post_only: Path, fmt: str) -> None:
    """Terminal, Markdown, HTML and JUnit show the verdict with its reason."""
    result = invoke("report", "-c", str(post_only), "--format", fmt)
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())  # the terminal wraps long lines
    assert "not mirrored" in out
    assert "the mirror policy skipped" in out
    assert "side_effects: dry_run" in out


async def test_flip_gate_refuses_with_the_reason(post_only: Path) -> None:
    """`routes flip` forward on a route that mirrors nothing refuses, saying why and how to fix it."""
    before = text_of(post_only)
    result = invoke("routes", "flip", "orders-write", "--to", "new", "-c", str(post_only))
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "verdict: not mirrored" in err
    assert "the mirror policy skipped" in err
    assert "side_effects: dry_run" in err
    assert text_of(post_only) == before


async def test_the_suggested_fix_mirrors_the_writes(aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    """With the fix the reason names (side_effects: dry_run, POST in methods) the same POSTs are compared."""
    fixed = CONFIG.replace(
        "    mode: shadow                  # writes",
        "    shadow: {methods: [POST], side_effects: dry_run}\n    mode: shadow                  # writes",
    )
    config = await drive_posts(aiohttp_server, tmp_path, fixed)
    assert verdicts(config)["orders-write"] == "ready"
