"""Readiness figures read from the store: outcome counts per route (`route_stats`), latency percentiles and the
per-field difference counts (`field_stats`, `field_samples`), each merged over every open file.

Counts come from the hourly rollups; when `since` falls inside an hour, that first partial hour is counted from the
raw exchanges instead (one indexed hour of rows), so windows like "since the last flip" are exact. Functions take
plain `sqlite3` connections from `shadow.store.database`, which owns opening them.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any, cast

from proxy.percentiles import percentile
from shadow.store.read_sql import Conns, rollup_filter, sql_where, where, window
from shadow.store.types import FieldStat, Percentiles, RouteStats, histogram_percentile
from shadow.values import LATENCY_BUCKETS, FieldKind, Pair, latency_bucket

# The pairs made from live client traffic: the only evidence for readiness. Replays ("replay") are read apart.
LIVE_PAIRS: tuple[Pair, ...] = ("candidate", "noise")


def outcome_counts(conn: sqlite3.Connection, since: float | None, route_id: str | None) -> Counter[tuple[str, ...]]:
    """(route_id, pair, outcome, reason) -> exchanges, reason "" when there is none."""
    first_hour, partial = window(since)
    counts: Counter[tuple[str, ...]] = Counter()
    clauses, params = rollup_filter(first_hour, route_id)
    sql = (
        f"SELECT route_id, pair, outcome, reason, SUM(count) FROM route_rollup{sql_where(clauses)} GROUP BY 1, 2, 3, 4"
    )
    for rid, pair, outcome, reason, n in conn.execute(sql, params):
        counts[(rid, pair, outcome, reason)] += n
    if partial is not None:
        clauses, params = ["time >= ?", "time < ?"], [partial[0], partial[1]]
        where(clauses, params, "route_id", route_id)
        sql = (
            "SELECT route_id, pair, outcome, COALESCE(reason, ''), COUNT(*) FROM exchanges"
            f"{sql_where(clauses)} GROUP BY 1, 2, 3, 4"
        )
        for rid, pair, outcome, reason, n in conn.execute(sql, params):
            counts[(rid, pair, outcome, reason)] += n
    return counts


def _by_reason(counts: Counter[tuple[str, ...]], route_id: str, pair: str, outcome: str) -> tuple[tuple[str, int], ...]:
    found = [(k[3], n) for k, n in counts.items() if k[0] == route_id and k[1] == pair and k[2] == outcome and n]
    return tuple(sorted(found, key=lambda item: (-item[1], item[0])))


def route_stats(conns: Conns, since: float | None, route_id: str | None) -> list[RouteStats]:
    counts: Counter[tuple[str, ...]] = Counter()
    for conn in conns:
        counts.update(outcome_counts(conn, since, route_id))
    per: dict[tuple[str, str, str], int] = {}
    for (rid, pair, outcome, _reason), count in counts.items():
        per[(rid, pair, outcome)] = per.get((rid, pair, outcome), 0) + count
    stats = []
    for rid in sorted({k[0] for k in counts}):

        def n(pair: str, outcome: str, rid: str = rid) -> int:
            return per.get((rid, pair, outcome), 0)

        stats.append(
            RouteStats(
                route_id=rid,
                total=sum(v for k, v in per.items() if k[0] == rid and k[1] in LIVE_PAIRS),
                match=n("candidate", "match"),
                mismatch=n("candidate", "mismatch"),
                candidate_error=n("candidate", "candidate_error"),
                skipped=n("candidate", "skipped"),
                dropped=n("candidate", "dropped"),
                compared=n("candidate", "match") + n("candidate", "mismatch"),
                noise_match=n("noise", "match"),
                noise_mismatch=n("noise", "mismatch"),
                noise_error=n("noise", "candidate_error"),
                noise_compared=n("noise", "match") + n("noise", "mismatch"),
                skipped_by_reason=_by_reason(counts, rid, "candidate", "skipped"),
                dropped_by_reason=_by_reason(counts, rid, "candidate", "dropped"),
                errors_by_reason=_by_reason(counts, rid, "candidate", "candidate_error"),
            )
        )
    return stats


def latency_histograms(
    conn: sqlite3.Connection, since: float | None, route_id: str | None, pair: Pair
) -> dict[tuple[str, str], list[int]]:
    """(route_id, side) -> bucket counts (see `shadow.store.types.LATENCY_BOUNDS_MS`)."""
    first_hour, partial = window(since)
    hists: dict[tuple[str, str], list[int]] = {}

    def add(rid: str, side: str, bucket: int, count: int) -> None:
        hists.setdefault((rid, side), [0] * LATENCY_BUCKETS)[bucket] += count

    clauses, params = rollup_filter(first_hour, route_id, pair)
    sql = f"SELECT route_id, side, bucket, SUM(count) FROM latency_rollup{sql_where(clauses)} GROUP BY 1, 2, 3"
    for rid, side, bucket, count in conn.execute(sql, params):
        add(rid, side, bucket, count)
    if partial is not None:
        clauses, params = ["pair = ?", "time >= ?", "time < ?"], list[Any]([pair, *partial])
        where(clauses, params, "route_id", route_id)
        sql = f"SELECT route_id, legacy_latency_ms, new_latency_ms FROM exchanges{sql_where(clauses)}"
        for rid, legacy_ms, new_ms in conn.execute(sql, params):
            if legacy_ms is not None:
                add(rid, "legacy", latency_bucket(legacy_ms), 1)
            if new_ms is not None:
                add(rid, "new", latency_bucket(new_ms), 1)
    return hists


def latency_values(
    conn: sqlite3.Connection, since: float | None, route_id: str | None, pair: Pair
) -> dict[tuple[str, str], list[int]]:
    """(route_id, side) -> every stored latency in µs of the window's exchanges of `pair` (unsorted)."""
    values: dict[tuple[str, str], list[int]] = {}
    clauses, params = ["pair = ?"], list[Any]([pair])
    where(clauses, params, "route_id", route_id)
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    sql = f"SELECT route_id, legacy_latency_us, new_latency_us FROM exchanges{sql_where(clauses)}"
    for rid, legacy_us, new_us in conn.execute(sql, params):
        if legacy_us is not None:
            values.setdefault((rid, "legacy"), []).append(legacy_us)
        if new_us is not None:
            values.setdefault((rid, "new"), []).append(new_us)
    return values


