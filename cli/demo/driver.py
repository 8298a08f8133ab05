"""`strangler demo`: start the demo apps and the proxy, drive a deterministic mix of traffic, show what happened.

The traffic plan is a pure function of (count, seed), so two runs send the same requests in the same order; only
the concurrency interleaving varies. The per-route summary comes from the proxy's own metrics and admin API.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.demo import data
from cli.demo.legacy_app import make_legacy_app
from cli.demo.new_app import make_new_app
from cli.output import CliError, stdout_console
from proxy.config.loader import load_config
from proxy.config.model import Config

DEFAULT_SEED = 7
CONCURRENCY = 8
USERS = 50  # distinct X-User-Id values, so canary stickiness has buckets to spread


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    method: str
    path: str  # with query string
    headers: tuple[tuple[str, str], ...]
    body: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class RouteActivity:
    """One row of the demo's summary: what a route (or unmatched traffic, route "") did."""

    route: str
    mode: str
    by_upstream: tuple[tuple[str, int], ...]
    by_class: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.by_upstream)


# (weight, endpoint) pairs: reads dominate, as in most APIs.
_MIX = (
    (14, "orders"),
    (22, "order"),
    (14, "customer"),
    (10, "catalog"),
    (10, "item"),
    (12, "search"),
    (6, "create"),
    (6, "report"),
    (6, "health"),
)
_SEARCH_TERMS = ("coffee", "tea", "mug", "beans", "grinder", "jar", "flask", "cocoa", "zzz")


def plan_requests(count: int, seed: int = DEFAULT_SEED) -> list[PlannedRequest]:
    """`count` requests over every demo endpoint, the same list for the same (count, seed)."""
    rnd = random.Random(seed)
    kinds = [kind for _, kind in _MIX]
    weights = [w for w, _ in _MIX]
    plan = []
    for _ in range(count):
        headers = (("X-User-Id", str(rnd.randrange(1, USERS + 1))), ("Accept", "application/json"))
        kind = rnd.choices(kinds, weights)[0]
        plan.append(_request(kind, rnd, headers))
    return plan


def _request(kind: str, rnd: random.Random, headers: tuple[tuple[str, str], ...]) -> PlannedRequest:
    d = data.DATA
    if kind == "orders":
        return PlannedRequest("GET", f"/api/orders?page={rnd.randrange(1, 4)}&per_page=20", headers)
    if kind == "order":
        # Now and then an order that does not exist: both sides must agree on the 404.
        order_id = rnd.choice(d.orders).id if rnd.random() > 0.05 else 9999
        return PlannedRequest("GET", f"/api/orders/{order_id}", headers)
    if kind == "customer":
        return PlannedRequest("GET", f"/api/customers/{rnd.choice(d.customers).id}", headers)
    if kind == "catalog":
        return PlannedRequest("GET", "/api/catalog/items", headers)
    if kind == "item":
        return PlannedRequest("GET", f"/api/catalog/items/{rnd.choice(d.catalog).sku}", headers)
    if kind == "search":
        return PlannedRequest("GET", f"/api/search?q={rnd.choice(_SEARCH_TERMS)}", headers)
    if kind == "create":
        items = [{"sku": it.sku, "quantity": rnd.randrange(1, 3)} for it in rnd.sample(d.catalog, 2)]
        body = {"customer_id": rnd.choice(d.customers).id, "items": items}
        return PlannedRequest("POST", "/api/orders", (*headers, ("Content-Type", "application/json")), body)
    if kind == "report":
        return PlannedRequest("GET", "/reports/sales", headers)
    return PlannedRequest("GET", "/health", headers)


def summarize(
    requests: Mapping[tuple[str, ...], float], modes: Mapping[str, str], route_order: list[str]
) -> list[RouteActivity]:
    """Rows from the proxy's request counter (keyed route, upstream, status class), in config order."""
    upstreams: dict[str, dict[str, int]] = {}
    classes: dict[str, dict[str, int]] = {}
    for labels, value in requests.items():
        route, upstream, status_class = (*labels, "", "", "")[:3]
        n = int(value)
        per_up = upstreams.setdefault(route, {})
        per_up[upstream] = per_up.get(upstream, 0) + n
        per_class = classes.setdefault(route, {})
        per_class[status_class] = per_class.get(status_class, 0) + n
    order = [r for r in route_order if r in upstreams] + sorted(r for r in upstreams if r not in route_order)
    return [
        RouteActivity(
            route=r,
            mode=modes.get(r, "legacy"),
            by_upstream=tuple(sorted(upstreams[r].items())),
            by_class=tuple(sorted(classes[r].items())),
        )
        for r in order
    ]


