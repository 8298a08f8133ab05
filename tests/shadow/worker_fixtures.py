"""Builders for the shadow worker tests: the real proxy with a real `ShadowBridge` (and so a real worker process) on
a real SQLite file, plus readers for the proxy's registry and for this process's children.

    async with worker_proxy(tmp_path, legacy.url, new.url) as wp:
        await wp.get("/api/x")
        pid = await wp.worker_started()
    rows = exchanges(wp.db)        # after the block: the proxy is stopped, the worker flushed the store and exited
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from proxy.app import RunningProxy, start_proxy
from proxy.events import ExchangeListener
from proxy.metrics import Histogram
from proxy.state import RuntimeState
from shadow.worker.bridge import RESTART_METRIC, ShadowBridge
from tests.shadow.shadow_fixtures import SHADOW_ROUTE, write_config

WAIT = 10.0  # seconds any background step (a worker start, a metric report, a restart) may take at most


@dataclass(slots=True)
class WorkerProxy:
    """A running proxy whose shadow side runs in a worker process, and a client session to talk to it."""

    running: RunningProxy
    bridge: ShadowBridge
    session: aiohttp.ClientSession
    db: Path
    config_path: Path
    pids: list[int] = field(default_factory=list)  # every worker pid seen by `worker_started`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.running.admin_port}"

    def metric(self, name: str, *labels: str) -> float:
        """A counter or gauge value from the proxy's live registry (0 when the metric or series does not exist)."""
        for m in self.running.state.metrics.all():
            if m.name == name and not isinstance(m, Histogram):
                return m.values.get(tuple(labels), 0.0)
        return 0.0

    def shadow(self, outcome: str, reason: str = "", route: str = "api", pair: str = "candidate") -> float:
        """strangler_shadow_total for one route, pair, outcome and reason."""
        return self.running.state.metrics.shadow.get((route, pair, outcome, reason))

    def restarts(self) -> float:
        return self.metric(RESTART_METRIC)

    async def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of one GET through the proxy."""
        async with self.session.get(self.url + path) as r:
            return r.status, await r.read()

    async def worker_started(self, other_than: int | None = None) -> int:
        """The running worker's pid once there is one (and it is not `other_than`)."""
        await until(lambda: self.bridge.worker_pid not in (None, other_than), "a running shadow worker")
        pid = self.bridge.worker_pid
        assert pid is not None
        self.pids.append(pid)
        return pid


async def until(check: Callable[[], bool], what: str, seconds: float = WAIT) -> None:
    """Wait (bounded) for something a background task or the worker process does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def worker_proxy(
    tmp_path: Path,
    legacy_url: str,
    new_url: str,
    routes: str = SHADOW_ROUTE,
    *,
    store: str = "",
    bridge_options: dict[str, Any] | None = None,
    top_level: str = "",
) -> AsyncIterator[WorkerProxy]:
    """Start the real proxy (ephemeral ports) with a ShadowBridge on tmp_path/shadow.db; on exit stop it, which
    closes the worker after it has flushed the store. `bridge_options` go to the ShadowBridge constructor
    (max_backlog, close_deadline, rand); without them the bridge comes from `ShadowBridge.create`, as in serve.
    `top_level` is YAML appended to the config (top-level sections such as `limits:`)."""
    config_path = write_config(tmp_path, legacy_url, new_url, routes, store)
    if top_level:  # more top-level sections (e.g. limits:), after the routes
        config_path.write_text(config_path.read_text() + top_level.strip() + "\n")
    db = tmp_path / "shadow.db"
    made: list[ShadowBridge] = []

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        bridge = ShadowBridge.create(state) if bridge_options is None else ShadowBridge(state, db, **bridge_options)
        made.append(bridge)
        return [bridge]

    running = await start_proxy(
        config_path, host="127.0.0.1", port=0, admin_port=0, listeners_factory=listeners, watch=False
    )
    try:
        async with aiohttp.ClientSession() as session:
            yield WorkerProxy(running, made[0], session, db, config_path)
    finally:
        await running.stop()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts: it has not been reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int | None = None) -> list[int]:
    """The pids of a process's children (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended while we looked
            continue
    return out


def cmdline(pid: int) -> list[str]:
    """A process's argv, from /proc ([] once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode() for part in raw.split(b"\0") if part]
