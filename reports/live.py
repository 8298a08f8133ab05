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
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StatsFormatError(f"not a strangler /stats document ({type(exc).__name__}: {exc})") from None


def _counts(items: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in items.items()) or "none"


def _footer(frame: LiveFrame) -> Text:
    """The proxy-wide figures under the table: queues, worker restarts, breakers, rejections, upstream errors."""
    text = Text()
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
    return text


def live_table(rows: Sequence[LiveRoute], *, title: str = "") -> Table:
    """The per-route table of a frame: one row per route."""
    table = Table(
        title=title or None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=LATENCY_NOTE,
        caption_justify="left",
    )
    columns = ("route", "mode", "legacy", "new", "req/s", "errors", "compared", "match", "mismatch", "cand.err",
               "dropped", "noise diff")  # fmt: skip
    for name in columns:
        table.add_column(name, justify="left" if name in ("route", "mode") else "right", no_wrap=name != "route")
    for name in ("p50 ms*", "p99 legacy*", "p99 new*"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        match = percent(r.match_rate)
        if r.match_rate is not None and r.match_rate < 1.0:
            match = f"[yellow]{match}[/]"
        table.add_row(
            escape(r.id),
            mode_text(r.mode, r.weight),
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
        )
    return table


def live_view(frame: LiveFrame, *, title: str = "") -> Group:
    """The watch frame: the per-route table, then the proxy-wide figures."""
    return Group(live_table(frame.routes, title=title), _footer(frame))