def activity_table(rows: list[RouteActivity]) -> Table:
    table = Table(title="What each route did", title_justify="left")
    for column in ("route", "mode", "requests", "served by", "status classes"):
        table.add_column(column, justify="right" if column == "requests" else "left")
    for row in rows:
        table.add_row(
            escape(row.route or "(unmatched)"),
            row.mode,
            str(row.total),
            escape(", ".join(f"{u or '-'} {n}" for u, n in row.by_upstream)),
            ", ".join(f"{c or '-'} {n}" for c, n in row.by_class),
        )
    return table


async def _start_app(app: web.Application, host: str, port: int, what: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(f"cannot start the demo {what} app on {host}:{port}: {exc.strerror or exc}") from exc
    return runner


def _address(config: Config, name: str) -> tuple[str, int]:
    upstream = config.upstreams.get(name)
    if upstream is None or upstream.url.host is None or upstream.url.port is None:
        raise CliError(f"{config.source}: the demo needs an upstream '{name}' with host and port")
    return upstream.url.host, upstream.url.port


async def drive(
    base_url: str, plan: list[PlannedRequest], progress: Progress | None = None, concurrency: int = CONCURRENCY
) -> dict[int, int]:
    """Send the plan through the proxy with bounded concurrency; returns how many responses had each status."""
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[PlannedRequest] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    task_id = progress.add_task("requests", total=len(plan)) if progress else None

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            try:
                async with session.request(
                    item.method, base_url + item.path, headers=item.headers, json=item.body
                ) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 0  # counted, not raised: the summary shows the proxy's view anyway
            statuses[status] = statuses.get(status, 0) + 1
            if progress is not None and task_id is not None:
                progress.advance(task_id)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


async def _admin_modes(admin_url: str) -> dict[str, str]:
    """Live route modes from the admin /routes API, e.g. "canary 25%" (the running proxy's view, not the file's)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(admin_url + "/routes") as r,
        ):
            body: Any = await r.json(content_type=None)
    except (aiohttp.ClientError, ValueError, TimeoutError):
        return {}
    routes = body.get("routes", []) if isinstance(body, dict) else body
    if not isinstance(routes, list):
        return {}
    modes = {}
    for r in routes:
        if isinstance(r, dict) and "id" in r:
            weight = r.get("weight")
            suffix = f" {weight:g}%" if isinstance(weight, int | float) and r.get("mode") == "canary" else ""
            modes[str(r["id"])] = f"{r.get('mode', '')}{suffix}"
    return modes


async def run_demo(config_path: Path, *, requests: int = 400, console: Console | None = None) -> int:
    """The whole demo; returns the process exit code."""
    from proxy.app import start_proxy  # deferred: keeps `import cli.demo.driver` light for tests of the plan
    from shadow.worker.bridge import shadow_worker_listeners

    console = console or stdout_console()
    config = load_config(config_path)
    began = time.time()
    runners = []
    try:
        for name, factory in ((config.defaults.legacy, make_legacy_app), (config.defaults.new, make_new_app)):
            host, port = _address(config, name)
            runners.append(await _start_app(factory(), host, port, name))
            console.print(f"demo [bold]{escape(name)}[/] app on http://{host}:{port}")
        # The shadow worker fills the store (config store.path) from the demo's shadowed routes, as in `serve`.
        running = await start_proxy(config_path, listeners_factory=shadow_worker_listeners, db=str(config.store.path))
        try:
            base = f"http://127.0.0.1:{running.proxy_port}"
            console.print(f"proxy on {base}, admin on http://127.0.0.1:{running.admin_port}")
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                statuses = await drive(base, plan_requests(requests), progress)
            modes: dict[str, str] = {r.id: r.mode for r in config.routes}
            modes.update(await _admin_modes(f"http://127.0.0.1:{running.admin_port}"))
            rows = summarize(running.state.metrics.requests.values, modes, [r.id for r in config.routes])
            console.print(activity_table(rows))
            shown = ", ".join(f"{s or 'failed'}: {n}" for s, n in sorted(statuses.items()))
            console.print(f"client saw {escape(shown)}")
        finally:
            await running.stop()  # flushes the shadow store
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
    console.print()
    console.print(f"[bold]Migration report[/] for this run (store: {escape(str(config.store.path))})")
    console.print(_report(config, began))
    console.print("Next: [bold]strangler diffs list --route customers[/], [bold]strangler noise suggest[/].")
    return 0


def _report(config: Config, since: float) -> RenderableType:
    """The migration report over the exchanges this demo run stored (earlier runs share the file)."""
    from reports.render import render_report
    from reports.summary import build_report
    from shadow.store.database import Store

    with Store.open(config.store.path, create=False) as store:
        return render_report(build_report(store, config, since=since))
