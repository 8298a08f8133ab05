"""Migration insight from the traffic counts: `strangler inventory` (the endpoints the proxy served, clustered into
path templates, with the routes covering them; `--propose` / `--apply` add `routes.yaml` entries for the uncovered
ones), `strangler progress` (the share served by new per day or hour, with the flips) and `strangler contract`
(each side's JSON shape learned from the stored bodies, and where they drift apart).
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape

from cli.flip import FlipError
from cli.output import (
    CliError,
    ConfigOption,
    FormatOption,
    OutputFormat,
    print_json,
    print_line,
    print_renderable,
)
from cli.report_cmds import DbOption, SinceOption, open_store, parse_since, store_paths
from cli.route_append import append_routes
from proxy.config.loader import load_config
from reports.contract import contract_document, json_schema, render_contract
from reports.contract_section import route_contract
from reports.inventory import build_inventory, propose_routes
from reports.inventory_view import inventory_document, render_inventory
from reports.openapi import Operation, SpecError, compare_spec, coverage_document, render_coverage, spec_operations
from reports.progress import PERIOD_SECONDS, By, Progress, build_progress, progress_document, render_progress
from shadow.store.database import Store


class InventoryFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def register(app: typer.Typer) -> None:
    """Add `inventory`, `progress` and `contract` to the root app (called once by cli.main)."""
    app.command("inventory")(inventory)
    app.command("progress")(progress)
    app.command("contract")(contract)


def inventory(
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    since: SinceOption = None,
    fmt: Annotated[InventoryFormat, typer.Option("--format", "-f", help="table, json or yaml.")] = (
        InventoryFormat.table
    ),
    limit: Annotated[int | None, typer.Option("--limit", help="Table rows shown at most.", min=1)] = None,
    propose: Annotated[
        bool, typer.Option("--propose", help="Print routes.yaml entries (mode shadow) for the uncovered templates.")
    ] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="Append the proposed entries to the routes file (comments kept).")
    ] = False,
    openapi: Annotated[
        Path | None,
        typer.Option(
            "--openapi",
            help="An OpenAPI 3 or Swagger 2 file (JSON or YAML): list its operations never seen in traffic and the "
            "traffic it does not describe.",
        ),
    ] = None,
) -> None:
    """The endpoints seen in traffic (routed and unrouted), clustered into path templates: methods, requests,
    share, p50/p99 legacy latency, status mix and the route covering each.

    A segment becomes a parameter where its values vary: integers {id:int}, UUIDs {id:uuid}, hex ids or 10+
    distinct words {name}. Latency and statuses come from the hourly path rollup (latency within ~25%).

    Example: [bold]strangler inventory --since 7d --propose[/bold]
    """
    if openapi is not None and (propose or apply):
        raise CliError("--openapi compares the inventory with a spec; it does not go with --propose or --apply")
    loaded = load_config(config)
    spec = _load_spec(openapi) if openapi is not None else None
    with open_store(store_paths(loaded, db)) as store:
        rows = store.path_traffic(parse_since(since))
    built = build_inventory(rows, loaded.routes)
    if propose or apply:
        proposals = propose_routes(built, [r.id for r in loaded.routes])
        if not apply:
            typer.echo("".join(p.yaml() for p in proposals), nl=False)
            return
        try:
            added = append_routes(config, proposals)
        except FlipError as exc:
            raise CliError(str(exc), exc.details) from exc
        if not added:
            print_line("every template seen is covered by a route; nothing added")
            return
        noun = "route" if len(proposals) == 1 else "routes"
        print_line(f"added {len(proposals)} {noun} to {escape(str(config))} (mode shadow):")
        typer.echo(added, nl=False)
        return
    if spec is not None:
        coverage = compare_spec(built, *spec)
        if fmt is InventoryFormat.table:
            print_renderable(render_coverage(coverage, str(openapi)))
        elif fmt is InventoryFormat.json:
            print_json(coverage_document(coverage, str(openapi)))
        else:
            doc = coverage_document(coverage, str(openapi))
            typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)
        return
    if fmt is InventoryFormat.json:
        print_json(inventory_document(built))
    elif fmt is InventoryFormat.yaml:
        typer.echo(yaml.safe_dump(inventory_document(built), sort_keys=False, allow_unicode=True), nl=False)
    else:
        print_renderable(render_inventory(built, limit))


def _load_spec(path: Path) -> tuple[str, tuple[Operation, ...]]:
    """The base path and operations of an OpenAPI file, or a CliError naming the file and what is wrong."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except OSError as exc:
        raise CliError(f"{path}: cannot read the OpenAPI file: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: not JSON or YAML: {exc}") from exc
    try:
        return spec_operations(doc)
    except SpecError as exc:
        raise CliError(f"{path}: {exc}", ("hint: --openapi takes an OpenAPI 3 or Swagger 2 description",)) from exc


