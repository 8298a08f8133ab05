"""Safe flips and progressive rollout: `routes flip` (gated), `routes history`, `routes revert`, `routes promote`.

Moving a route forward (to canary, a higher canary weight, or new), by a flip or by a revert, needs the readiness
verdict `ready` from the store (`reports.gate`), unless `--force --reason` overrides it; moving back is always
allowed. Every change of mode or weight is recorded in the store's audit trail with who, why, the figures it was
based on and the route's routes.yaml entry before and after, which is what a revert writes back (`cli.flip`,
`reports.gate.revert_target`). `replay` and `watch` live in `cli.live_cmds`; `register` adds all of them to the app.
"""

from __future__ import annotations

import getpass
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.flip import (
    FlipChange,
    FlipError,
    RouteEditedError,
    UnknownRouteError,
    flip_route,
    format_number,
    restore_route,
    set_weight,
)
from cli.output import (
    CliError,
    ConfigOption,
    FormatOption,
    OutputFormat,
    print_json,
    print_line,
    print_renderable,
)
from cli.report_cmds import parse_since
from proxy.config.loader import load_config
from proxy.config.model import Config, ConfigError, Mode, Route
from proxy.config.units import BadValue, parse_duration
from reports.gate import (
    FlipGate,
    StepDecision,
    empty_figures,
    evaluate_rollout,
    flip_document,
    flip_gate,
    gate_json,
    is_forward,
    revert_target,
    route_figures,
)
from reports.readiness import Check
from shadow.store.database import Store, StoreError
from shadow.values import FlipRecord

USER_ENV = "STRANGLER_USER"

DbOption = Annotated[
    Path | None, typer.Option("--db", help="The store file (default: store.path from the config).", dir_okay=False)
]


# --- shared helpers --------------------------------------------------------------------------------------------


def current_user() -> str:
    """Who is flipping: $STRANGLER_USER (CI, shared accounts), else the login name."""
    return os.environ.get(USER_ENV) or getpass.getuser()


def db_path(config: Config, db: Path | None) -> Path:
    return db if db is not None else config.store.path


def open_reader(path: Path) -> Store | None:
    """The store to read figures from; None when there is no file yet (nothing was compared)."""
    return Store.open_readers([path]) if path.exists() else None


