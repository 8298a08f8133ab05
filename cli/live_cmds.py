"""Commands that talk to live services: `replay` (stored requests to both back ends again) and `watch` (a running
proxy's admin API, redrawn every second).

Example: strangler replay --route orders-read --outcome mismatch && strangler watch --admin http://127.0.0.1:8081
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer
from rich import box
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.output import (
    CliError,
    ConfigOption,
    FormatOption,
    OutputFormat,
    print_json,
    print_line,
    print_renderable,
    stderr_console,
)
from cli.report_cmds import parse_since
from cli.rollout_cmds import DbOption, db_path, duration_option, find_route
from proxy.config import Config
from proxy.loader import load_config
from reports.live import LiveRoute, MetricsFormatError, live_routes, live_table, parse_prometheus, store_faults
from reports.replay import Replayer, ReplayResult, ReplaySummary, ReplayTarget, select_targets, summarize
from shadow.redact import Redactor, key_path_for, load_or_create_key
from shadow.store import Store

# --- replay ----------------------------------------------------------------------------------------------------


async def _replay(
    config: Config, redactor: Redactor, targets: list[ReplayTarget], concurrency: int
) -> list[ReplayResult]:
    progress = Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=stderr_console()
    )
    replayer = Replayer(config, redactor, concurrency=concurrency)
    try:
        with progress:
            task = progress.add_task("replay", total=len(targets))
            return await replayer.run(targets, lambda _: progress.advance(task))
    finally:
        await replayer.aclose()


def replay_document(summary: ReplaySummary, skipped: list[Any]) -> dict[str, Any]:
    """What `replay --format json` prints."""
    return {
        "fixed": summary.fixed,
        "routes": [dataclasses.asdict(r) for r in summary.routes],
        "fields": [{**dataclasses.asdict(f), "fixed": f.fixed} for f in summary.fields],
        "skipped": [dataclasses.asdict(s) for s in skipped],
    }


def _print_summary(summary: ReplaySummary) -> None:
    routes = Table(title="Replay: before → after", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("route", "replayed", "mismatches", "fixed", "regressed", "cand.err", "skipped"):
        routes.add_column(column, justify="left" if column == "route" else "right", no_wrap=True)
    for r in summary.routes:
        routes.add_row(
            escape(r.route_id), str(r.replayed), f"{r.mismatched_before} → {r.mismatched_after}",
            f"[green]{r.fixed}[/]" if r.fixed else "0", f"[red]{r.regressed}[/]" if r.regressed else "0",
            str(r.errors_after), str(r.skipped_after),
        )  # fmt: skip
    fields = Table(title="Fields: exchanges differing", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("route", "field", "before → after", "fixed"):
        fields.add_column(column, justify="right" if column == "fixed" else "left", overflow="fold")
    for f in summary.fields:
        fields.add_row(escape(f.route_id), escape(f.group), f"{f.before} → {f.after}", str(f.fixed))
    print_renderable(Group(routes, fields) if summary.fields else routes)
    for r in summary.routes:
        was_bad = r.mismatched_before
        if was_bad:
            style = "green" if r.mismatched_after == 0 else "yellow"
            print_line(f"[{style}]{escape(r.route_id)}: {r.fixed} of {was_bad} former mismatches now match[/]")


def replay(
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    route: Annotated[str | None, typer.Option("--route", "-r", help="Only this route.")] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="Only exchanges with this outcome, e.g. mismatch.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only exchanges since (1h, or an ISO time).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many requests.")] = 100,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight at once.")] = 8,
    allow_unsafe: Annotated[
        bool, typer.Option("--allow-unsafe", help="Also replay methods with side effects (POST, PUT, ...).")
    ] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Send stored requests again to both sides of their route (from the current config), compare and store the
    pairs, then show before → after per route and field: how many former mismatches now match.

    Only requests that can be sent exactly again (whole stored body, or none needed) and safe methods (GET, HEAD,
    OPTIONS) unless --allow-unsafe. Secrets were redacted before storage, so replayed requests carry the redacted
    values. Replays are stored as ordinary exchanges with request ids starting with "replay-".

    Example: [bold]strangler replay --route orders-read --outcome mismatch --limit 200[/bold]
    """
    loaded = load_config(config)
    if route is not None:
        find_route(loaded, route)
    store_file = db_path(loaded, db)
    if not store_file.exists():
        raise CliError(f"{store_file}: no such store file (nothing to replay)")
    window = parse_since(since, time.time())
    with Store.open(store_file, create=False) as store:
        targets, skipped = select_targets(
            store, loaded, route_id=route, outcome=outcome, since=window, limit=limit, allow_unsafe=allow_unsafe
        )
        results: list[ReplayResult] = []
        if targets:
            redactor = Redactor(load_or_create_key(key_path_for(store_file)), loaded.store.redact)
            results = asyncio.run(_replay(loaded, redactor, targets, concurrency))
            store.write_batch([r.record for r in results])
    summary = summarize(results)
    if fmt is OutputFormat.json:
        print_json(replay_document(summary, skipped))
        return
    if skipped:
        reasons = sorted({s.reason for s in skipped})
        print_line(f"skipped {len(skipped)} stored requests ({', '.join(reasons)})")
    if not results:
        print_line("nothing to replay")
        return
    _print_summary(summary)


