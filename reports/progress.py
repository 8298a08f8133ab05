"""Migration progress over time: the share of requests the new side served per day (or hour), overall and per
route, with the flips that moved it; as plain values, a JSON document, rich renderables and an inline SVG chart.

Overall counts every request the proxy served, unrouted ones included (legacy serves those), so it reads as "how
much of the app has moved"; a route's share is of that route's requests. Built from the per-minute traffic counts
and the flip audit trail; pure apart from `now` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from shadow.store.types import ServedCount
from shadow.values import FlipRecord

By = Literal["day", "hour"]
PERIOD_SECONDS: dict[By, int] = {"day": 86400, "hour": 3600}
SPARKS = "▁▂▃▄▅▆▇█"
MAX_SPARK = 60  # periods shown per terminal sparkline (the newest)


@dataclass(frozen=True, slots=True)
class Period:
    start: int  # epoch seconds, UTC
    requests: int
    new: int  # of them served by the new side

    @property
    def new_share(self) -> float | None:
        return self.new / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class Progress:
    by: By
    periods: tuple[Period, ...]  # overall, oldest first, every period of the window (empty ones with 0 requests)
    routes: dict[str, tuple[Period, ...]]  # per route id, the same periods
    flips: tuple[FlipRecord, ...]  # in the window, oldest first


def build_progress(
    counts: Sequence[ServedCount], flips: Sequence[FlipRecord], *, since: float | None, now: float, by: By
) -> Progress:
    """Fill every period from `since` (else the first counted) to `now`; flips before `since` are left out."""
    step = PERIOD_SECONDS[by]
    last = int(now) // step * step
    first = int(since) // step * step if since is not None else min((c.start for c in counts), default=last)
    starts = range(first, last + 1, step)
    overall: dict[int, list[int]] = {s: [0, 0] for s in starts}
    routes: dict[str, dict[int, list[int]]] = {}
    for c in counts:
        if c.start not in overall:
            continue
        cells = [overall[c.start]]
        if c.route_id:
            cells.append(routes.setdefault(c.route_id, {s: [0, 0] for s in starts})[c.start])
        for cell in cells:
            cell[0] += c.count
            if c.served_by == "new":
                cell[1] += c.count

    def periods(cells: dict[int, list[int]]) -> tuple[Period, ...]:
        return tuple(Period(s, n, new) for s, (n, new) in cells.items())

    shown = tuple(f for f in flips if since is None or f.time >= since)
    return Progress(by, periods(overall), {rid: periods(routes[rid]) for rid in sorted(routes)}, shown)


def iso_time(epoch: float) -> str:
    """Epoch seconds as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def progress_document(progress: Progress) -> dict[str, Any]:
    """`{"by", "periods": [{"start", "requests", "new_share"}], "routes": {ID: [...]}, "flips": [...]}`; new_share
    is null for a period without requests."""

    def rows(periods: Sequence[Period]) -> list[dict[str, Any]]:
        return [{"start": iso_time(p.start), "requests": p.requests, "new_share": _share(p.new_share)} for p in periods]

    return {
        "by": progress.by,
        "periods": rows(progress.periods),
        "routes": {rid: rows(periods) for rid, periods in progress.routes.items()},
        "flips": [
            {
                "time": iso_time(f.time),
                "route": f.route_id,
                "action": f.action,
                "from_mode": f.from_mode,
                "to_mode": f.to_mode,
                "from_weight": f.from_weight,
                "to_weight": f.to_weight,
                "user": f.user,
            }
            for f in progress.flips
        ],
    }


# --- terminal ----------------------------------------------------------------------------------------------------


def sparkline(periods: Sequence[Period]) -> str:
    """One character per period: the new side's share from ▁ (none) to █ (all); · for no requests."""
    out = []
    for p in periods:
        share = p.new_share
        out.append("·" if share is None else SPARKS[round(share * (len(SPARKS) - 1))])
    return "".join(out)


def _total_share(periods: Sequence[Period]) -> float | None:
    requests = sum(p.requests for p in periods)
    return sum(p.new for p in periods) / requests if requests else None


def _latest_share(periods: Sequence[Period]) -> float | None:
    return next((p.new_share for p in reversed(periods) if p.requests), None)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _bar(share: float, width: int = 40) -> Text:
    filled = round(share * width)
    return Text.assemble(("█" * filled, "green"), ("░" * (width - filled), "dim"))


def render_progress(progress: Progress) -> RenderableType:
    """An overall bar (the latest period's share served by new) and a sparkline per route, with the flips."""
    periods = progress.periods
    latest = _latest_share(periods)
    label = "day" if progress.by == "day" else "hour"
    first, last = (periods[0].start, periods[-1].start) if periods else (0, 0)
    span = (
        iso_time(first)[: 10 if progress.by == "day" else 13]
        + " … "
        + iso_time(last)[: 10 if progress.by == "day" else 13]
    )
    head = Text.assemble(
        ("Served by new ", "bold"),
        _bar(latest or 0.0),
        f" {_pct(latest)} in the last {label} with traffic\n",
        f"{_pct(_total_share(periods))} over {len(periods)} {label}s ({span} UTC),"
        f" {sum(p.requests for p in periods)} requests",
    )
    table = Table(box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("route")
    table.add_column(f"new share per {label}, ▁ 0% … █ 100% (last {MAX_SPARK})", no_wrap=True)
    table.add_column("latest", justify="right")
    table.add_column("window", justify="right")
    table.add_column("requests", justify="right")
    table.add_column("flips", justify="right")
    rows = [("(all traffic)", periods), *progress.routes.items()]
    for rid, route_periods in rows:
        flips = sum(1 for f in progress.flips if f.route_id == rid) if rid != "(all traffic)" else len(progress.flips)
        table.add_row(
            escape(rid),
            Text(sparkline(route_periods[-MAX_SPARK:]), style="green"),
            _pct(_latest_share(route_periods)),
            _pct(_total_share(route_periods)),
            str(sum(p.requests for p in route_periods)),
            str(flips),
        )
    parts: list[RenderableType] = [head, table]
    for f in progress.flips:
        weight = f" {f.to_weight:g}%" if f.to_weight is not None else ""
        parts.append(
            Text(f"  {iso_time(f.time)[:16]} {f.route_id}: {f.action} {f.from_mode} → {f.to_mode}{weight}", style="dim")
        )
    return Group(*parts)
