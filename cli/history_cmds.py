"""The audit trail of route changes: `routes history` lists it, `routes revert` undoes its newest change.

A revert writes the route's routes.yaml entry back byte for byte as it was before the change it undoes
(`cli.flip.restore_route`, `reports.gate.revert_target`); a revert that moves the route forward is gated on
readiness like `routes flip`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.flip import FlipError, RouteEditedError, flip_route, restore_route
from cli.output import CliError, ConfigOption, FormatOption, OutputFormat, print_json, print_line, print_renderable
from cli.report_cmds import parse_since
from cli.route_changes import (
    DbOption,
    checks_table,
    db_path,
    describe_mode,
    find_route,
    flip_record,
    load_for_edit,
    open_reader,
    record,
    refuse_unless_passed,
    stamp,
    weight_of,
)
from proxy.config.loader import load_config
from reports.gate import empty_figures, flip_document, flip_gate, is_forward, revert_target, route_figures


def _gate_summary(doc: dict[str, Any]) -> str:
    gate = doc.get("gate")
    if not isinstance(gate, dict):
        return ""
    if gate.get("kind") == "readiness":
        return str(gate.get("verdict", ""))
    if gate.get("kind") == "revert":
        undone = gate.get("reverts")
        readiness = gate.get("readiness")
        text = f"reverts #{undone.get('id')}" if isinstance(undone, dict) and undone.get("id") else "revert"
        return text + (f", {readiness.get('verdict')}" if isinstance(readiness, dict) else "")
    if gate.get("kind") == "guards":
        failed = [c["name"] for c in gate.get("checks", []) if not c.get("passed")]
        return ("breached: " + ", ".join(failed)) if failed else "guards ok"
    return str(gate.get("kind", ""))


def routes_history(
    route: Annotated[str | None, typer.Argument(help="Only this route.")] = None,
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show the recorded flips, promotions, rollbacks and reverts, oldest first.

    Example: [bold]strangler routes history orders-read --format json[/bold]
    """
    reader = open_reader(db_path(load_config(config), db))
    try:
        flips = reader.flips(route) if reader is not None else []
    finally:
        if reader is not None:
            reader.close()
    docs = [flip_document(f) for f in flips]
    if fmt is OutputFormat.json:
        print_json(docs)
        return
    if not docs:
        print_line("no flips recorded" + (f" for {escape(route)}" if route else ""))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("time (UTC)", "route", "action", "change", "user", "gate", "reason"):
        table.add_column(column, no_wrap=column not in ("reason", "route"), overflow="fold")
    for d in docs:
        change = f"{describe_mode(d['from_mode'], d['from_weight'])} → {describe_mode(d['to_mode'], d['to_weight'])}"
        reason = ("[yellow]forced[/]: " if d["forced"] else "") + escape(d["reason"] or "")
        table.add_row(
            stamp(d["time"]), escape(d["route"]), d["action"], escape(change), escape(d["user"]),
            escape(_gate_summary(d)), reason,
        )  # fmt: skip
    print_renderable(table)


def routes_revert(
    route: Annotated[str, typer.Argument(help="The route id.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded; required with --force).")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Revert forward even when the route is not ready, or over later hand edits of the route."
        ),
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="Judge readiness on exchanges since (1h, or an ISO time).")
    ] = None,
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
) -> None:
    """Undo the route's newest recorded change not yet undone, restoring its routes.yaml entry byte for byte.

    Each run goes one step further back: a revert undoes a flip, promote step or rollback, never another revert.
    The route's entry (comments, canary, sticky and shadow blocks included) is written back exactly as it was before
    that change; if it was edited by hand since, nothing is changed unless [bold]--force --reason[/]. A revert that
    moves the route forward (for example back from legacy to canary) is gated on readiness like `routes flip`.

    Example: [bold]strangler routes revert orders-read --reason "500s on checkout"[/bold]
    """
    if force and not (reason and reason.strip()):
        raise typer.BadParameter("--force needs --reason: say why", param_hint="--reason")
    loaded = load_for_edit(config)
    current = find_route(loaded, route)
    store_file = db_path(loaded, db)
    now = time.time()
    window = parse_since(since, now)
    reader = open_reader(store_file)
    try:
        flips = reader.flips(route) if reader is not None else []
        target = revert_target(flips)
        to_weight = target.from_weight if target is not None and target.from_mode == "canary" else None
        forward = target is not None and is_forward(current.mode, weight_of(current), target.from_mode, to_weight)
        figures = route_figures(reader, loaded, route, since=window, now=now) if forward else empty_figures(route)
    finally:
        if reader is not None:
            reader.close()
    if target is None:
        if flips:
            raise CliError(f"every recorded change of route '{route}' is already reverted; nothing left to revert")
        raise CliError(f"no recorded change of route '{route}' to revert")
    gate = flip_gate(figures, current.readiness, forward=forward, since=window)
    target_mode = describe_mode(target.from_mode, to_weight)
    refuse_unless_passed(
        gate,
        route,
        f"reverting route '{route}' would move it forward {describe_mode(current.mode, weight_of(current))} → "
        f"{target_mode}, and it is not ready",
        force=force,
    )
    try:
        if target.before_text and target.after_text:
            change = restore_route(config, route, target.after_text, target.before_text, overwrite=force)
        else:  # recorded before the store kept the route's text: restore mode and weight only
            change = flip_route(config, route, target.from_mode, to_weight)
    except RouteEditedError as exc:
        hint = "; pass --force --reason to restore it anyway (the later edits of the route are lost)"
        raise CliError(str(exc) + hint) from exc
    except FlipError as exc:
        raise CliError(str(exc), exc.details) from exc
    document: dict[str, Any] = {"kind": "revert", "reverts": _without_texts(flip_document(target))}
    if forward:
        document["readiness"] = gate.document()
    overwrote = bool(target.after_text) and change.before_text != target.after_text
    document["overwrote_edits"] = overwrote
    why = reason or f"revert of the {target.action} at {stamp(target.time)} UTC"
    past_gate = forward and not gate.passed
    record(store_file, flip_record(change, "revert", why, past_gate or overwrote, document, now, reverts=target.id))
    if forward:
        print_renderable(checks_table(gate.checks, f"{route}: readiness ({gate.verdict})"))
    print_line(f"{escape(change.describe())} (reverts the {target.action} at {stamp(target.time)} UTC)")
    if past_gate:
        print_line(f"[yellow]forced past the readiness gate[/]: {escape(reason or '')}")
    if overwrote:
        print_line(f"[yellow]forced over later edits of the route[/]: {escape(reason or '')}")


def _without_texts(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("before_text", "after_text")}


def register(routes_app: typer.Typer) -> None:
    """Add `routes history` and `routes revert` to the `routes` group."""
    routes_app.command("history")(routes_history)
    routes_app.command("revert")(routes_revert)