def duration_option(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except BadValue as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from exc


def load_for_edit(path: Path) -> Config:
    """The config about to be edited; a broken file is reported as cli.flip reports it."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"{path.name} is invalid before the edit", tuple(str(i) for i in exc.issues)) from exc


def find_route(config: Config, route_id: str) -> Route:
    route = config.route(route_id)
    if route is None:
        raise CliError(str(UnknownRouteError(route_id, tuple(r.id for r in config.routes))))
    return route


def weight_of(route: Route) -> float | None:
    return route.canary.weight if route.canary is not None else None


def record(path: Path, flip: FlipRecord) -> None:
    """Append to the audit trail; the routes file is already changed, so say so if this fails."""
    try:
        with Store.open(path) as store:
            store.record_flip(flip)
    except StoreError as exc:
        raise CliError(f"the routes file was changed, but the change could not be recorded: {exc}") from exc


def apply_change(path: Path, route_id: str, mode: str, weight: float | None) -> FlipChange:
    try:
        return flip_route(path, route_id, mode, weight)
    except FlipError as exc:
        raise CliError(str(exc), exc.details) from exc


def describe_mode(mode: str, weight: float | None) -> str:
    return f"{mode} {format_number(weight)}%" if mode == "canary" and weight is not None else mode


def checks_table(checks: tuple[Check, ...], title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("figure", "value", "limit", "result"):
        table.add_column(column, no_wrap=True)
    for c in checks:
        text = str(c)  # "name = value (needs op limit): ok" — split back into columns
        value = text.split(" = ", 1)[1].split(" (needs ", 1)[0]
        limit = text.split(" (needs ", 1)[1].rsplit("):", 1)[0]
        table.add_row(c.name, value, limit, "[green]ok[/]" if c.passed else "[red]FAILED[/]")
    return table


# --- routes flip -----------------------------------------------------------------------------------------------


def routes_flip(
    route: Annotated[str, typer.Argument(help="The route id.")],
    to: Annotated[Mode, typer.Option("--to", help="The new mode.")],
    weight: Annotated[
        float | None, typer.Option("--weight", "-w", help="Canary weight in percent (0-100).", min=0, max=100)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Flip forward even when the route is not ready.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required with --force; recorded).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Judge readiness on exchanges since (1h, or an ISO time).")
    ] = None,
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
) -> None:
    """Change a route's mode (and canary weight) in the routes file, gated by readiness, and record it.

    Moving forward (to canary, to a higher canary weight, or to new) is refused unless the route is [bold]ready[/]
    by its readiness thresholds over the store: every figure is printed with its limit, exit code 1, and the file
    is left unchanged. [bold]--force --reason "..."[/] overrides the gate (recorded as forced). Moving back is
    always allowed. Comments and formatting are kept; a running proxy picks the change up on its next reload.

    Example: [bold]strangler routes flip orders-read --to canary --weight 10 --config routes.yaml[/bold]
    """
    if force and not (reason and reason.strip()):
        raise typer.BadParameter("--force needs --reason: say why the gate is overridden", param_hint="--reason")
    loaded = load_for_edit(config)
    current = find_route(loaded, route)
    if to == "canary" and weight is None and current.canary is None:
        raise CliError(f"route '{route}' has no canary weight: pass --weight N to flip it to canary")
    from_weight = weight_of(current)
    to_weight = (weight if weight is not None else from_weight) if to == "canary" else None
    forward = is_forward(current.mode, from_weight, to, to_weight)
    store_file = db_path(loaded, db)
    now = time.time()
    window = parse_since(since, now)
    reader = open_reader(store_file)
    try:
        figures = route_figures(reader, loaded, route, since=window, now=now)
    finally:
        if reader is not None:
            reader.close()
    gate = flip_gate(figures, current.readiness, forward=forward, since=window)
    _refuse_unless_passed(
        gate,
        route,
        f"route '{route}' is not ready to move {describe_mode(current.mode, from_weight)} → "
        f"{describe_mode(to, to_weight)}",
        force=force,
    )
    change = apply_change(config, route, to, weight)
    if (change.from_mode, change.from_weight) == (change.to_mode, change.to_weight):
        print_line(f"{escape(route)}: already {describe_mode(change.to_mode, change.to_weight)}; nothing changed")
        return
    forced = forward and not gate.passed
    record(store_file, _flip_record(change, "flip", reason or "", forced, gate.document(), now))
    if forward:
        print_renderable(checks_table(gate.checks, f"{route}: readiness ({gate.verdict})"))
    print_line(escape(change.describe()))
    if forced:
        print_line(f"[yellow]forced past the readiness gate[/]: {escape(reason or '')}")


def _flip_record(
    change: FlipChange,
    action: str,
    reason: str,
    forced: bool,
    gate: dict[str, Any],
    now: float,
    reverts: int | None = None,
) -> FlipRecord:
    return FlipRecord(
        time=now,
        user=current_user(),
        route_id=change.route_id,
        from_mode=change.from_mode,
        to_mode=change.to_mode,
        from_weight=change.from_weight if change.from_mode == "canary" else None,
        to_weight=change.to_weight if change.to_mode == "canary" else None,
        reason=reason,
        forced=forced,
        gate=gate_json(gate),
        action=action,
        before_text=change.before_text,
        after_text=change.after_text,
        reverts=reverts,
    )


# --- routes history / revert -----------------------------------------------------------------------------------


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


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
            _stamp(d["time"]), escape(d["route"]), d["action"], escape(change), escape(d["user"]),
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
    _refuse_unless_passed(
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
    why = reason or f"revert of the {target.action} at {_stamp(target.time)} UTC"
    past_gate = forward and not gate.passed
    record(store_file, _flip_record(change, "revert", why, past_gate or overwrote, document, now, reverts=target.id))
    if forward:
        print_renderable(checks_table(gate.checks, f"{route}: readiness ({gate.verdict})"))
    print_line(f"{escape(change.describe())} (reverts the {target.action} at {_stamp(target.time)} UTC)")
    if past_gate:
        print_line(f"[yellow]forced past the readiness gate[/]: {escape(reason or '')}")
    if overwrote:
        print_line(f"[yellow]forced over later edits of the route[/]: {escape(reason or '')}")


def _without_texts(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("before_text", "after_text")}


# --- routes promote --------------------------------------------------------------------------------------------


def _decision_line(d: StepDecision) -> str:
    f = d.figures
    return (
        f"{escape(d.route_id)} at {d.weight:g}%: {f.compared} compared, {f.mismatched} mismatched, "
        f"{f.candidate_errors} candidate errors since {_stamp(d.window_since)} UTC → {d.action}: {escape(d.reason)}"
    )


def routes_promote(
    route: Annotated[str, typer.Argument(help="The route id (mode canary, with canary.steps).")],
    auto: Annotated[
        bool, typer.Option("--auto", help="Keep promoting until 100%, or roll back to 0 when a guard breaks.")
    ] = False,
    interval: Annotated[
        str | None, typer.Option("--interval", help="Time at each step (default: canary.interval).")
    ] = None,
    poll: Annotated[str, typer.Option("--poll", help="With --auto: how often the guards are checked.")] = "5s",
    min_samples: Annotated[
        int | None,
        typer.Option("--min-samples", min=1, help="Attempts needed before deciding (default: min_compared / 10)."),
    ] = None,
    config: ConfigOption = Path("routes.yaml"),
    db: DbOption = None,
) -> None:
    """Advance a canary one step when its guards pass over the last interval (since its last change).

    The guards (canary.guards: max_mismatch_rate, max_error_rate, max_p99_ratio) are read from the store over the
    exchanges since the route's last recorded change and within the interval; mismatches count as in the report
    (noise-only ones do not). After the last step the route flips to mode new. Without --auto a breached guard or
    too little evidence exits 1 and changes nothing; with --auto the command checks every --poll, promotes after
    each interval, and on a breached guard sets the weight to 0 and records the rollback with the breached figures.

    Example: [bold]strangler routes promote customers --auto --interval 10m[/bold]
    """
    every = duration_option(interval, "--interval")
    pause = duration_option(poll, "--poll") or 0.0
    last_wait = ""
    while True:
        loaded = load_for_edit(config)
        current = find_route(loaded, route)
        if current.mode != "canary" or current.canary is None:
            raise CliError(f"route '{route}' is mode {current.mode}; promote works on mode canary")
        if not current.canary.steps:
            raise CliError(f"route '{route}' has no canary.steps; add a rollout plan or use routes flip")
        store_file = db_path(loaded, db)
        reader = open_reader(store_file)
        try:
            decision = evaluate_rollout(
                reader, loaded, current, now=time.time(), interval=every, min_samples=min_samples
            )
        finally:
            if reader is not None:
                reader.close()
        if decision.action in ("promote", "complete"):
            mode = "new" if decision.action == "complete" else "canary"
            target = decision.target if decision.action == "promote" else None
            change = apply_change(config, route, mode, target)
            record(
                store_file, _flip_record(change, "promote", decision.reason, False, decision.document(), time.time())
            )
            print_line(_decision_line(decision))
            print_line(escape(change.describe()))
            if decision.action == "complete" or not auto:
                return
            continue
        if decision.action == "rollback" and auto:
            try:
                change = set_weight(config, route, 0)
            except FlipError as exc:
                raise CliError(str(exc), exc.details) from exc
            record(
                store_file, _flip_record(change, "rollback", decision.reason, False, decision.document(), time.time())
            )
            print_renderable(checks_table(decision.checks, f"{route}: guards at {decision.weight:g}%"))
            print_line(f"[red]rolled back[/]: {escape(change.describe())}")
            raise CliError(f"route '{route}' rolled back to weight 0: {decision.reason}")
        if not auto:
            print_renderable(checks_table(decision.checks, f"{route}: guards at {decision.weight:g}%"))
            print_line(_decision_line(decision))
            raise CliError(f"route '{route}' not promoted: {decision.reason}")
        waiting_for = re.sub(r"\d+", "#", decision.reason)
        if waiting_for != last_wait:  # one line per kind of wait, not one per poll
            print_line(_decision_line(decision))
            last_wait = waiting_for
        time.sleep(pause)


def register(routes_app: typer.Typer) -> None:
    """Add the rollout commands to the `routes` group (`routes flip` replaces the ungated one)."""
    routes_app.command("flip")(routes_flip)
    routes_app.command("history")(routes_history)
    routes_app.command("revert")(routes_revert)
    routes_app.command("promote")(routes_promote)


def _refuse_unless_passed(gate: FlipGate, route: str, what: str, *, force: bool) -> None:
    """A gated move the figures do not allow: print the checks and refuse (exit 1), unless forced."""
    if gate.passed or force:
        return
    print_renderable(checks_table(gate.checks, f"{route}: readiness ({gate.verdict})"))
    fix = f"{gate.reason}; " if gate.reason else "fix the failed figures, "
    raise CliError(f'{what} (verdict: {gate.verdict}); {fix}or override with --force --reason "..."')
