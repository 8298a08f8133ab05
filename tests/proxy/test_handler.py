"""The request handler end to end: real proxy, real loopback back ends, routing by mode, fallback, events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import RunningProxy
from proxy.events import ExchangeObserver, ExchangeStart, ResponseSnapshot
from tests.proxy.app_fixtures import (
    backend_app,
    dead_port,
    hits,
    raw_exchange,
    running_proxy,
    status_of,
    url,
    write_config,
)

ROUTES = """\
  - id: orders
    match: {path: "/api/orders/**"}
    mode: new
  - id: legacy-users
    match: {path: "/api/users/**"}
    mode: legacy
  - id: items
    match: {path: "/api/items/**"}
    mode: shadow
  - id: carts
    match: {path: "/api/carts/{id}"}
    mode: canary
    canary: {weight: 50, sticky: {header: X-User}}
  - id: files
    match: {path: "/files/**", allow_encoded_slash: true}
    mode: new
"""


@dataclass
class Backends:
    legacy: TestServer
    new: TestServer


@pytest.fixture
async def backends(aiohttp_server: Any) -> Backends:
    return Backends(await aiohttp_server(backend_app("legacy")), await aiohttp_server(backend_app("new")))


@pytest.fixture
async def proxy(backends: Backends, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    assert backends.legacy.port is not None
    assert backends.new.port is not None
    path = write_config(
        tmp_path / "routes.yaml", legacy=backends.legacy.port, new=backends.new.port, routes=ROUTES, new_base="/base"
    )
    async with running_proxy(path, watch=False) as running:
        yield running


async def _side(client: aiohttp.ClientSession, target: str, **kwargs: Any) -> str:
    async with client.get(target, **kwargs) as resp:
        assert resp.status == 200
        return str((await resp.json())["side"])


async def test_modes_dispatch_to_their_side(
    proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """new-mode routes reach the new back end; legacy and shadow routes reach legacy."""
    assert await _side(client, url(proxy, "/api/orders/1")) == "new"
    assert await _side(client, url(proxy, "/api/users/1")) == "legacy"
    assert await _side(client, url(proxy, "/api/items/1")) == "legacy"


async def test_unmatched_goes_to_default_legacy(
    proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """A path no route matches is served by defaults.legacy, path and query unchanged."""
    async with client.get(url(proxy, "/somewhere/else?a=1&b=2")) as resp:
        assert resp.status == 200
        assert resp.headers["X-Strangler-Route"] == "unmatched"
        assert resp.headers["X-Strangler-Upstream"] == "legacy"
    assert [h.path for h in hits(backends.legacy)] == ["/somewhere/else?a=1&b=2"]


async def test_new_upstream_gets_base_path_prefix(
    proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """The new upstream's base path is prefixed to the canonical path; the query string is kept."""
    await _side(client, url(proxy, "/api/orders/7?x=%20y"))
    assert [h.path for h in hits(backends.new)] == ["/base/api/orders/7?x=%20y"]


