"""What the commands that change a route share: the --db option, the file to edit, the audit record, the gate.

`cli.rollout_cmds` (flip, promote) and `cli.history_cmds` (history, revert) both import it, and neither imports the
other; `cli.live_cmds` takes the --db option and route lookup from here too.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from cli.flip import FlipChange, FlipError, UnknownRouteError, flip_route, format_number
from cli.output import CliError, print_renderable
from proxy.config.loader import load_config
from proxy.config.model import Config, ConfigError, Route
from proxy.config.units import BadValue, parse_duration
from reports.gate import FlipGate, gate_json
from reports.readiness import Check
from shadow.store.database import Store, StoreError
from shadow.values import FlipRecord

USER_ENV = "STRANGLER_USER"

DbOption = Annotated[
    Path | None, typer.Option("--db", help="The store file (default: store.path from the config).", dir_okay=False)
]


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


def flip_record(
    change: FlipChange,
    action: str,
    reason: str,
    forced: bool,
    gate: dict[str, Any],
    now: float,
    reverts: int | None = None,
) -> FlipRecord:
    """The audit-trail entry of `change`: who, why, the gate document, and the route's entry before and after."""
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


def stamp(t: float) -> str:
    """A recorded time as printed: `2026-12-06 14:08:00` (UTC)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def refuse_unless_passed(gate: FlipGate, route: str, what: str, *, force: bool) -> None:
    """A gated move the figures do not allow: print the checks and refuse (exit 1), unless forced."""
    if gate.passed or force:
        return
    print_renderable(checks_table(gate.checks, f"{route}: readiness ({gate.verdict})"))
    fix = f"{gate.reason}; " if gate.reason else "fix the failed figures, "
    raise CliError(f'{what} (verdict: {gate.verdict}); {fix}or override with --force --reason "..."')
