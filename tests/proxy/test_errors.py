"""Typed error kinds: the one table from kinds to statuses and upstream blame, and a full pool that waits on its own
`timeouts.pool` and is never the upstream's fault (no breaker failure, no fallback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import aiohttp
import pytest
from aiohttp import web

from proxy.errors import (
    KINDS,
    UPSTREAM_FAULTS,
    ErrorKind,
    RequestBodyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPoolTimeout,
    UpstreamReset,
    UpstreamTimeout,
    UpstreamTLSError,
)
from tests.proxy.app_fixtures import backend_app, hits, running_proxy, url, wait_until, write_config


def test_every_kind_has_one_meaning() -> None:
    """The table names every ErrorKind exactly once, and nothing else."""
    assert set(KINDS) == set(get_args(ErrorKind))


def test_only_connect_tls_timeout_and_reset_blame_the_upstream() -> None:
    """Only an upstream that refused, failed its TLS handshake, stalled or broke counts against it; a full pool and
    client faults do not."""
    assert frozenset({"connect", "tls", "timeout", "reset"}) == UPSTREAM_FAULTS


def test_each_exception_names_its_kind() -> None:
    """Every exception class carries a kind from the table, and the table's status is what a client gets."""
    classes: list[type[UpstreamError] | type[RequestBodyError]] = [
        UpstreamError,
        UpstreamConnectError,
        UpstreamTLSError,
        UpstreamPoolTimeout,
        UpstreamTimeout,
        UpstreamReset,
        *RequestBodyError.__subclasses__(),
    ]
    assert {cls.kind for cls in classes} == set(KINDS)
    assert KINDS["pool_timeout"].status == 503
    assert KINDS["timeout"].status == 504
    assert KINDS["connect"].status == 502
    assert KINDS["tls"].status == 502


POOL_ROUTES = """\
  - id: orders
    match: {path: "/api/orders/**"}
    mode: new
    fallback: legacy
    timeouts: {connect: 1s, read: 5s, pool: 200ms}
"""


async def _answer(client: aiohttp.ClientSession, target: str) -> tuple[int, str]:
    async with client.get(target) as resp:
        return resp.status, str((await resp.json())["side"])


@pytest.fixture
async def held_new(aiohttp_server: Any) -> AsyncIterator[tuple[Any, asyncio.Event, list[str]]]:
    """A new back end that takes each request and answers only once `release` is set."""
    release = asyncio.Event()
    arrived: list[str] = []

    async def hold(request: web.Request) -> web.StreamResponse:
        arrived.append(request.path)
        await release.wait()
        return web.json_response({"side": "new"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hold)
    server = await aiohttp_server(app)
    yield server, release, arrived
    release.set()


async def test_full_pool_is_a_503_that_never_trips_the_breaker_or_falls_back(
    aiohttp_server: Any, held_new: tuple[Any, asyncio.Event, list[str]], tmp_path: Path
) -> None:
    """With new's only connection held by a slow request, a second request waits `timeouts.pool`, then gets a 503
    `pool_timeout`; the breaker (threshold 1) stays closed and legacy is never asked."""
    legacy = await aiohttp_server(backend_app("legacy"))
    new, release, arrived = held_new
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=POOL_ROUTES)
    one_slot = f'new: {{url: "http://127.0.0.1:{new.port}"}}'
    tight = f'new: {{url: "http://127.0.0.1:{new.port}", max_connections: 1, breaker_failures: 1}}'
    path.write_text(path.read_text().replace(one_slot, tight))
    async with running_proxy(path, watch=False) as running, aiohttp.ClientSession() as client:
        slow = asyncio.ensure_future(_answer(client, url(running, "/api/orders/1")))
        try:
            await wait_until(lambda: arrived == ["/api/orders/1"])
            async with client.get(url(running, "/api/orders/2")) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"] == "pool_timeout"
            state = running.state
            assert state.breakers["new"].state == "closed"
            assert state.metrics.fallbacks.get(("orders", "pool_timeout")) == 0
            assert state.metrics.upstream_errors.get(("new", "pool_timeout")) == 0
            assert state.metrics.rejected.get(("pool_timeout",)) == 1
            assert hits(legacy) == []
            release.set()
            assert await slow == (200, "new")
            assert arrived == ["/api/orders/1"]
        finally:
            release.set()
            if not slow.done():
                slow.cancel()
