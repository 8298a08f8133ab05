"""Safe flips and progressive rollout: `routes flip` (gated) and `routes promote`.

Moving a route forward (to canary, a higher canary weight, or new) needs the readiness verdict `ready` from the store
(`reports.gate`), unless `--force --reason` overrides it; moving back is always allowed. Every change of mode or
weight is recorded in the store's audit trail with who, why, the figures it was based on and the route's routes.yaml
entry before and after (`cli.route_changes.flip_record`), which is what `routes revert` (`cli.history_cmds`) writes
back. `replay` and `watch` live in `cli.live_cmds`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.flip import FlipError, set_weight
from cli.output import CliError, ConfigOption, print_line, print_renderable
from cli.report_cmds import parse_since
from cli.route_changes import (
    DbOption,
    apply_change,
    checks_table,
    db_path,
    describe_mode,
    duration_option,
    find_route,
    flip_record,
    load_for_edit,
    open_reader,
    record,
    refuse_unless_passed,
    stamp,
    weight_of,
)
from proxy.config.model import Mode
from reports.gate import StepDecision, evaluate_rollout, flip_gate, is_forward, route_figures


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
    refuse_unless_passed(
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
    record(store_file, flip_record(change, "flip", reason or "", forced, gate.document(), now))
    if forward:
        print_renderable(checks_table(gate.checks, f"{route}: readiness ({gate.verdict})"))
    print_line(escape(change.describe()))
    if forced:
        print_line(f"[yellow]forced past the readiness gate[/]: {escape(reason or '')}")


# --- routes promote --------------------------------------------------------------------------------------------


def _decision_line(d: StepDecision) -> str:
    f = d.figures
    return (
        f"{escape(d.route_id)} at {d.weight:g}%: {f.compared} compared, {f.mismatched} mismatched, "
        f"{f.candidate_errors} candidate errors since {stamp(d.window_since)} UTC → {d.action}: {escape(d.reason)}"
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
            record(store_file, flip_record(change, "promote", decision.reason, False, decision.document(), time.time()))
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
                store_file, flip_record(change, "rollback", decision.reason, False, decision.document(), time.time())
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
    """Add `routes flip` (gated; it replaces the ungated one) and `routes promote` to the `routes` group."""
    routes_app.command("flip")(routes_flip)
    routes_app.command("promote")(routes_promote)
