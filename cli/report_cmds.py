"""`strangler report`: per-route readiness from the store, as a table, JSON, Markdown, HTML or JUnit; plus the options
and store opening shared with `cli.diff_cmds` (`diffs list|show`, `noise suggest`).

Exit codes: 0 ok; 1 an error (`Error: ...` on stderr); 2 a usage error; 3 `report --fail-on ...` found a route with
a failing verdict (the report is still printed or written first), so CI can gate on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cli.output import CliError, ConfigOption, print_line, print_renderable
from proxy.config.loader import load_config
from proxy.config.model import Config
from proxy.config.units import BadValue, parse_duration
from reports.export import to_json, to_junit, to_markdown
from reports.export_html import to_html
from reports.progress import Progress
from reports.render import render_report
from reports.summary import UnknownRouteError, build_report
from shadow.store.database import Store, StoreError

EXIT_FAILING_VERDICT = 3
FILE_WIDTH = 120  # columns of a table report written to --output

DbOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--db",
        metavar="FILE",
        help="Store file (default: store.path from the config); repeat to read several replicas.",
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="DURATION|TIME",
        help="Only exchanges this recent (1h, 30m, 7d) or since a UTC time (ISO 8601).",
    ),
]
RouteOption = Annotated[str | None, typer.Option("--route", "-r", help="Only this route id.")]


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"
    junit = "junit"


class FailOn(StrEnum):
    """Verdicts that make `report` exit with code 3."""

    diverging = "diverging"
    errors = "candidate-errors"
    not_ready = "not-ready"


def register(app: typer.Typer) -> None:
    """Add `report`, `diffs` and `noise` to the root app (called once by cli.main)."""
    from cli.diff_cmds import diffs_app, noise_app  # here: cli.diff_cmds imports this module's shared options

    app.command("report")(report)
    app.add_typer(diffs_app, name="diffs")
    app.add_typer(noise_app, name="noise")


# --- shared -----------------------------------------------------------------------------------------------------


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """Epoch seconds from a duration back from now ("1h") or an ISO 8601 time (UTC when no offset is given)."""
    if value is None:
        return None
    now = time.time() if now is None else now
    try:
        return now - parse_duration(value)
    except BadValue:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"--since {value!r}: expected a duration like 1h, 30m, 7d or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def store_paths(config: Config, db: list[Path] | None) -> list[Path]:
    return list(db) if db else [config.store.path]


@contextmanager
def open_store(paths: list[Path]) -> Iterator[Store]:
    try:
        store = Store.open_readers(paths)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    try:
        yield store
    finally:
        store.close()


def _report_progress(paths: list[Path], since: datetime | None) -> Progress:
    """The HTML report's progress chart: per day over the report's window, else the last 30 days; per hour when
    the window is shorter than three days."""
    from cli.insight_cmds import load_progress  # here: cli.insight_cmds imports this module's shared options

    now = time.time()
    start = since.timestamp() if since is not None else now - 30 * 86400
    with open_store(paths) as store:
        return load_progress(store, start, "hour" if now - start < 3 * 86400 else "day", now)


def _write_or_print(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        print_line(f"wrote {escape(str(output))}")


# --- report -----------------------------------------------------------------------------------------------------


def report(
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    since: SinceOption = None,
    route: RouteOption = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="table, json, markdown, html or junit.")] = (
        ReportFormat.table
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead.")] = None,
    fail_on: Annotated[
        list[FailOn] | None,
        typer.Option("--fail-on", help="Exit 3 when any route is diverging / has candidate errors / is not ready."),
    ] = None,
    fields: Annotated[int, typer.Option("--fields", help="Differing fields shown per route.", min=1)] = 10,
) -> None:
    """Per-route readiness: traffic, match rate, real vs noise mismatches, errors, latency, differing fields.

    Exit code 3 with --fail-on when a route has a failing verdict (after printing the report).

    Example: [bold]strangler report --since 1h --format html --output report.html --fail-on diverging[/bold]
    """
    loaded = load_config(config)
    paths = store_paths(loaded, db)
    with open_store(paths) as store:
        try:
            built = build_report(
                store,
                loaded,
                since=parse_since(since),
                route_id=route,
                field_limit=fields,
                sources=[str(p) for p in paths],
            )
        except UnknownRouteError as exc:
            raise CliError(str(exc)) from exc
    if fmt is ReportFormat.table:
        if output is None:
            print_renderable(render_report(built))
        else:
            with output.open("w", encoding="utf-8") as f:
                Console(file=f, width=FILE_WIDTH, color_system=None).print(render_report(built))
            print_line(f"wrote {escape(str(output))}")
    else:
        writers = {
            ReportFormat.json: to_json,
            ReportFormat.markdown: to_markdown,
            ReportFormat.junit: to_junit,
        }
        if fmt is ReportFormat.html:
            _write_or_print(to_html(built, _report_progress(paths, built.since)), output)
        else:
            _write_or_print(writers[fmt](built), output)
    failing = {
        FailOn.diverging: lambda v: v == "diverging",
        FailOn.errors: lambda v: v == "candidate errors",
        FailOn.not_ready: lambda v: v != "ready",
    }
    for rule in fail_on or []:
        if any(failing[rule](r.verdict) for r in built.routes):
            raise typer.Exit(EXIT_FAILING_VERDICT)
