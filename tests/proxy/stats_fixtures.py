"""A real proxy with loopback back ends and a known mix of traffic, for the /stats and `watch` tests.

Routes: `items` (shadow, every request also a noise pair; new differs on every third item, legacy answers a
changing nonce on every fourth, so both pairs see matches and mismatches), `search` (mode new), `boom` (legacy
answers 503), and unrouted requests.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.app import RunningProxy, start_proxy
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener
from tests.proxy.app_fixtures import wait_until

ITEMS = 12
PATHS = (*(f"/items/{i}" for i in range(ITEMS)), "/search", "/search", "/search", "/boom", "/boom", "/other")

ROUTES = """\
version: 1
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
routes:
  - {{id: items, match: {{path: "/items/{{id}}"}}, mode: shadow, noise: {{sample: 1.0}}}}
  - {{id: search, match: {{path: /search}}, mode: new, fallback: legacy}}
  - {{id: boom, match: {{path: /boom}}, mode: legacy}}
"""


def backend(version: int) -> web.Application:
    nonce = itertools.count()

    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["id"])
        body: dict[str, object] = {"id": n, "v": version if n % 3 == 0 else 1}
        if version == 1 and n % 4 == 0:
            body["nonce"] = next(nonce)  # legacy differs from itself: a noise mismatch
        return web.json_response(body)

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    async def boom(request: web.Request) -> web.Response:
        return web.json_response({"error": "down"}, status=503)

    application = web.Application()
    application.router.add_get("/items/{id}", item)
    application.router.add_get("/search", plain)
    application.router.add_get("/other", plain)
    application.router.add_get("/boom", boom)
    return application


@asynccontextmanager
async def proxy_with_traffic(tmp_path: Path, aiohttp_server: AiohttpServer) -> AsyncIterator[RunningProxy]:
    """The proxy after PATHS were each requested once and every shadow pair was counted."""
    legacy, new = await aiohttp_server(backend(1)), await aiohttp_server(backend(2))
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTES.format(legacy=legacy.port, new=new.port), encoding="utf-8")

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, tmp_path / "strangler.db")]

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch=False)
    try:
        async with aiohttp.ClientSession() as session:
            for path in PATHS:
                async with session.get(f"http://127.0.0.1:{running.proxy_port}{path}") as resp:
                    await resp.read()
        shadow = running.state.metrics.shadow
        await wait_until(lambda: sum(shadow.values.values()) == 2 * ITEMS)  # a candidate and a noise pair each
        queues = running.state.metrics.shadow_queue
        await wait_until(lambda: not any(queues.values.values()))
        yield running
    finally:
        await running.stop(drain_timeout=2.0)
