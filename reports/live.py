"""What `strangler watch` shows: a running proxy's per-route figures from its admin API (/metrics and /routes).

A tiny Prometheus text-format parser (the admin API renders `proxy.metrics`), the per-route view built from the
samples, and the rich table drawn from it (never printed here). Pure: the CLI fetches and refreshes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

UNMATCHED = "unmatched"  # the proxy's route label for requests no route matched
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,?)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class MetricsFormatError(ValueError):
    """A /metrics line that is not Prometheus text format; the message quotes it."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, name: str) -> str:
        return next((v for k, v in self.labels if k == name), "")


def _value(text: str) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    return special[text] if text in special else float(text)


def parse_prometheus(text: str) -> list[Sample]:
    """Every sample in a Prometheus text exposition (comments and blank lines skipped; timestamps ignored)."""
    samples = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = _NAME.match(line)
        if name is None:
            raise MetricsFormatError(f"line {number}: no metric name: {raw!r}")
        rest = line[name.end() :]
        labels: list[tuple[str, str]] = []
        if rest.startswith("{"):
            pos = 1
            while not rest[pos:].lstrip().startswith("}"):
                found = _LABEL.match(rest, pos)
                if found is None:
                    raise MetricsFormatError(f"line {number}: bad labels: {raw!r}")
                value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], found.group(2))
                labels.append((found.group(1), value))
                pos = found.end()
                if not found.group(3) and not rest[pos:].lstrip().startswith("}"):
                    raise MetricsFormatError(f"line {number}: bad labels: {raw!r}")
            rest = rest[rest.index("}", pos) + 1 :]
        parts = rest.split()
        try:
            samples.append(Sample(name.group(0), tuple(labels), _value(parts[0])))
        except (IndexError, ValueError, KeyError):
            raise MetricsFormatError(f"line {number}: bad value: {raw!r}") from None
    return samples


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q × count.

    `buckets` are (upper bound, cumulative count), any order, +Inf included; None when empty.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bound: the best estimate is that bound
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, cumulative
    return lower


@dataclass(frozen=True, slots=True)
class LiveRoute:
    """One route's counters since the proxy started (and its request rate since the previous frame)."""

    id: str
    mode: str
    weight: float | None
    legacy_requests: int
    new_requests: int
    errors: int  # 5xx answers and upstream failures
    matched: int
    mismatched: int
    candidate_errors: int
    p50_ms: float | None
    p99_legacy_ms: float | None
    p99_new_ms: float | None
    rate: float | None = None  # requests per second since the previous frame; None on the first

    @property
    def requests(self) -> int:
        return self.legacy_requests + self.new_requests

    @property
    def compared(self) -> int:
        return self.matched + self.mismatched

    @property
    def match_rate(self) -> float | None:
        return self.matched / self.compared if self.compared else None