QUANTILES = (0.50, 0.95, 0.99)


def latency_percentiles(
    conns: Conns, since: float | None, route_id: str | None, pair: Pair
) -> dict[tuple[str, str], Percentiles]:
    """Exact nearest-rank percentiles over the window's stored latencies (µs) when every exchange the rollup
    counted is still stored; else (retention deleted some) the histogram rollup's estimates, marked inexact."""
    merged: dict[tuple[str, str], list[int]] = {}
    exact: dict[tuple[str, str], list[int]] = {}
    for conn in conns:
        for key, counts in latency_histograms(conn, since, route_id, pair).items():
            into = merged.setdefault(key, [0] * LATENCY_BUCKETS)
            for i, c in enumerate(counts):
                into[i] += c
        for key, found in latency_values(conn, since, route_id, pair).items():
            exact.setdefault(key, []).extend(found)
    result = {}
    for key in sorted({*merged, *exact}):
        values = sorted(exact.get(key, ()))
        counted = sum(merged.get(key, ()))
        if values and len(values) >= counted:
            ranks = [percentile(values, q) for q in QUANTILES]
            p50, p95, p99 = (v / 1000 for v in ranks if v is not None)
            result[key] = Percentiles(p50, p95, p99, count=len(values))
            continue
        p50e, p95e, p99e = (histogram_percentile(merged[key], q) for q in QUANTILES)
        if p50e is not None and p95e is not None and p99e is not None:
            result[key] = Percentiles(p50e, p95e, p99e, count=counted, exact=False)
    return result


def field_stats(conns: Conns, since: float | None, route_id: str | None, pair: Pair) -> list[FieldStat]:
    """Exchanges per (route, field group) with their kinds, busiest first within a route."""
    first_hour, partial = window(since)
    counts: Counter[tuple[str, str, str]] = Counter()  # (route, grp, kind) -> exchanges; kind '' is unknown
    for conn in conns:
        clauses, params = rollup_filter(first_hour, route_id, pair)
        sql = f"SELECT route_id, grp, kind, SUM(count) FROM field_rollup{sql_where(clauses)} GROUP BY 1, 2, 3"
        for rid, grp, kind, n in conn.execute(sql, params):
            counts[(rid, grp, kind or "")] += n
        if partial is not None:
            clauses, params = ["e.pair = ?", "e.time >= ?", "e.time < ?"], list[Any]([pair, *partial])
            where(clauses, params, "e.route_id", route_id)
            # One kind per (exchange, group), merged as `shadow.values.field_diffs` merges them: "mixed" when several.
            per_exchange = (
                "SELECT e.route_id AS rid, d.grp AS grp,"
                " CASE WHEN COUNT(DISTINCT d.kind) > 1 THEN 'mixed' ELSE MIN(d.kind) END AS kind FROM exchanges e"
                f" JOIN differences d ON d.exchange_id = e.id{sql_where(clauses)} GROUP BY e.id, d.grp"
            )
            sql = f"SELECT rid, grp, kind, COUNT(*) FROM ({per_exchange}) GROUP BY 1, 2, 3"
            for rid, grp, kind, n in conn.execute(sql, params):
                counts[(rid, grp, kind)] += n
    totals: Counter[tuple[str, str]] = Counter()
    kinds: dict[tuple[str, str], list[tuple[FieldKind, int]]] = {}
    for (rid, grp, kind), n in counts.items():
        totals[(rid, grp)] += n
        if kind:
            kinds.setdefault((rid, grp), []).append((cast(FieldKind, kind), n))
    ordered = sorted(totals.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))
    return [
        FieldStat(
            route_id=rid,
            group=grp,
            count=n,
            kinds=tuple(sorted(kinds.get((rid, grp), ()), key=lambda item: (-item[1], item[0]))),
        )
        for (rid, grp), n in ordered
    ]


def field_samples(conns: Conns, route_id: str, group: str, limit: int) -> list[tuple[str | None, str | None]]:
    """The newest (legacy, new) value pairs of one field group, for volatility detection."""
    samples: list[tuple[str | None, str | None]] = []
    for conn in conns:
        sql = (
            "SELECT legacy_value, new_value FROM differences WHERE route_id = ? AND grp = ? AND pair != 'replay'"
            " ORDER BY id DESC LIMIT ?"
        )
        samples.extend(conn.execute(sql, (route_id, group, limit - len(samples))))
        if len(samples) >= limit:
            break
    return samples
