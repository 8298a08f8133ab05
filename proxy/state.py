"""What the running proxy holds between requests: the current config snapshot, upstream pools, breakers, metrics.

A request reads `RuntimeState.snapshot` once and keeps that `Snapshot` to the end, so a hot reload (which swaps
the attribute in one assignment) never changes a request's routing mid-flight. Pools survive reloads when their
upstream's URL and size are unchanged; a replaced pool is closed only once no request uses it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from proxy.access.log import AccessLog, configure
from proxy.config.model import Config, Upstream
from proxy.events import ExchangeListener, ListenerHooks
from proxy.metrics import Metrics
from proxy.routing import RouteTable
from proxy.tasks import TaskOwner
from proxy.tls import upstream_context, upstream_tls_key
from proxy.upstream.breaker import Breaker
from proxy.upstream.transport import UpstreamPool
from proxy.websocket import websocket_session

log = logging.getLogger("strangler.proxy")

# How often a retired pool checks whether its last user is gone.
_RETIRE_POLL = 0.25


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One loaded config and the route table built from it; `generation` counts successful loads from 1."""

    config: Config
    table: RouteTable
    generation: int


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The outcome of the latest load attempt, shown by the admin /config endpoint."""

    ok: bool
    time: float  # wall clock, seconds since the epoch (UTC)
    generation: int  # the generation serving after this attempt
    errors: tuple[str, ...] = ()
    trigger: str = "start"  # start, file, sighup, admin


class PoolSlot:
    """An upstream pool and how many requests are using it right now (so a retired pool closes only when idle)."""

    __slots__ = ("key", "max_connections", "pool", "ssl_context", "users")

    def __init__(self, upstream: Upstream) -> None:
        self.key = upstream_tls_key(upstream)  # the URL, TLS settings and TLS files' signatures
        self.max_connections = upstream.max_connections
        self.ssl_context = upstream_context(upstream)  # also the websocket client's, for an https upstream
        self.pool = UpstreamPool(upstream.url, max_connections=upstream.max_connections, ssl_context=self.ssl_context)
        self.users = 0

    def fits(self, upstream: Upstream) -> bool:
        return self.key == upstream_tls_key(upstream) and self.max_connections == upstream.max_connections


def breaker_upstreams(config: Config) -> frozenset[str]:
    """The upstreams a circuit breaker gates: the new side of every route with `fallback`. Only these have a
    breaker (and a strangler_breaker_open series); others are never skipped, so a breaker would only mislead."""
    return frozenset(route.upstream for route in config.routes if route.fallback)


class RuntimeState:
    """Everything shared by the request handler, the admin app and the reloader. One per running proxy."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        metrics: Metrics | None = None,
        listeners: Iterable[ExchangeListener] = (),
        db_path: str | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.metrics = metrics if metrics is not None else Metrics()
        # None when the config has no access_log: (opened first: a path that cannot be opened fails the start)
        self.access_log: AccessLog | None = configure(None, snapshot.config, self.metrics.access_log_dropped)
        self.hooks = ListenerHooks.resolve(listeners)  # the listeners, their optional hooks found once
        # Store path given on the command line (--db); listeners use it instead of config.store.path.
        self.db_path = db_path
        self.pools: dict[str, PoolSlot] = {}
        self.breakers: dict[str, Breaker] = {}
        self.last_reload = ReloadResult(ok=True, time=time.time(), generation=snapshot.generation)
        self.ready = False  # listeners started and config loaded
        self.draining = False  # graceful shutdown in progress: /readyz answers 503
        self.ws_session: aiohttp.ClientSession | None = None
        self.tasks = TaskOwner("runtime-state")
        self._retired: set[PoolSlot] = set()
        self._sync_upstreams(snapshot.config)

    @property
    def listeners(self) -> tuple[ExchangeListener, ...]:
        return self.hooks.listeners

    def add_listeners(self, listeners: Iterable[ExchangeListener]) -> None:
        """Attach more listeners (at start-up, before traffic); their hooks are resolved here, once."""
        self.hooks = ListenerHooks.resolve((*self.hooks.listeners, *listeners))

    @property
    def config(self) -> Config:
        return self.snapshot.config

    async def open(self) -> None:
        """Create what needs a running loop: the websocket client session."""
        if self.ws_session is None:
            self.ws_session = websocket_session()

    def apply(self, config: Config, table: RouteTable) -> Snapshot:
        """Swap in a new config atomically; in-flight requests keep the snapshot they started with."""
        snapshot = Snapshot(config, table, self.snapshot.generation + 1)
        self._sync_upstreams(config)
        self._sync_access_log(config)
        self.snapshot = snapshot
        return snapshot

    def _sync_access_log(self, config: Config) -> None:
        """The new config's access log settings (a new path opens a new file; the old writer finishes)."""
        try:
            self.access_log = configure(self.access_log, config, self.metrics.access_log_dropped)
        except OSError as exc:
            log.error("%s; the access log keeps its previous settings", exc)

    def reopen_logs(self) -> None:
        """SIGUSR1: the access log file is opened again at its path (logrotate moved the old one)."""
        if self.access_log is not None:
            self.access_log.reopen()

    def breaker_changed(self, upstream: str, breaker: Breaker) -> None:
        self.metrics.breaker_state.set((upstream,), breaker.gauge)

    def _sync_upstreams(self, config: Config) -> None:
        old = self.pools
        pools: dict[str, PoolSlot] = {}
        gated = breaker_upstreams(config)
        for name, upstream in config.upstreams.items():
            slot = old.get(name)
            pools[name] = slot if slot is not None and slot.fits(upstream) else PoolSlot(upstream)
            if name not in gated:
                continue
            breaker = self.breakers.get(name)
            if breaker is None:
                self.breakers[name] = Breaker(upstream.breaker_failures, upstream.breaker_cooldown)
                self.metrics.breaker_state.set((name,), 0.0)
            else:  # a reload may retune it; its state (open, failures so far) is kept
                breaker.failure_threshold = upstream.breaker_failures
                breaker.cooldown = upstream.breaker_cooldown
        kept = {id(slot) for slot in pools.values()}
        self.pools = pools
        for name, slot in old.items():
            if id(slot) not in kept:
                log.info("upstream %s changed: its old connection pool closes once idle", name)
                self._retire(slot, config.limits.drain_timeout)
        for name in [n for n in self.breakers if n not in gated]:
            del self.breakers[name]
            self.metrics.breaker_state.values.pop((name,), None)

    def _retire(self, slot: PoolSlot, grace: float) -> None:
        self._retired.add(slot)
        # Shutting down (owner closed): close() closes every retired pool itself.
        with contextlib.suppress(RuntimeError):
            _ = self.tasks.start(self._close_when_idle(slot, grace), name="retire-pool")

    async def _close_when_idle(self, slot: PoolSlot, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Polling, not an Event: the request path then pays one integer increment, nothing more.
        while slot.users > 0 and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_RETIRE_POLL)
        await slot.pool.close()
        self._retired.discard(slot)

    async def close(self) -> None:
        """Close pools (current and retired), the websocket session and background tasks."""
        await self.tasks.close()
        slots = [*self.pools.values(), *self._retired]
        self._retired.clear()
        for slot in slots:
            await slot.pool.close()
        if self.ws_session is not None:
            await self.ws_session.close()
            self.ws_session = None
        access, self.access_log = self.access_log, None
        if access is not None:  # every line of the drained requests is written before the process exits
            await asyncio.to_thread(access.sink.close)
