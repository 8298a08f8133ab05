"""The endpoint inventory as a JSON document and as a rich table (never prints)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from reports.inventory import Endpoint, Inventory


def status_text(status: int) -> str:
    """A status as the inventory shows it: the code, or "none" when no response came (status 0)."""
    return str(status) if status else "none"


def inventory_document(inventory: Inventory) -> dict[str, Any]:
    """`{"templates": [{"template", "methods", "requests", "share", "route", "latency": {"p50", "p99"},
    "statuses"}], "requests"}`; latency in ms (legacy side), statuses as {code: requests}, busiest first."""
    return {
        "requests": inventory.requests,
        "templates": [
            {
                "template": e.template,
                "methods": list(e.methods),
                "requests": e.requests,
                "share": round(e.share, 6),
                "route": e.route,
                "uncovered_methods": list(e.uncovered),
                "latency": {"p50": _ms(e.latency.p50), "p99": _ms(e.latency.p99)},
                "statuses": {status_text(s): n for s, n in e.statuses},
            }
            for e in inventory.endpoints
        ],
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _latency(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _statuses(e: Endpoint) -> str:
    if not e.statuses:
        return "–"
    total = sum(n for _, n in e.statuses) or 1
    return " ".join(f"{status_text(s)} {n / total:.0%}" for s, n in e.statuses[:4])


def _route(e: Endpoint) -> str:
    if e.route is not None:
        return escape(e.route)
    return (
        f"[yellow]none ({', '.join(e.uncovered)})[/yellow]"
        if len(e.uncovered) < len(e.methods)
        else "[yellow]none[/yellow]"
    )


def render_inventory(inventory: Inventory, limit: int | None = None) -> Table:
    """The inventory as a table, busiest template first; `limit` rows at most."""
    table = Table(
        title=f"Endpoint inventory: {len(inventory.endpoints)} templates, {inventory.requests} requests",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for name, justify in (
        ("template", "left"), ("methods", "left"), ("requests", "right"), ("share", "right"),
        ("p50 ms", "right"), ("p99 ms", "right"), ("statuses", "left"), ("route", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    shown = inventory.endpoints if limit is None else inventory.endpoints[:limit]
    for e in shown:
        table.add_row(
            escape(e.template),
            ",".join(e.methods),
            str(e.requests),
            f"{e.share:.1%}",
            _latency(e.latency.p50),
            _latency(e.latency.p99),
            _statuses(e),
            _route(e),
        )
    if limit is not None and len(inventory.endpoints) > limit:
        table.caption = f"{len(inventory.endpoints) - limit} more templates (--limit)"
    return table
