"""The plain values the store's read queries return, and the percentiles read from the latency histogram.

Kept apart from `shadow.store.database` so reports can name these types without importing sqlite-utils. The bucket
layout itself (`LATENCY_BOUNDS_MS`, `latency_bucket`) is in `shadow.values`, a compiled module: the proxy buckets
every request's latency for its traffic tally, and the writer's rollups and these readers share that one definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.percentiles import bucket_of_rank
from shadow.values import LATENCY_BOUNDS_MS, ExchangeRecord, FieldKind, Outcome, Pair, merge_kinds


def bucket_estimate(bucket: int) -> float:
    """A bucket's representative value in ms: the geometric middle of its bounds (error at most half a bucket)."""
    if bucket <= 0:
        return LATENCY_BOUNDS_MS[0]
    if bucket >= len(LATENCY_BOUNDS_MS):
        return LATENCY_BOUNDS_MS[-1]
    return math.sqrt(LATENCY_BOUNDS_MS[bucket - 1] * LATENCY_BOUNDS_MS[bucket])


def histogram_percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1, nearest rank) of a bucket histogram, in ms; None when it is empty."""
    bucket = bucket_of_rank(counts, q)
    return None if bucket is None else bucket_estimate(bucket)


Reasons = tuple[tuple[str, int], ...]  # (reason, count), busiest first


@dataclass(frozen=True, slots=True)
class RouteStats:
    """Outcome counts of one route. `compared` and `noise_compared` are match + mismatch of their pair."""

    route_id: str
    total: int  # every record of both pairs
    match: int
    mismatch: int
    candidate_error: int
    skipped: int
    dropped: int
    compared: int
    noise_match: int
    noise_mismatch: int
    noise_error: int
    noise_compared: int
    skipped_by_reason: Reasons = ()
    dropped_by_reason: Reasons = ()
    errors_by_reason: Reasons = ()


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in ms over `count` exchanges, by nearest rank.

    `exact`: read from the stored exchanges (µs resolution); False when retention has deleted some of the window's
    rows, and the figures are estimates from the hourly histogram rollup (within one bucket, ~25%)."""

    p50: float
    p95: float
    p99: float
    count: int
    exact: bool = True


@dataclass(frozen=True, slots=True)
class FieldStat:
    """How many exchanges of a route differed in one field group, and how (the kind per exchange)."""

    route_id: str
    group: str
    count: int
    # (kind, exchanges) busiest first: the kind each exchange's differences in the group had. Exchanges counted
    # before kinds were stored (schema step `_field_rollup_kind`) have none: `count` may exceed the kinds' sum.
    kinds: tuple[tuple[FieldKind, int], ...] = ()

    @property
    def kind(self) -> FieldKind | None:
        """The common kind of the field's exchanges, "mixed" when they differ, None when no kind is known."""
        return merge_kinds(k for k, _ in self.kinds)


@dataclass(frozen=True, slots=True)
class TrafficRow:
    """Requests served per (route, mode, side) over a window; route_id is "" for unrouted requests."""

    route_id: str
    mode: str
    served_by: str
    count: int
    errors: int
    latency_ms_sum: float


@dataclass(frozen=True, slots=True)
class UnroutedPath:
    method: str
    path: str
    count: int


@dataclass(frozen=True, slots=True)
class PathTraffic:
    """Requests per (route, method, path) over a window, every side: `path` is the route's template when routed,
    the concrete canonical path when not (route_id ""). `statuses` (status, requests) and `legacy_buckets`
    (latency bucket, requests served by legacy), in no order, come from `path_rollup` (whole hours; empty for
    traffic counted before that table)."""

    route_id: str
    method: str
    path: str
    requests: int
    statuses: tuple[tuple[int, int], ...] = ()
    legacy_buckets: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ServedCount:
    """Requests of one route (route_id "" for unrouted ones) served by one side in one period starting at `start`
    (epoch seconds, a multiple of the period)."""

    start: int
    route_id: str
    served_by: str
    count: int


@dataclass(frozen=True, slots=True)
class StoredPairBody:
    """One stored response body of a compared candidate pair whose sides both answered 2xx: which side, the pair's
    outcome (match or mismatch)."""

    exchange_id: int
    outcome: str
    side: str  # "legacy" or "new"
    data: bytes  # decompressed, redacted
    truncated: bool


@dataclass(frozen=True, slots=True)
class ExchangeRow:
    """One stored exchange, without headers and bodies. `source` is the index of the file it came from."""

    id: int
    source: int
    time: float
    route_id: str
    mode: str
    pair: Pair
    method: str
    template: str
    path: str
    query: str
    request_id: str
    served_by: str
    outcome: str
    reason: str | None
    legacy_status: int | None
    new_status: int | None
    legacy_latency_ms: float | None  # exact to the µs
    new_latency_ms: float | None
    difference_count: int


@dataclass(frozen=True, slots=True)
class ExchangeDetail:
    """One stored exchange in full: the record as written (bodies decompressed, differences attached)."""

    id: int
    source: int
    record: ExchangeRecord


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """What is needed to send a stored request again."""

    exchange_id: int
    source: int
    time: float
    route_id: str
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None  # None for a bodyless method without a stored body


@dataclass(frozen=True, slots=True)
class ReplayPair:
    """A replayed exchange (pair "replay") with what its original comparison found: before → after.

    `before` is None when the original is no longer stored (deleted by retention)."""

    route_id: str
    exchange_id: int
    origin_id: int | None
    time: float
    before: Outcome | None
    before_groups: frozenset[str]
    after: Outcome
    after_groups: frozenset[str]
