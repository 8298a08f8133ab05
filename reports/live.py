"""What `strangler watch` shows: a running proxy's live figures, read from its admin API's /stats JSON document.

The frame built from the document (`live_frame`) and the rich view drawn from it (`live_view`, never printed here).
Pure: the CLI fetches and refreshes. The document's shape is docs/stats.schema.json; it is built in the proxy from
the in-memory metrics registry (`proxy.stats`), so nothing here parses Prometheus text.

Outcome counts are of candidate pairs (legacy vs new), as the report counts them; noise pairs (legacy vs legacy)
have their own column. Latencies are what /stats has: client-facing request durations since the proxy started,
estimated from histogram buckets (the bound of the bucket holding the nearest rank); the report's exact percentiles
are of the stored pairs over a window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from reports.fmt import MISSING, mode_text, ms, per_second, percent

UNROUTED = "(unrouted)"  # the row of requests no route matched

LATENCY_NOTE = (
    "* latency: client-facing, since the proxy started, estimated from histogram buckets (the bound of the bucket"
    " holding the nearest rank); `strangler report` has exact percentiles of the compared pairs"
)


class StatsFormatError(ValueError):
    """A /stats document without the figures `watch` needs (not a strangler proxy, or an incompatible one)."""


@dataclass(frozen=True, slots=True)
class LiveRoute:
    """One route's counters since the proxy started (and its request rate since the previous frame); outcomes of
    candidate pairs, noise mismatches apart, latencies (ms) estimated from histogram buckets."""

    id: str  # UNROUTED for requests no route matched
    mode: str
    weight: float | None
    legacy_requests: int
    new_requests: int
    errors: int  # 5xx answers and upstream failures
    matched: int
    mismatched: int
    candidate_errors: int
    dropped: int
    noise_mismatched: int
    p50_ms: float | None
    p99_legacy_ms: float | None
    p99_new_ms: float | None
    rate: float | None = None  # requests per second since the previous frame; None on the first

    @property
    def routed(self) -> bool:
        return self.id != UNROUTED

    @property
    def requests(self) -> int:
        return self.legacy_requests + self.new_requests

    @property
    def compared(self) -> int:
        return self.matched + self.mismatched

    @property
    def match_rate(self) -> float | None:
        return self.matched / self.compared if self.compared else None


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """One frame of `watch`: the routes, then the proxy-wide figures."""

    routes: tuple[LiveRoute, ...]
    queues: Mapping[str, int]
    worker_restarts: int
    breakers: Mapping[str, str]
    rejected: Mapping[str, int]
    upstream_errors: Mapping[str, Mapping[str, int]]
    store_failing: bool = False  # the shadow store refuses writes (rows wait and are retried)
    store_write_errors: int = 0
    store_rows_lost: int = 0
    proxy_workers: tuple[int, int, int] | None = None  # `serve --workers N`: (count, ready, restarts); None: one

    def requests(self) -> dict[str, int]:
        """Requests per row id, for the next frame's rates."""
        return {r.id: r.requests for r in self.routes}


def _p(latency: Mapping[str, Any] | None, name: str) -> float | None:
    return None if latency is None else float(latency[name])


def _route(doc: Mapping[str, Any], rate: float | None) -> LiveRoute:
    candidate = doc["shadow"]["candidate"]["outcomes"]
    noise = doc["shadow"]["noise"]["outcomes"]
    latency = doc["latency_ms"]
    weight = doc["weight"]
    return LiveRoute(
        id=str(doc["id"]),
        mode=str(doc["mode"]),
        weight=float(weight) if weight is not None else None,
        legacy_requests=int(doc["requests"]["legacy"]),
        new_requests=int(doc["requests"]["new"]),
        errors=int(doc["errors"]),
        matched=int(candidate.get("match", 0)),
        mismatched=int(candidate.get("mismatch", 0)),
        candidate_errors=int(candidate.get("candidate_error", 0)),
        dropped=int(candidate.get("dropped", 0)),
        noise_mismatched=int(noise.get("mismatch", 0)),
        p50_ms=_p(latency["all"], "p50"),
        p99_legacy_ms=_p(latency["legacy"], "p99"),
        p99_new_ms=_p(latency["new"], "p99"),
        rate=rate,
    )