def live_routes(
    samples: Iterable[Sample],
    routes: Sequence[Mapping[str, Any]],
    previous: Mapping[str, int] | None = None,
    elapsed: float | None = None,
) -> list[LiveRoute]:
    """Per-route figures from /metrics samples and the /routes list (in config order; unrouted traffic last).

    `previous` (route id → requests at the last frame) and `elapsed` seconds give the request rate.
    """
    requests: dict[tuple[str, str], int] = {}
    errors: dict[str, int] = {}
    shadow: dict[tuple[str, str], int] = {}
    latency: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s in samples:
        if s.name == "strangler_requests_total":
            key = (s.label("route"), s.label("upstream"))
            requests[key] = requests.get(key, 0) + int(s.value)
            if s.label("class") in ("5xx", "0xx"):
                errors[key[0]] = errors.get(key[0], 0) + int(s.value)
        elif s.name == "strangler_shadow_total":
            key = (s.label("route"), s.label("outcome"))
            shadow[key] = shadow.get(key, 0) + int(s.value)
        elif s.name == "strangler_request_duration_seconds_bucket":
            bound = _value(s.label("le"))
            latency.setdefault((s.label("route"), s.label("upstream")), []).append((bound, s.value))

    def p(q: float, rid: str, upstreams: Iterable[str]) -> float | None:
        merged: dict[float, float] = {}
        for up in upstreams:
            for bound, count in latency.get((rid, up), ()):
                merged[bound] = merged.get(bound, 0.0) + count
        found = histogram_quantile(q, list(merged.items()))
        return found * 1000 if found is not None else None

    out = []
    docs = list(routes)
    if any(rid == UNMATCHED for rid, _ in requests):
        docs.append({"id": UNMATCHED, "mode": "legacy", "legacy": "", "upstream": "", "weight": None})
    for doc in docs:
        rid = str(doc["id"])
        mine = {up: n for (r, up), n in requests.items() if r == rid}
        legacy_up, new_up = str(doc.get("legacy", "")), str(doc.get("upstream", ""))
        new_n = mine.get(new_up, 0) if new_up != legacy_up else 0
        total = sum(mine.values())
        rate = None
        if previous is not None and elapsed and rid in previous:
            rate = max(0.0, (total - previous[rid]) / elapsed)
        weight = doc.get("weight")
        out.append(
            LiveRoute(
                id=rid,
                mode=str(doc.get("mode", "")),
                weight=float(weight) if weight is not None else None,
                legacy_requests=total - new_n,
                new_requests=new_n,
                errors=errors.get(rid, 0),
                matched=shadow.get((rid, "match"), 0),
                mismatched=shadow.get((rid, "mismatch"), 0),
                candidate_errors=shadow.get((rid, "candidate_error"), 0),
                p50_ms=p(0.5, rid, mine),
                p99_legacy_ms=p(0.99, rid, [legacy_up]) if rid != UNMATCHED else p(0.99, rid, mine),
                p99_new_ms=p(0.99, rid, [new_up]) if new_up and new_up != legacy_up else None,
                rate=rate,
            )
        )
    return out


_MODE_STYLE = {"legacy": "dim", "shadow": "cyan", "canary": "yellow", "new": "green"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def store_faults(samples: Iterable[Sample]) -> str:
    """A line for the watch frame when the shadow store fails writes or has lost rows; "" while it is healthy."""
    failing, errors, lost = False, 0, 0
    for s in samples:
        if s.name == "strangler_store_failing":
            failing = failing or s.value > 0
        elif s.name == "strangler_store_write_errors_total":
            errors += int(s.value)
        elif s.name == "strangler_store_rows_lost_total":
            lost += int(s.value)
    if not (failing or errors or lost):
        return ""
    state = "[red]store refusing writes[/] (rows wait and are retried)" if failing else "store writes ok now"
    return f"{state}; {errors} write errors, {lost} rows lost since start"


def live_table(rows: Sequence[LiveRoute], *, title: str = "", caption: str = "") -> Table:
    """The watch frame: one row per route; `caption` under it (store faults)."""
    table = Table(
        title=title or None, caption=caption or None, title_justify="left", caption_justify="left",
        box=box.SIMPLE_HEAD, pad_edge=False,
    )  # fmt: skip
    for name in ("route", "mode", "legacy", "new", "req/s", "errors", "compared", "match", "mismatch", "cand.err"):
        table.add_column(name, justify="left" if name in ("route", "mode") else "right", no_wrap=name != "route")
    for name in ("p50 ms", "p99 legacy", "p99 new"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        mode = f"[{_MODE_STYLE.get(r.mode, 'default')}]{escape(r.mode)}[/]"
        if r.mode == "canary" and r.weight is not None:
            mode += f" {r.weight:g}%"
        match = "-" if r.match_rate is None else f"{r.match_rate * 100:.1f}%"
        if r.match_rate is not None and r.match_rate < 1.0:
            match = f"[yellow]{match}[/]"
        table.add_row(
            escape(r.id if r.id != UNMATCHED else "(unrouted)"),
            mode,
            str(r.legacy_requests),
            str(r.new_requests),
            "-" if r.rate is None else f"{r.rate:.1f}",
            f"[red]{r.errors}[/]" if r.errors else "0",
            str(r.compared),
            match,
            str(r.mismatched),
            f"[red]{r.candidate_errors}[/]" if r.candidate_errors else "0",
            _ms(r.p50_ms),
            _ms(r.p99_legacy_ms),
            _ms(r.p99_new_ms),
        )
    return table
