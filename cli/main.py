"""The strangler command line: the only place that wires packages together and prints.

Every command's help ends with a runnable example. Errors are one red line on stderr and exit code 1 (usage
errors exit 2); `--debug` shows the traceback instead. Commands that print data take `--format table|json`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import typer
from multidict import CIMultiDict
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.history_cmds import register as register_history_commands
from cli.insight_cmds import register as register_insight_commands
from cli.live_cmds import register as register_live_commands
from cli.output import (
    CliError,
    CliState,
    ConfigOption,
    ErrorReportingGroup,
    FormatOption,
    OutputFormat,
    print_json,
    print_line,
    print_renderable,
)
from cli.report_cmds import register as register_report_commands
from cli.rollout_cmds import register as register_rollout_commands
from cli.store_cmds import register as register_store_commands
from proxy.admin import route_view
from proxy.canary import Side, bucket
from proxy.config.loader import load_config
from proxy.config.model import Config, ConfigError, ConfigIssue, Route
from proxy.modes import mirror_decision, serving_side, side_upstream, split_key
from proxy.paths import PathError, canonical_path
from proxy.routing import Explanation, RouteTable
from reports.fmt import mode_text, weight

app = typer.Typer(
    cls=ErrorReportingGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
routes_app = typer.Typer(
    help="List routes and flip their mode.\n\nExample: [bold]strangler routes list --config routes.yaml[/bold]",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(routes_app, name="routes")
register_report_commands(app)  # report, diffs, noise
register_rollout_commands(routes_app)  # routes flip (gated), promote
register_history_commands(routes_app)  # routes history, revert
register_live_commands(app)  # replay, watch
register_insight_commands(app)  # inventory, progress, contract
register_store_commands(app)  # store pull


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """strangler: route, shadow, compare and flip endpoints from a legacy back end to a new service.

    Example: [bold]strangler validate --config routes.yaml[/bold]
    """
    ctx.obj = CliState(debug=debug)


# --- validate ---------------------------------------------------------------------------------------------------


def _issue_document(issue: ConfigIssue) -> dict[str, Any]:
    return {
        "source": issue.source,
        "line": issue.line,
        "where": issue.where,
        "message": issue.message,
        "hint": issue.hint,
        "text": str(issue),
    }


@app.command()
def validate(config: ConfigOption = Path("routes.yaml"), fmt: FormatOption = OutputFormat.table) -> None:
    """Check a routes file and report every problem in it (exit 1 when there is any).

    Example: [bold]strangler validate --config routes.yaml[/bold]
    """
    try:
        loaded = load_config(config, files=True)  # also the TLS files, as serving loads them
    except ConfigError as exc:
        if fmt is OutputFormat.json:
            print_json({"ok": False, "issues": [_issue_document(i) for i in exc.issues]})
            raise typer.Exit(1) from exc
        raise
    if fmt is OutputFormat.json:
        print_json({"ok": True, "routes": len(loaded.routes), "upstreams": len(loaded.upstreams)})
    else:
        print_line(f"OK: {len(loaded.routes)} routes, {len(loaded.upstreams)} upstreams")


# --- explain ----------------------------------------------------------------------------------------------------


def _parse_pairs(values: list[str], separator: str, option: str) -> dict[str, str]:
    """NAME<separator>VALUE options (--header K:V, --cookie K=V) as a dict; a usage error names the option."""
    found: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(separator)
        if not sep or not name.strip():
            raise typer.BadParameter(f"{value!r} is not NAME{separator}VALUE", param_hint=option)
        found[name.strip()] = content.strip()
    return found


@dataclass(frozen=True, slots=True)
class Client:
    """What `explain` knows of the client: the inputs a canary split may stick to."""

    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    ip: str


def explanation_document(
    config: Config,
    method: str,
    raw: str,
    explanation: Explanation,
    canonical: str,
    refused: str | None,
    client: Client | None = None,
) -> dict[str, Any]:
    """What `explain --format json` prints: the route, the serving side and the mirror decision, each decided by
    `proxy.modes` from the same inputs the proxy uses (a canary's sticky key from --header/--cookie/--client-ip)."""
    route = explanation.winner
    client = client or Client({}, {}, "")
    canary = route.canary if route is not None and route.mode == "canary" else None
    key = split_key(route, client.headers, client.cookies, client.ip) if route is not None else None
    # No sticky key on a split canary: the proxy draws a side at random per request, so there is no one answer.
    random_split = canary is not None and key is None and 0 < canary.weight < 100
    served_by: Side | None = None if random_split else serving_side(route, key)
    decision = mirror_decision(route, served_by or "legacy", method)
    return {
        "method": method,
        "path": raw,
        "canonical_path": canonical,
        "route": route.id if route else None,
        "template": route.match.path if route else None,
        "mode": route.mode if route else "legacy",
        "served_by": served_by,
        "upstream": side_upstream(route, served_by, config.defaults.legacy) if served_by else None,
        "canary_weight": canary.weight if canary else None,
        "sticky_key": key,
        "bucket": bucket(route.id, key) if route is not None and canary is not None and key is not None else None,
        "legacy": route.legacy if route else config.defaults.legacy,
        "new": route.upstream if route else None,
        "mirror_to": decision.target if decision.options is not None else None,
        "mirror_skip": decision.skip,
        "params": dict(explanation.params),
        "refused": refused,
        "candidates": [
            {"route": c.route.id, "path": c.route.match.path, "reason": c.reason} for c in explanation.candidates
        ],
    }


def _print_explanation(doc: dict[str, Any]) -> None:
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    route = doc["route"]
    summary.add_row("request", escape(f"{doc['method']} {doc['path']}"))
    summary.add_row("canonical path", escape(doc["canonical_path"]))
    summary.add_row("route", escape(f"{route} ({doc['template']})") if route else "[yellow](no route matched)[/]")
    mode = doc["mode"] if route else "legacy (default for unmatched requests)"
    summary.add_row("mode", mode)
    if doc["mode"] == "canary":
        canary_weight = doc["canary_weight"] if doc["canary_weight"] is not None else 0
        split = f"{doc['new']} for {weight(canary_weight)} of buckets, {doc['legacy']} for the rest"
        if doc["bucket"] is not None:
            split += f"; sticky key {doc['sticky_key']!r} is in bucket {doc['bucket']}"
        summary.add_row("canary", escape(split))
    if doc["upstream"] is not None:
        summary.add_row("upstream", escape(f"{doc['upstream']} ({doc['served_by']} side)"))
    else:
        summary.add_row("upstream", "either side, drawn at random per request (no sticky key given)")
    if doc["mirror_to"]:
        summary.add_row("mirrored to", escape(doc["mirror_to"]))
    elif doc["mirror_skip"]:
        summary.add_row("mirrored", escape(f"no: {doc['mirror_skip'].replace('_', ' ')}"))
    if doc["params"]:
        summary.add_row("params", escape(", ".join(f"{k}={v}" for k, v in doc["params"].items())))
    if doc["refused"]:
        summary.add_row("refused", f"[red]{escape(doc['refused'])}[/]")
    print_renderable(summary)
    if doc["candidates"]:
        table = Table(title="Other candidates", title_justify="left")
        table.add_column("route")
        table.add_column("path")
        table.add_column("why it lost")
        for c in doc["candidates"]:
            table.add_row(escape(c["route"]), escape(c["path"]), escape(c["reason"]))
        print_renderable(table)


@app.command()
def explain(
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. GET.")],
    path: Annotated[str, typer.Argument(help="Request path, optionally with '?query'.")],
    config: ConfigOption = Path("routes.yaml"),
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="A request header NAME:VALUE (repeatable).")
    ] = None,
    cookie: Annotated[
        list[str] | None, typer.Option("--cookie", help="A request cookie NAME=VALUE (repeatable).")
    ] = None,
    client_ip: Annotated[str, typer.Option("--client-ip", help="The client's address, for sticky: {client_ip}.")] = "",
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show which route a request would take, which side serves it, whether it is mirrored, and why the other
    routes lost. A canary route's side is computed from the sticky header, cookie or client IP exactly as the proxy
    computes it.

    Example: [bold]strangler explain GET '/api/orders/42?expand=items' -H 'X-User-Id: 7'[/bold]
    """
    headers = {k.lower(): v for k, v in _parse_pairs(header or [], ":", "--header").items()}
    cookies = _parse_pairs(cookie or [], "=", "--cookie")
    loaded = load_config(config)
    raw_path, _, query_string = path.partition("?")
    try:
        canonical = canonical_path(raw_path)
    except PathError as exc:
        raise CliError(f"the proxy would refuse {raw_path!r} with 400: {exc}") from exc
    method = method.upper()
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    explanation = RouteTable.build(loaded.routes).explain(method, canonical.segments, headers, query)
    winner = explanation.winner
    refused = None
    if canonical.has_encoded_slash and (winner is None or not winner.match.allow_encoded_slash):
        refused = "the path holds %2F or %5C and the route does not set allow_encoded_slash: the proxy answers 400"
    client = Client(CIMultiDict(headers), cookies, client_ip)  # header names match case-insensitively, as in the proxy
    doc = explanation_document(loaded, method, path, explanation, canonical.path, refused, client)
    if fmt is OutputFormat.json:
        print_json(doc)
    else:
        _print_explanation(doc)


# --- routes -----------------------------------------------------------------------------------------------------


def route_document(route: Route) -> dict[str, Any]:
    """One route as `routes list --format json` prints it: the same document as the admin API's /routes."""
    return route_view(route)