def _unrouted(doc: Mapping[str, Any], rate: float | None) -> LiveRoute:
    latency = doc["latency_ms"]
    return LiveRoute(UNROUTED, "legacy", None, int(doc["requests"]), 0, int(doc["errors"]), 0, 0, 0, 0, 0,
                     _p(latency, "p50"), _p(latency, "p99"), None, rate)  # fmt: skip


def live_frame(
    stats: Mapping[str, Any], previous: Mapping[str, int] | None = None, elapsed: float | None = None
) -> LiveFrame:
    """The frame of a /stats document: routes in config order, then unrouted traffic when there was any.

    `previous` (row id → requests at the last frame, `LiveFrame.requests`) and `elapsed` seconds give the rates.
    """

    def rate(rid: str, total: int) -> float | None:
        if previous is None or not elapsed or rid not in previous:
            return None
        return max(0.0, (total - previous[rid]) / elapsed)

    try:
        rows = [_route(doc, rate(str(doc["id"]), int(doc["requests"]["total"]))) for doc in stats["routes"]]
        unrouted = stats["unrouted"]
        if unrouted["requests"]:
            rows.append(_unrouted(unrouted, rate(UNROUTED, int(unrouted["requests"]))))
        return LiveFrame(
            routes=tuple(rows),
            queues={str(k): int(v) for k, v in stats["queues"].items()},
            worker_restarts=int(stats["worker"]["restarts"]),
            breakers={str(k): str(v) for k, v in stats["breakers"].items()},
            rejected={str(k): int(v) for k, v in stats["rejected"].items()},
            upstream_errors={
                str(up): {str(k): int(n) for k, n in kinds.items()} for up, kinds in stats["upstream_errors"].items()
            },
            store_failing=bool(stats["store"]["failing"]),
            store_write_errors=int(stats["store"]["write_errors"]),
            store_rows_lost=sum(int(n) for n in stats["store"]["rows_lost"].values()),
            proxy_workers=_proxy_workers(stats.get("workers")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StatsFormatError(f"not a strangler /stats document ({type(exc).__name__}: {exc})") from None


def _proxy_workers(section: Mapping[str, Any] | None) -> tuple[int, int, int] | None:
    """/stats `workers` (only a supervisor's): how many proxy workers, how many ready, restarts since start."""
    if section is None:
        return None
    return int(section["count"]), int(section["ready"]), int(section["restarts"])


def _counts(items: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in items.items()) or "none"


def _footer(frame: LiveFrame) -> Text:
    """The proxy-wide figures under the table: proxy workers (under `serve --workers N`), queues, shadow worker
    restarts, breakers, rejections, upstream errors."""
    text = Text()
    if frame.proxy_workers is not None:
        count, ready, restarts = frame.proxy_workers
        text.append("proxy workers: ", "bold").append(f"{ready} of {count} ready", "" if ready == count else "red")
        text.append(f", {restarts} restarts\n", "red" if restarts else "")
    text.append("queues: ", "bold").append(_counts(frame.queues))
    restarts = frame.worker_restarts
    text.append("   worker restarts: ", "bold").append(str(restarts), "red" if restarts else "")
    text.append("   breakers: ", "bold")
    for i, (upstream, state) in enumerate(frame.breakers.items()):
        text.append(", " if i else "").append(f"{upstream} {state}", "" if state == "closed" else "bold red")
    if not frame.breakers:
        text.append("none")
    text.append("\nrejected: ", "bold").append(_counts(frame.rejected), "yellow" if frame.rejected else "")
    failures = {f"{up} {kind}": n for up, kinds in frame.upstream_errors.items() for kind, n in kinds.items()}
    text.append("   upstream errors: ", "bold").append(_counts(failures), "red" if failures else "")
    if frame.store_failing or frame.store_write_errors or frame.store_rows_lost:
        if frame.store_failing:
            text.append("\nstore refusing writes", "bold red")
        else:
            text.append("\nstore writes ok now")
        text.append(
            f" (rows wait and are retried): {frame.store_write_errors} write errors, "
            f"{frame.store_rows_lost} rows lost since start",
            "red" if frame.store_rows_lost else "",
        )
    return text


ROUTE_WIDTH = 28  # route ids are shown up to this many characters


# The figures, in order, with the priority they keep on a narrow terminal (lower goes first).
_FIGURES: tuple[tuple[str, int], ...] = (
    ("legacy", 9), ("new", 9), ("req/s", 8), ("errors", 8), ("compared", 10), ("match", 10), ("mis-\nmatch", 9),
    ("cand.\nerrors", 7), ("drop-\nped", 6), ("noise\ndiff", 3), ("p50\nms*", 5), ("p99\nlegacy*", 4),
    ("p99\nnew*", 4),
)  # fmt: skip


def _cells(r: LiveRoute) -> list[str]:
    match = percent(r.match_rate)
    if r.match_rate is not None and r.match_rate < 1.0:
        match = f"[yellow]{match}[/]"
    return [
        str(r.legacy_requests),
        str(r.new_requests),
        per_second(r.rate),
        f"[red]{r.errors}[/]" if r.errors else "0",
        str(r.compared),
        match,
        str(r.mismatched),
        f"[red]{r.candidate_errors}[/]" if r.candidate_errors else "0",
        f"[yellow]{r.dropped}[/]" if r.dropped else "0",
        str(r.noise_mismatched) if r.routed else MISSING,
        ms(r.p50_ms),
        ms(r.p99_legacy_ms),
        ms(r.p99_new_ms),
    ]


def _shown(rows: Sequence[tuple[str, Text, list[str]]], width: int | None) -> list[int]:
    """The figure columns that fit in `width` (all when None), dropping the lowest priorities first: a figure is
    never cut or wrapped, since a cut number reads as another number."""
    keep = list(range(len(_FIGURES)))
    if width is None:
        return keep

    def needed(columns: list[int]) -> int:
        widths = [
            max(len(r[0]) for r in rows) if rows else 5,
            max((len(r[1]) for r in rows), default=4),
        ]
        for i in columns:
            header = max(len(line) for line in _FIGURES[i][0].splitlines())
            widths.append(max([header, *(len(Text.from_markup(r[2][i])) for r in rows)]))
        return sum(widths) + 3 * len(widths)  # padding on both sides and a separator

    while len(keep) > 1 and needed(keep) > width:
        keep.remove(min(keep, key=lambda i: (_FIGURES[i][1], -i)))
    return keep


def live_table(rows: Sequence[LiveRoute], *, title: str = "", width: int | None = None) -> Table:
    """The per-route table of a frame: one row per route; on a terminal narrower than `width` needs, the least
    important figures are left out (the route id and mode always stay)."""
    table = Table(
        title=title or None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=LATENCY_NOTE,
        caption_justify="left",
    )
    cells = [(escape(r.id[:ROUTE_WIDTH]), mode_text(r.mode, r.weight), _cells(r)) for r in rows]
    shown = _shown(cells, width)
    table.add_column("route", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    for i in shown:
        table.add_column(_FIGURES[i][0], justify="right", no_wrap=True)
    for route, mode, figures in cells:
        table.add_row(route, mode, *(figures[i] for i in shown))
    return table


def live_view(frame: LiveFrame, *, title: str = "", width: int | None = None) -> Group:
    """The watch frame: the per-route table, then the proxy-wide figures."""
    return Group(live_table(frame.routes, title=title, width=width), _footer(frame))