async def test_encoded_slash_traversal_is_refused_without_backend(proxy: RunningProxy, backends: Backends) -> None:
    """`/public/..%2Fadmin` is a 400 with a request id and neither back end sees it."""
    response = await raw_exchange(
        proxy.proxy_port, b"GET /public/..%2Fadmin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 400
    assert b"X-Request-Id:" in response
    assert b"encoded_slash" in response
    assert hits(backends.legacy) == []
    assert hits(backends.new) == []


async def test_bad_path_is_refused_without_backend(proxy: RunningProxy, backends: Backends) -> None:
    """A malformed percent-escape is a 400 that never reaches a back end."""
    response = await raw_exchange(
        proxy.proxy_port, b"GET /api/orders/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 400
    assert hits(backends.legacy) == []
    assert hits(backends.new) == []


async def test_route_allowing_encoded_slash_forwards_it(proxy: RunningProxy, backends: Backends) -> None:
    """A route with allow_encoded_slash forwards %2F still encoded."""
    response = await raw_exchange(
        proxy.proxy_port, b"GET /files/a%2fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 200
    assert [h.path for h in hits(backends.new)] == ["/base/files/a%2Fb"]


async def test_dot_segments_route_and_forward_canonical(proxy: RunningProxy, backends: Backends) -> None:
    """`/api/users/../orders/5` is routed as /api/orders/5 (new) and forwarded in that canonical form."""
    response = await raw_exchange(
        proxy.proxy_port, b"GET /api/users/../orders//5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 200
    assert [h.path for h in hits(backends.new)] == ["/base/api/orders/5"]
    assert hits(backends.legacy) == []


async def test_canary_sticky_header_is_consistent(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """Each X-User value always lands on the same side, and at 50% both sides get some users."""
    sides_per_user: dict[str, set[str]] = {}
    for user in range(24):
        for _ in range(3):
            side = await _side(client, url(proxy, f"/api/carts/{user}"), headers={"X-User": f"user-{user}"})
            sides_per_user.setdefault(f"user-{user}", set()).add(side)
    assert all(len(sides) == 1 for sides in sides_per_user.values())
    assert {side for sides in sides_per_user.values() for side in sides} == {"legacy", "new"}


async def test_debug_and_request_id_headers(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """Responses carry the route, the upstream and a request id; a valid incoming id is kept and forwarded."""
    async with client.get(url(proxy, "/api/orders/1"), headers={"X-Request-Id": "abc-123"}) as resp:
        assert resp.headers["X-Strangler-Route"] == "orders"
        assert resp.headers["X-Strangler-Upstream"] == "new"
        assert resp.headers["X-Request-Id"] == "abc-123"
        assert "strangler" in resp.headers["Via"]
    async with client.get(url(proxy, "/api/users/1"), headers={"X-Request-Id": "bad id with spaces"}) as resp:
        assert resp.headers["X-Request-Id"] != "bad id with spaces"
        assert len(resp.headers["X-Request-Id"]) == 32


async def test_post_body_is_streamed_to_backend(
    proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """A request body reaches the back end intact."""
    payload = b"x" * 200_000
    async with client.post(url(proxy, "/api/orders"), data=payload) as resp:
        assert resp.status == 200
    assert hits(backends.new)[0].body == payload


async def test_metrics_count_requests(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """Served requests are counted by route, upstream and status class."""
    await _side(client, url(proxy, "/api/orders/1"))
    await _side(client, url(proxy, "/nowhere"))
    metrics = proxy.state.metrics
    assert metrics.requests.get(("orders", "new", "2xx")) == 1
    assert metrics.requests.get(("unmatched", "legacy", "2xx")) == 1
    assert metrics.latency.count(("orders", "new")) == 1


FALLBACK_ROUTES = """\
  - id: orders
    match: {path: "/api/orders/**"}
    mode: new
    fallback: legacy
    timeouts: {connect: 1s, read: 5s}
  - id: plain
    match: {path: "/api/plain/**"}
    mode: new
"""


@pytest.fixture
async def dead_new_proxy(backends: Backends, tmp_path: Path) -> AsyncIterator[RunningProxy]:
    """A proxy whose new upstream refuses connections."""
    assert backends.legacy.port is not None
    path = write_config(
        tmp_path / "routes.yaml",
        legacy=backends.legacy.port,
        new=dead_port(),
        routes=FALLBACK_ROUTES,
        settings="limits: {max_body: 64KiB}",
    )
    async with running_proxy(path, watch=False) as running:
        yield running


async def test_fallback_get_served_by_legacy(
    dead_new_proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """A GET on a fallback route whose new upstream refuses the connection is answered by legacy."""
    async with client.get(url(dead_new_proxy, "/api/orders/1")) as resp:
        assert resp.status == 200
        assert (await resp.json())["side"] == "legacy"
        assert resp.headers["X-Strangler-Upstream"] == "legacy"
    metrics = dead_new_proxy.state.metrics
    assert metrics.fallbacks.get(("orders", "connect")) == 1
    assert metrics.upstream_errors.get(("new", "connect")) == 1


async def test_fallback_post_body_resent_to_legacy(
    dead_new_proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """A POST whose body never left for the refused new upstream is sent, body and all, to legacy."""
    async with client.post(url(dead_new_proxy, "/api/orders"), data=b'{"qty": 2}') as resp:
        assert resp.status == 200
        assert (await resp.json())["side"] == "legacy"
    assert hits(backends.legacy)[0].body == b'{"qty": 2}'
    assert hits(backends.legacy)[0].method == "POST"


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 1000):
        yield b"c" * 1000


async def test_fallback_chunked_body_resent_to_legacy(
    dead_new_proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """A chunked body (no Content-Length) on a fallback route is held and re-sent whole to legacy."""
    async with client.post(url(dead_new_proxy, "/api/orders"), data=_chunks(20_000)) as resp:
        assert resp.status == 200
        assert (await resp.json())["side"] == "legacy"
    assert hits(backends.legacy)[0].body == b"c" * 20_000


async def test_chunked_body_over_max_body_is_413(
    dead_new_proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """A chunked body past limits.max_body on a fallback route is refused with 413 and reaches no back end."""
    async with client.post(url(dead_new_proxy, "/api/orders"), data=_chunks(100_000)) as resp:
        assert resp.status == 413
        assert resp.headers["X-Request-Id"]
    assert hits(backends.legacy) == []


async def test_no_fallback_route_answers_502(
    dead_new_proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """Without fallback a refused new upstream is a 502 JSON error, and legacy is not contacted."""
    async with client.get(url(dead_new_proxy, "/api/plain/1")) as resp:
        assert resp.status == 502
        assert (await resp.json())["route"] == "plain"
        assert resp.headers["X-Request-Id"]
    assert hits(backends.legacy) == []


@dataclass
class StallingNew:
    """A new back end that executes each request (reads its body, counts it) and then never answers in time."""

    server: TestServer
    executed: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def stalling_new(aiohttp_server: Any) -> AsyncIterator[StallingNew]:
    app = web.Application()
    holder: list[StallingNew] = []

    async def stall(request: web.Request) -> web.StreamResponse:
        await request.read()
        holder[0].executed.append(request.method)
        await holder[0].release.wait()
        return web.json_response({"side": "new"})

    app.router.add_route("*", "/{tail:.*}", stall)
    stalling = StallingNew(await aiohttp_server(app))
    holder.append(stalling)
    yield stalling
    stalling.release.set()  # let the held handlers end before the server closes


@pytest.fixture
async def stalling_new_proxy(
    backends: Backends, stalling_new: StallingNew, tmp_path: Path
) -> AsyncIterator[RunningProxy]:
    """A fallback route whose new upstream takes every request and then stalls past the read timeout."""
    assert backends.legacy.port is not None
    assert stalling_new.server.port is not None
    routes = FALLBACK_ROUTES.replace("read: 5s", "read: 200ms")
    path = write_config(
        tmp_path / "routes.yaml", legacy=backends.legacy.port, new=stalling_new.server.port, routes=routes
    )
    async with running_proxy(path, watch=False) as running:
        yield running


async def test_fallback_never_resends_a_post_the_new_side_received(
    stalling_new_proxy: RunningProxy, stalling_new: StallingNew, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """A POST whose body reached the new side before it timed out is executed once: the client gets 504 and
    legacy never sees the write."""
    async with client.post(url(stalling_new_proxy, "/api/orders"), data=b'{"qty": 2}') as resp:
        assert resp.status == 504
        assert (await resp.json())["route"] == "orders"
    assert stalling_new.executed == ["POST"]
    assert hits(backends.legacy) == []
    assert not stalling_new_proxy.state.metrics.fallbacks.get(("orders", "timeout"))


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_fallback_resends_an_idempotent_request_after_a_timeout(
    stalling_new_proxy: RunningProxy,
    stalling_new: StallingNew,
    backends: Backends,
    client: aiohttp.ClientSession,
    method: str,
) -> None:
    """An idempotent request the new side received but did not answer in time is served by legacy."""
    async with client.request(method, url(stalling_new_proxy, "/api/orders/1"), data=b"x") as resp:
        assert resp.status == 200
        assert (await resp.json())["side"] == "legacy"
    assert stalling_new.executed == [method]
    assert [h.method for h in hits(backends.legacy)] == [method]
    assert stalling_new_proxy.state.metrics.fallbacks.get(("orders", "timeout")) == 1


async def test_breaker_opens_and_sends_straight_to_legacy(
    dead_new_proxy: RunningProxy, backends: Backends, client: aiohttp.ClientSession
) -> None:
    """After 5 connect failures the breaker opens: further requests skip the new upstream entirely."""
    for _ in range(5):
        assert await _side(client, url(dead_new_proxy, "/api/orders/1")) == "legacy"
    state = dead_new_proxy.state
    assert state.breakers["new"].state == "open"
    assert state.metrics.breaker_state.get(("new",)) == 1.0
    for _ in range(3):
        assert await _side(client, url(dead_new_proxy, "/api/orders/1")) == "legacy"
    assert state.metrics.fallbacks.get(("orders", "breaker_open")) == 3
    assert state.metrics.upstream_errors.get(("new", "connect")) == 5


async def test_breaker_thresholds_come_from_the_upstream_and_follow_reloads(
    backends: Backends, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """upstreams.new.breaker_failures 2 opens the breaker after 2 failures, not 5; a reload that raises it to 9
    retunes the same breaker (still open) instead of replacing it."""
    assert backends.legacy.port is not None
    dead = dead_port()
    path = write_config(tmp_path / "routes.yaml", legacy=backends.legacy.port, new=dead, routes=FALLBACK_ROUTES)
    plain = f'new: {{url: "http://127.0.0.1:{dead}"}}'
    tuned = f'new: {{url: "http://127.0.0.1:{dead}", breaker_failures: 2, breaker_cooldown: 30s}}'
    path.write_text(path.read_text().replace(plain, tuned))
    async with running_proxy(path, watch=False) as running:
        state = running.state
        for _ in range(2):
            assert await _side(client, url(running, "/api/orders/1")) == "legacy"
        breaker = state.breakers["new"]
        assert (breaker.state, breaker.failure_threshold, breaker.cooldown) == ("open", 2, 30.0)
        assert await _side(client, url(running, "/api/orders/1")) == "legacy"
        assert state.metrics.fallbacks.get(("orders", "breaker_open")) == 1
        path.write_text(path.read_text().replace("breaker_failures: 2", "breaker_failures: 9"))
        assert (await running.reload("test")).ok
        assert state.breakers["new"] is breaker
        assert (breaker.state, breaker.failure_threshold) == ("open", 9)


@dataclass
class Recorder:
    """An ExchangeListener that records what the core tells it."""

    starts: list[ExchangeStart] = field(default_factory=list)
    done: list[ResponseSnapshot] = field(default_factory=list)

    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        self.starts.append(start)
        return self

    def primary_done(self, primary: ResponseSnapshot) -> None:
        self.done.append(primary)


class Broken:
    """A listener that always raises: it must never affect the client."""

    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        raise RuntimeError("listener bug")


async def test_listeners_see_start_and_primary(backends: Backends, tmp_path: Path) -> None:
    """Listeners get the route, side, mirror options and captured bodies; a raising listener is ignored."""
    assert backends.legacy.port is not None
    assert backends.new.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=backends.legacy.port, new=backends.new.port, routes=ROUTES)
    recorder = Recorder()
    async with (
        running_proxy(path, watch=False, listeners=[Broken(), recorder]) as running,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(url(running, "/api/items/9?q=1")) as resp:
            assert resp.status == 200
            body = await resp.read()
        async with client.get(url(running, "/api/orders/1")) as resp:
            assert resp.status == 200
    shadowed, plain = recorder.starts
    assert shadowed.route is not None
    assert shadowed.route.id == "items"
    assert shadowed.served_by == "legacy"
    assert shadowed.mirror is not None
    assert shadowed.request.path == "/api/items/9"
    assert shadowed.request.query_string == "q=1"
    assert shadowed.request.body == b""
    assert shadowed.request.body_note is None
    assert plain.mirror is None
    assert plain.request.body_note == "not_mirrored"
    first, second = recorder.done
    assert first.side == "legacy"
    assert first.status == 200
    assert first.body == body
    assert first.body_complete
    assert second.side == "new"
    assert second.body is None
    for done in (first, second):  # an observer gets the response headers, whether or not the route mirrors
        assert "content-type" in {name.lower() for name, _ in done.decoded().headers}


async def test_websocket_passes_through(aiohttp_server: Any, tmp_path: Path) -> None:
    """A websocket upgrade on a routed path is proxied to that route's upstream."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("new:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/api/orders/ws", echo)
    new = await aiohttp_server(app)
    path = write_config(tmp_path / "routes.yaml", legacy=dead_port(), new=new.port, routes=ROUTES)
    async with (
        running_proxy(path, watch=False) as running,
        aiohttp.ClientSession() as client,
        client.ws_connect(url(running, "/api/orders/ws")) as ws,
    ):
        await ws.send_str("hello")
        assert await ws.receive_str() == "new:hello"
