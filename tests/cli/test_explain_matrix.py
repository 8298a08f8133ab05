"""`strangler explain --format json` agrees with the running proxy, request by request: which upstream serves a
request (the proxy's debug header) and whether a copy is mirrored, and where (the back ends' own logs)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from typer.testing import CliRunner

from cli.main import app
from proxy.config.loader import load_config
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener
from tests.proxy.app_fixtures import backend_app, hits, running_proxy, url, wait_until, write_config

ROUTES = """\
  - id: shadow-any
    match: {path: "/shadow/{id}"}
    mode: shadow
    shadow: {methods: [GET, POST, PUT, DELETE]}
  - id: shadow-dry
    match: {path: "/dry/{id}"}
    mode: shadow
    shadow: {methods: [GET, POST], side_effects: dry_run}
  - id: canary-header
    match: {path: "/ch/{id}"}
    mode: canary
    canary: {weight: 40, sticky: {header: X-User-Id}}
    shadow: {sample: 1.0}
  - id: canary-cookie
    match: {path: "/cc/{id}"}
    mode: canary
    canary: {weight: 60, sticky: {cookie: uid}}
  - id: new-verify
    match: {path: "/nv/{id}"}
    mode: new
    verify: {methods: [GET]}
  - id: legacy-only
    match: {path: "/lo/{id}"}
    mode: legacy
"""
SETTINGS = "store: {path: store.db}\n"
PATHS = ("/shadow/1", "/dry/1", "/ch/1", "/cc/1", "/nv/1", "/lo/1", "/unrouted")
METHODS = ("GET", "POST", "PUT")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


def _explain(config: Path, method: str, path: str, user: str) -> dict[str, Any]:
    args = ["explain", method, path, "-c", str(config), "-f", "json", "-H", f"X-User-Id: {user}"]
    args += ["--cookie", f"uid={user}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


async def test_explain_matches_the_running_proxy_for_every_route_method_and_sticky_key(tmp_path: Path) -> None:
    """For routes × methods × sticky keys, explain names the upstream that served each request and the upstream
    each mirrored copy reached (none when it says not mirrored)."""
    legacy, new = TestServer(backend_app("legacy")), TestServer(backend_app("new"))
    await legacy.start_server()
    await new.start_server()
    try:
        assert legacy.port is not None
        assert new.port is not None
        config = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=ROUTES)
        config.write_text(config.read_text().replace("routes:\n", SETTINGS + "routes:\n", 1))
        db_path = load_config(config).store.path

        def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
            return [ShadowListener.create(state.config, state.metrics, db_path)]

        expected_copies: dict[str, str] = {}  # request id -> upstream the copy must reach
        checked = 0
        async with running_proxy(config, listeners_factory=listeners, watch=False) as running:
            async with aiohttp.ClientSession() as session:
                for path in PATHS:
                    for method in METHODS:
                        for user in USERS:
                            doc = _explain(config, method, path, user)
                            request_id = f"m-{checked}"
                            headers = {"X-User-Id": user, "Cookie": f"uid={user}", "X-Request-Id": request_id}
                            async with session.request(method, url(running, path), headers=headers) as resp:
                                await resp.read()
                                assert resp.headers["X-Strangler-Upstream"] == doc["upstream"], (method, path, user)
                                assert resp.headers["X-Strangler-Route"] == (doc["route"] or "unmatched"), (
                                    method,
                                    path,
                                )
                            if doc["mirror_to"] is not None:
                                expected_copies[request_id] = doc["mirror_to"]
                            checked += 1

            def copies() -> dict[str, str]:
                found = {}
                for name, server in (("legacy", legacy), ("new", new)):
                    for hit in hits(server):
                        if "X-Strangler-Shadow" in hit.headers:
                            found[hit.headers["X-Request-Id"]] = name
                return found

            await wait_until(lambda: len(copies()) >= len(expected_copies))
        assert copies() == expected_copies
        assert checked == len(PATHS) * len(METHODS) * len(USERS)
        # The matrix exercised both sides of each canary and both mirrored and unmirrored requests.
        assert {"legacy", "new"} <= set(expected_copies.values())
    finally:
        await legacy.close()
        await new.close()
