"""`strangler inventory` on traffic driven through the real proxy to loopback back ends: templates, coverage,
--propose output that `strangler validate` accepts, and --apply keeping the file's comments."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner

from cli.main import app
from proxy.app import start_proxy
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener

ENV = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}

CONFIG = """\
version: 1
store: {{path: strangler.db}}
upstreams:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}"}}
defaults: {{legacy: legacy, new: new}}
# the routes we have so far
routes:
  - id: items
    match:
      path: /api/items/{{id:int}}
      methods: [GET]
    mode: shadow   # compared against new
"""


async def _answer(request: web.Request) -> web.Response:
    if request.path.startswith("/missing"):
        return web.json_response({"error": "no"}, status=404)
    return web.json_response({"path": request.path})


def _backend() -> web.Application:
    backend = web.Application()
    backend.router.add_route("*", "/{tail:.*}", _answer)
    return backend


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


async def _drive(tmp_path: Path, aiohttp_server) -> Path:  # type: ignore[no-untyped-def]
    legacy: TestServer = await aiohttp_server(_backend())
    new: TestServer = await aiohttp_server(_backend())
    config = tmp_path / "routes.yaml"
    config.write_text(CONFIG.format(legacy=str(legacy.make_url("")), new=str(new.make_url(""))))
    db = tmp_path / "strangler.db"

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, db)]

    running = await start_proxy(
        config, host="127.0.0.1", port=0, admin_port=0, listeners_factory=listeners, watch=False
    )
    try:
        base = f"http://127.0.0.1:{running.proxy_port}"
        paths = [f"/users/{n}" for n in range(1, 51)]
        paths += [f"/users/{uuid.UUID(int=n)}" for n in range(1, 4)]
        paths += ["/db/orders.json"] * 5 + [f"/api/items/{n}" for n in range(1, 21)] + ["/missing/1", "/missing/2"]
        async with aiohttp.ClientSession() as session:
            for path in paths:
                async with session.get(base + path) as response:
                    await response.read()
            async with session.post(base + "/api/items/7", json={}) as response:
                await response.read()
    finally:
        await running.stop()
    return config


async def test_inventory_clusters_proxied_traffic_and_proposes_valid_routes(tmp_path: Path, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    """Traffic to /users/1..50, /users/<uuid>, /db/orders.json and a routed path gives templates with their
    coverage; the proposals pass `strangler validate`, and --apply appends them with the comments kept."""
    config = await _drive(tmp_path, aiohttp_server)

    code, out, err = run("inventory", "--config", config, "--format", "json")
    assert code == 0, err
    doc = {t["template"]: t for t in json.loads(out)["templates"]}
    assert set(doc) == {
        "/users/{id:int}",
        "/users/{id:uuid}",
        "/db/orders.json",
        "/api/items/{id:int}",
        "/missing/{id:int}",
    }
    users = doc["/users/{id:int}"]
    assert (users["requests"], users["methods"], users["route"], users["statuses"]) == (50, ["GET"], None, {"200": 50})
    assert users["latency"]["p50"] is not None
    assert users["latency"]["p99"] >= users["latency"]["p50"]
    assert doc["/missing/{id:int}"]["statuses"] == {"404": 2}
    items = doc["/api/items/{id:int}"]
    # GET is routed; the POST went to legacy unrouted and clusters onto the same template, uncovered
    assert (items["requests"], items["route"], items["uncovered_methods"]) == (21, None, ["POST"])
    assert abs(sum(t["share"] for t in doc.values()) - 1) < 1e-3

    code, out, _ = run("inventory", "--config", config)
    assert code == 0
    assert "/users/{id:int}" in out
    assert "items" in out

    code, proposed, err = run("inventory", "--config", config, "--propose")
    assert code == 0, err
    assert "id: users-id\n" in proposed
    assert "path: /users/{id:uuid}" in proposed
    assert "methods: [POST]" in proposed  # the uncovered POST on /api/items/{id:int}
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(config.read_text() + proposed)
    code, out, err = run("validate", "--config", candidate)
    assert code == 0, out + err

    before = config.read_text()
    code, out, err = run("inventory", "--config", config, "--apply")
    assert code == 0, err
    after = config.read_text()
    assert after.startswith(before.rstrip("\n"))
    assert "# the routes we have so far" in after
    assert "mode: shadow   # compared against new" in after
    code, out, err = run("validate", "--config", config)
    assert code == 0, out + err
    code, out, _ = run("inventory", "--config", config, "--format", "json")
    assert all(t["route"] is not None for t in json.loads(out)["templates"])
    code, out, _ = run("inventory", "--config", config, "--apply")
    assert code == 0
    assert "nothing added" in out


SPEC = """\
openapi: 3.0.3
info: {title: shop, version: "1"}
paths:
  /users/{userId}:
    get: {operationId: getUser}
  /api/items/{itemId}:
    get: {operationId: getItem}
    delete: {operationId: deleteItem}
  /db/{table}.json:
    get: {}
  /reports:
    get: {operationId: listReports}
"""


async def test_inventory_against_an_openapi_spec_lists_what_each_side_lacks(tmp_path: Path, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    """`inventory --openapi`: the spec's operations traffic never reached, and the traffic (template and method)
    the spec does not describe, from traffic driven through the real proxy; a file that is not OpenAPI is refused
    naming it."""
    config = await _drive(tmp_path, aiohttp_server)
    spec = tmp_path / "shop.yaml"
    spec.write_text(SPEC)

    code, out, err = run("inventory", "--config", config, "--openapi", spec, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["operations"], doc["seen"]) == (5, 3)
    assert [(u["method"], u["path"], u["operation_id"]) for u in doc["unseen"]] == [
        ("DELETE", "/api/items/{itemId}", "deleteItem"),
        ("GET", "/reports", "listReports"),
    ]
    assert [(u["method"], u["template"], u["requests"]) for u in doc["undocumented"]] == [
        ("GET", "/missing/{id:int}", 2),
        ("POST", "/api/items/{id:int}", 1),
    ]
    assert doc["undocumented_requests"] == 3

    code, out, err = run("inventory", "--config", config, "--openapi", spec)
    assert code == 0, err
    assert "3 of 5 operations seen in traffic" in out
    assert "In the spec, never seen in traffic" in out
    assert "listReports" in out
    assert "In traffic, not in the spec" in out
    assert "/missing/{id:int}" in out

    bad = tmp_path / "notes.json"
    bad.write_text('{"title": "not a spec"}')
    code, out, err = run("inventory", "--config", config, "--openapi", bad)
    assert code == 1
    assert "notes.json" in out + err
    assert "no 'openapi'" in out + err
    code, out, err = run("inventory", "--config", config, "--openapi", spec, "--propose")
    assert code == 1
    assert "does not go with --propose" in out + err
