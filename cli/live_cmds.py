"""Commands that talk to live services: `replay` (stored requests to both back ends again) and `watch` (a running
proxy's admin API /stats, redrawn every second).

Example: strangler replay --route orders-read --outcome mismatch && strangler watch --admin http://127.0.0.1:8081
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import (
    CliError,
    ConfigOption,
    FormatOption,
    OutputFormat,
    print_json,
    print_line,
    print_renderable,
    stderr_console,
    stdout_console,
)
from cli.report_cmds import parse_since
from cli.route_changes import DbOption, db_path, duration_option, find_route
from proxy.config.loader import load_config
from proxy.config.model import Config
from reports.export import replay_section
from reports.live import LiveFrame, StatsFormatError, live_frame, live_view
from reports.render import replay_tables
from reports.replay import Replayer, ReplayResult, ReplayTarget, select_targets
from reports.replay_changes import ReplaySummary, summarize
from shadow.redact import Redactor, key_path_for, load_or_create_key
from shadow.store.database import Store

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
    """What `replay --format json` prints: the report's replay section, and what was skipped."""
    return {**replay_section(summary), "skipped": [dataclasses.asdict(s) for s in skipped]}


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
    values. Replays are stored apart (pair "replay"): they never count toward readiness, verdicts or the flip gate;
    `strangler report` shows them in their own before → after section, `diffs list --pair replay` lists them.

    Example: [bold]strangler replay --route orders-read --outcome mismatch --limit 200[/bold]
    """
    loaded = load_config(config, files=True)  # replay connects: the upstreams' TLS files must load
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
    summary = summarize([r.before_after for r in results])
    if fmt is OutputFormat.json:
        print_json(replay_document(summary, skipped))
        return
    if skipped:
        reasons = sorted({s.reason for s in skipped})
        print_line(f"skipped {len(skipped)} stored requests ({', '.join(reasons)})")
    if not results:
        print_line("nothing to replay")
        return
    print_renderable(replay_tables(summary))


# --- watch -----------------------------------------------------------------------------------------------------


async def _fetch_stats(session: aiohttp.ClientSession, admin: str) -> dict[str, Any]:
    """The admin API's /stats document (docs/stats.schema.json)."""
    try:
        async with session.get(f"{admin}/stats") as resp:
            resp.raise_for_status()
            stats = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise CliError(f"cannot read the admin API at {admin}: {str(exc) or type(exc).__name__}") from exc
    if not isinstance(stats, dict):
        raise CliError(f"{admin}/stats: not a strangler /stats document")
    return stats


def _frame(admin: str, stats: dict[str, Any], previous: dict[str, int] | None, elapsed: float | None) -> LiveFrame:
    try:
        return live_frame(stats, previous, elapsed)
    except StatsFormatError as exc:
        raise CliError(f"{admin}/stats: {exc}") from exc


async def _frames(admin: str, every: float, once: bool, fmt: OutputFormat) -> None:
    timeout = aiohttp.ClientTimeout(total=max(5.0, every))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if once:
            stats = await _fetch_stats(session, admin)
            if fmt is OutputFormat.json:
                print_json(stats)  # the document as the proxy serves it
            else:
                width = stdout_console().width
                print_renderable(
                    live_view(_frame(admin, stats, None, None), title=f"strangler watch {admin}", width=width)
                )
            return
        previous: dict[str, int] | None = None
        last = time.monotonic()
        with Live(console=None, auto_refresh=False) as live:
            while True:
                now = time.monotonic()
                stats = await _fetch_stats(session, admin)
                frame = _frame(admin, stats, previous, now - last if previous is not None else None)
                previous, last = frame.requests(), now
                title = f"strangler watch {admin} (every {every:g}s, Ctrl-C to stop)"
                live.update(live_view(frame, title=title, width=live.console.width), refresh=True)
                await asyncio.sleep(every)


def watch(
    admin: Annotated[str, typer.Option("--admin", help="The proxy's admin API.")] = "http://127.0.0.1:8081",
    interval: Annotated[str, typer.Option("--interval", help="Time between frames.")] = "1s",
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (scripts, tests).")] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """A live view of a running proxy: per-route traffic, request rate, errors, match rate and latency, then its
    shadow queues, worker restarts, breakers and rejections, from its admin API's /stats, redrawn every --interval
    until Ctrl-C. Counters are since the proxy started; compared / match count candidate pairs only (as the report
    does; noise pairs have their own column); latencies are client-facing estimates from histogram buckets
    (`strangler report` has exact ones per compared pair). --once --format json prints the /stats document.

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