# --- watch -----------------------------------------------------------------------------------------------------


async def _fetch_frame(session: aiohttp.ClientSession, admin: str) -> tuple[str, list[Mapping[str, Any]]]:
    try:
        async with session.get(f"{admin}/metrics") as resp:
            resp.raise_for_status()
            metrics = await resp.text()
        async with session.get(f"{admin}/routes") as resp:
            resp.raise_for_status()
            routes = (await resp.json())["routes"]
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
        raise CliError(f"cannot read the admin API at {admin}: {str(exc) or type(exc).__name__}") from exc
    return metrics, routes


async def _frames(admin: str, every: float, once: bool, fmt: OutputFormat) -> None:
    timeout = aiohttp.ClientTimeout(total=max(5.0, every))
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def rows(previous: dict[str, int] | None, elapsed: float | None) -> tuple[list[LiveRoute], str]:
            metrics, routes = await _fetch_frame(session, admin)
            try:
                samples = parse_prometheus(metrics)
                return live_routes(samples, routes, previous, elapsed), store_faults(samples)
            except MetricsFormatError as exc:
                raise CliError(f"{admin}/metrics: {exc}") from exc

        if once:
            frame, faults = await rows(None, None)
            if fmt is OutputFormat.json:
                print_json([{**dataclasses.asdict(r), "match_rate": r.match_rate} for r in frame])
            else:
                print_renderable(live_table(frame, title=f"strangler watch {admin}", caption=faults))
            return
        previous: dict[str, int] | None = None
        last = time.monotonic()
        with Live(console=None, auto_refresh=False) as live:
            while True:
                now = time.monotonic()
                frame, faults = await rows(previous, now - last if previous is not None else None)
                previous, last = {r.id: r.requests for r in frame}, now
                title = f"strangler watch {admin} (every {every:g}s, Ctrl-C to stop)"
                live.update(live_table(frame, title=title, caption=faults), refresh=True)
                await asyncio.sleep(every)


def watch(
    admin: Annotated[str, typer.Option("--admin", help="The proxy's admin API.")] = "http://127.0.0.1:8081",
    interval: Annotated[str, typer.Option("--interval", help="Time between frames.")] = "1s",
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (scripts, tests).")] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """A live view of a running proxy: per-route traffic, request rate, errors, match rate and latency, from its
    admin API (/metrics and /routes), redrawn every --interval until Ctrl-C. Counters are since the proxy started.

    Example: [bold]strangler watch --admin http://127.0.0.1:8081 --interval 1s[/bold]
    """
    every = duration_option(interval, "--interval") or 1.0
    try:
        asyncio.run(_frames(admin.rstrip("/"), every, once, fmt))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("watch")(watch)