class ProgressBy(StrEnum):
    day = "day"
    hour = "hour"


def load_progress(store: Store, since: float | None, by: By, now: float) -> Progress:
    """The progress over a window from an open store (also used by `report --format html`)."""
    return build_progress(store.served_by_period(since, PERIOD_SECONDS[by]), store.flips(), since=since, now=now, by=by)


def progress(
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    since: Annotated[
        str,
        typer.Option("--since", metavar="DURATION|TIME", help="The window: 30d, 48h, or a UTC time (ISO 8601)."),
    ] = "30d",
    by: Annotated[ProgressBy, typer.Option("--by", help="One point per day or per hour (UTC).")] = ProgressBy.day,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """The share of requests served by the new side over time: overall (unrouted requests included) as a bar, and
    a sparkline per route, with the flips that moved them.

    Example: [bold]strangler progress --since 14d --by day[/bold]
    """
    loaded = load_config(config)
    start = parse_since(since)
    with open_store(store_paths(loaded, db)) as store:
        built = load_progress(store, start, by.value, time.time())
    if fmt is OutputFormat.json:
        print_json(progress_document(built))
    else:
        print_renderable(render_progress(built))


class ContractFormat(StrEnum):
    table = "table"
    json = "json"
    jsonschema = "jsonschema"


def contract(
    route: Annotated[str, typer.Argument(help="The route id.")],
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    since: SinceOption = None,
    fmt: Annotated[ContractFormat, typer.Option("--format", "-f", help="table, json or jsonschema.")] = (
        ContractFormat.table
    ),
    show_all: Annotated[bool, typer.Option("--all", help="Every field, not only those that drifted.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="Newest compared pairs read at most.", min=1)] = 5000,
) -> None:
    """Each side's JSON shape on a route (field paths, types, presence, enum-like values) learned from the stored
    bodies, and the shape differences apart from value differences: added, removed, type_changed,
    optionality_changed, values_changed. --format jsonschema prints a JSON Schema per side.

    Shapes come from the bodies the store keeps (all mismatches, store.sample_matches of matches, weighted back).

    Example: [bold]strangler contract orders-read --format jsonschema > orders-read.schema.json[/bold]
    """
    loaded = load_config(config)
    if route not in {r.id for r in loaded.routes}:
        raise CliError(f"unknown route '{route}' (known: {', '.join(r.id for r in loaded.routes)})")
    with open_store(store_paths(loaded, db)) as store:
        built = route_contract(store, route, parse_since(since), loaded.store.sample_matches, limit)
    if fmt is ContractFormat.jsonschema:
        print_json(
            {
                "legacy": json_schema(built.legacy, f"{route}: legacy responses"),
                "new": json_schema(built.new, f"{route}: new responses"),
            }
        )
    elif fmt is ContractFormat.json:
        print_json(contract_document(built))
    else:
        print_renderable(render_contract(built, show_all=show_all))
