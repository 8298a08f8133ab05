"""Builders for the shadow pipeline tests: recording back ends, a config file, the real proxy with the real
ShadowListener on a real SQLite file, and readers for what landed in that file.

    async with shadow_proxy(tmp_path, legacy.url, new.url, ROUTE) as sp:
        async with sp.session.get(sp.url + "/api/x") as r: ...
    rows = exchanges(sp.db)        # after the block: the proxy is stopped and the store flushed
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.app import RunningProxy, start_proxy
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.redact import key_path_for, load_or_create_key
from shadow.runner import ShadowLimits, ShadowListener
from shadow.store.writer import StoreWriter
from tests.proxy.app_fixtures import dead_port

DEFAULT_LIMITS = ShadowLimits()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as a back end received it."""

    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass(slots=True)
class Backend:
    """A real aiohttp back end on loopback that records every request before its handler answers."""

    runner: web.AppRunner
    url: str
    seen: list[Seen] = field(default_factory=list)

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_backend(handler: Handler) -> Backend:
    """Serve `handler` for every method and path on 127.0.0.1 (any free port)."""
    backend: Backend | None = None

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert backend is not None
        backend.seen.append(Seen(request.method, request.path_qs, CIMultiDict(request.headers), body))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    backend = Backend(runner, f"http://127.0.0.1:{runner.addresses[0][1]}")
    return backend


@asynccontextmanager
async def backends(*handlers: Handler) -> AsyncIterator[list[Backend]]:
    """One recording back end per handler, closed on exit."""
    started: list[Backend] = []
    try:
        for handler in handlers:
            started.append(await start_backend(handler))
        yield started
    finally:
        for backend in started:
            await backend.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused) for the rest of the test session."""
    return f"http://127.0.0.1:{dead_port()}"


def json_handler(doc: object, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(doc, status=status, headers=headers)

    return handler


# One route over /api/** by default; tests pass their own route blocks (YAML, indented by 2 under `routes:`).
SHADOW_ROUTE = """
- id: api
  match: {path: /api/**}
  mode: shadow
"""


def write_config(tmp_path: Path, legacy_url: str, new_url: str, routes: str, store: str = "") -> Path:
    """A routes.yaml in tmp_path with the store at tmp_path/shadow.db; `store` adds keys under `store:`."""
    text = f"""\
version: 1
listen: {{host: 127.0.0.1, port: 8080}}
admin: {{host: 127.0.0.1, port: 8081}}
store:
  path: shadow.db
{textwrap.indent(textwrap.dedent(store).strip(), "  ") if store.strip() else ""}
upstreams:
  legacy: {{url: "{legacy_url}"}}
  new: {{url: "{new_url}"}}
routes:
{textwrap.indent(textwrap.dedent(routes).strip(), "  ")}
"""
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


@dataclass(slots=True)
class ShadowProxy:
    """A running proxy with a shadow listener, and a client session to talk to it."""

    running: RunningProxy
    listener: ShadowListener
    session: aiohttp.ClientSession
    db: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.running.admin_port}"

    def metric(self, name: str, *labels: str) -> float:
        """A counter or gauge value from the live registry (0 when never set)."""
        metrics = self.running.state.metrics
        for m in (metrics.shadow, metrics.shadow_queue, *metrics.extra):
            if m.name == name:
                return float(m.values.get(tuple(labels), 0.0))  # type: ignore[union-attr]
        raise KeyError(name)

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], list[str], bytes]:
        """Status, headers, every Set-Cookie value and body of one request through the proxy."""
        async with self.session.request(method, self.url + path, **kwargs) as r:
            body = await r.read()
            return r.status, dict(r.headers), r.headers.getall("Set-Cookie", []), body

    async def until(self, check: Callable[[], bool], what: str = "condition") -> None:
        """Wait (bounded, 5 s) for something the background pipeline does."""
        for _ in range(500):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def shadow_proxy(
    tmp_path: Path,
    legacy_url: str,
    new_url: str,
    routes: str = SHADOW_ROUTE,
    *,
    store: str = "",
    limits: ShadowLimits = DEFAULT_LIMITS,
    seed: int | None = None,
) -> AsyncIterator[ShadowProxy]:
    """Start the real proxy (ephemeral ports) with a ShadowListener; on exit stop it, which flushes the store.

    `seed` makes sampling deterministic (a seeded random source instead of `random.random`).
    """
    config_path = write_config(tmp_path, legacy_url, new_url, routes, store)
    made: list[ShadowListener] = []

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        config = state.config
        if seed is None:
            listener = ShadowListener.create(config, state.metrics, limits=limits)
        else:
            path = config.store.path
            writer = StoreWriter(path, retention=config.store.retention)
            key = load_or_create_key(key_path_for(path))
            rand = random.Random(seed).random
            listener = ShadowListener(metrics=state.metrics, writer=writer, key=key, limits=limits, rand=rand)
        made.append(listener)
        return [listener]

    running = await start_proxy(
        config_path, host="127.0.0.1", port=0, admin_port=0, listeners_factory=listeners, watch=False
    )
    try:
        async with aiohttp.ClientSession() as session:
            yield ShadowProxy(running, made[0], session, tmp_path / "shadow.db")
    finally:
        await running.stop()


def query(db: Path, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
    """Rows of one read-only query on the store file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def exchanges(db: Path) -> list[sqlite3.Row]:
    return query(db, "SELECT * FROM exchanges ORDER BY id")


def differences(db: Path, pair: str | None = None) -> list[sqlite3.Row]:
    if pair is None:
        return query(db, "SELECT * FROM differences ORDER BY id")
    return query(db, "SELECT * FROM differences WHERE pair = ? ORDER BY id", (pair,))