@routes_app.command("list")
def routes_list(config: ConfigOption = Path("routes.yaml"), fmt: FormatOption = OutputFormat.table) -> None:
    """List the routes in a routes file, in file order.

    Example: [bold]strangler routes list --config routes.yaml --format json[/bold]
    """
    docs = [route_document(r) for r in load_config(config).routes]
    if fmt is OutputFormat.json:
        print_json(docs)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("id", "mode", "methods", "path", "legacy", "new", "weight", "fallback", "mirror to"):
        # ids and paths fold rather than lose their ends; the short columns keep their width
        table.add_column(column, overflow="fold", no_wrap=column not in ("id", "path", "methods"))
    for d in docs:
        table.add_row(
            escape(d["id"]),
            mode_text(d["mode"]),
            ", ".join(d["methods"]) if d["methods"] else "any",
            escape(d["path"]),
            escape(d["legacy"]),
            escape(d["upstream"]),
            weight(d["weight"]) if d["weight"] is not None else "",
            "yes" if d["fallback"] else "",
            escape(d["mirror_to"] or ""),
        )
    print_renderable(table)


# --- serve and demo ---------------------------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOption = Path("routes.yaml"),
    host: Annotated[str | None, typer.Option(help="Listen address (default: listen.host from the config).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: listen.port from the config).")] = None,
    admin_port: Annotated[int | None, typer.Option(help="Admin port (default: admin.port from the config).")] = None,
    db: Annotated[Path | None, typer.Option(help="Shadow store SQLite file (default: store.path).")] = None,
    shadow_worker: Annotated[
        bool,
        typer.Option(
            help="Run the shadow side (copies, comparisons, store writes) in a worker process, off the proxy's "
            "event loop and GIL. --no-shadow-worker keeps it in the proxy process (one core, or debugging)."
        ),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="No start-up banner and no exit line on stderr.")] = False,
    server: Annotated[
        str | None,
        typer.Option(
            help="Proxy listener: fast (one loop per connection) or aiohttp (the previous one, kept to compare) "
            "(default: $STRANGLER_SERVER, else listen.server)."
        ),
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option(
            metavar="N|auto",
            help="Proxy worker processes sharing the port (SO_REUSEPORT, Linux), under one supervisor that serves "
            "the admin API for all; auto: one per CPU core (default: workers from the config, else 1).",
        ),
    ] = None,
    worker_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,  # set by the supervisor for its workers
    worker_index: Annotated[int, typer.Option(hidden=True)] = 0,
) -> None:
    """Run the proxy until interrupted (Ctrl-C or SIGTERM drains in-flight requests first). On start it prints a
    banner on stderr (version, addresses, workers, routes by mode, store, shadow side) and one line on exit.

    Example: [bold]strangler serve --config routes.yaml --port 8080 --admin-port 8081 --workers auto[/bold]
    """
    from cli.serve_workers import serve_supervised, server_choice, worker_count, worker_role
    from proxy.app import serve as serve_proxy  # deferred: the server stack is not needed by other commands

    count = worker_count(workers, config)
    if count > 1 and worker_dir is None:  # the supervisor; its workers run this command with --workers 1
        code = serve_supervised(
            count, config, host, port, admin_port, db, shadow_worker=shadow_worker, quiet=quiet,
            server=server_choice(server),
        )  # fmt: skip
        if code:
            raise typer.Exit(code)
        return

    # Deferred, and only the one in use: with the worker, the proxy process never imports deepdiff.
    if shadow_worker:
        from shadow.worker.bridge import shadow_worker_listeners as factory
    else:
        from shadow.runner import shadow_listeners as factory

    code = serve_proxy(
        config,
        host=host,
        port=port,
        admin_port=admin_port,
        db=str(db) if db else None,
        listeners_factory=factory,
        shadow="worker process" if shadow_worker else "in-process",
        quiet=quiet,
        server=server_choice(server),
        worker=worker_role(worker_dir, worker_index),
    )
    if code:
        raise typer.Exit(code)


@app.command()
def demo(
    config: ConfigOption = Path("routes.yaml"),
    requests: Annotated[int, typer.Option("--requests", "-n", help="How many requests to drive.", min=1)] = 400,
) -> None:
    """Start the bundled legacy and new apps and the proxy, drive traffic through it, and show what each route did.

    Example: [bold]strangler demo --config routes.yaml --requests 400[/bold]
    """
    from cli.demo.driver import run_demo  # deferred: pulls in the whole server stack

    code = asyncio.run(run_demo(config, requests=requests))
    if code:
        raise typer.Exit(code)


def run() -> None:
    app()
