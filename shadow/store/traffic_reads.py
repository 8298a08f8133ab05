"""Traffic read from the store: requests per route, mode and side (`traffic_by_mode`, `served_by_period`), the
paths no route matched (`unrouted`) and the per-path rollup the inventory reads (`path_traffic`), each merged over
every open file. Counts come from the minute `traffic` rollup and the hourly `path_rollup`.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shadow.store.read_sql import Conns, sql_where
from shadow.store.types import (
    PathTraffic,
    ServedCount,
    TrafficRow,
    UnroutedPath,
)


def traffic_by_mode(conns: Conns, since: float | None) -> list[TrafficRow]:
    """Requests per (route, mode, side) from the minute rollup; the minute holding `since` is included."""
    totals: dict[tuple[str, str, str], list[float]] = {}
    params = [] if since is None else [int(since // 60) * 60]
    for conn in conns:
        sql = (
            "SELECT route_id, mode, served_by, SUM(count), SUM(errors), SUM(latency_ms_sum) FROM traffic"
            f"{' WHERE minute >= ?' if since is not None else ''} GROUP BY 1, 2, 3"
        )
        for rid, mode, side, count, errors, latency in conn.execute(sql, params):
            into = totals.setdefault((rid, mode, side), [0, 0, 0.0])
            into[0] += count
            into[1] += errors
            into[2] += latency
    return [
        TrafficRow(route_id=k[0], mode=k[1], served_by=k[2], count=int(v[0]), errors=int(v[1]), latency_ms_sum=v[2])
        for k, v in sorted(totals.items())
    ]


def unrouted(conns: Conns, since: float | None, limit: int) -> list[UnroutedPath]:
    counts: Counter[tuple[str, str]] = Counter()
    params = [] if since is None else [int(since // 60) * 60]
    for conn in conns:
        sql = (
            "SELECT method, path, SUM(count) FROM traffic WHERE route_id = ''"
            f"{' AND minute >= ?' if since is not None else ''} GROUP BY 1, 2"
        )
        for method, path, n in conn.execute(sql, params):
            counts[(method, path)] += n
    busiest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [UnroutedPath(method=m, path=p, count=n) for (m, p), n in busiest]


def path_traffic(conns: Conns, since: float | None) -> list[PathTraffic]:
    """Requests per (route, method, path), each with its status mix and legacy latency histogram, from
    `path_rollup` (the hour holding `since` included); traffic counted before that table existed (meta
    `path_rollup_since`) from `traffic` (the minute holding `since` included), with no statuses or latency.

    Summed here rather than by GROUP BY: on a million rows of mostly distinct paths SQLite's temporary B-tree
    takes seconds, a plain scan summed into dicts a fraction of that."""
    with _no_cycle_collection():
        return _path_traffic(conns, since)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while hundreds of thousands of small containers are built that can hold no
    cycle: otherwise it runs every few hundred allocations, walking all of them (measured: half the inventory's
    store read on a million rows)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _path_traffic(conns: Conns, since: float | None) -> list[PathTraffic]:
    # (route, method, path) -> [requests, {status: requests}, {legacy latency bucket: requests}]
    found: dict[tuple[str, str, str], list[Any]] = {}
    for conn in conns:
        row = conn.execute("SELECT value FROM meta WHERE key = 'path_rollup_since'").fetchone()
        before = int(row[0]) if row else None
        clauses, params = ([] if before is None else ["minute < ?"]), ([] if before is None else [before])
        if since is not None:
            clauses.append("minute >= ?")
            params.append(int(since // 60) * 60)
        sql = f"SELECT route_id, method, path, count FROM traffic{sql_where(clauses)}"
        for rid, method, path, n in conn.execute(sql, params):
            entry = found.get((rid, method, path))
            if entry is None:
                found[(rid, method, path)] = [n, {}, {}]
            else:
                entry[0] += n
        hour = [] if since is None else [int(since // 3600) * 3600]
        sql = (
            "SELECT route_id, method, path, served_by = 'legacy', status, bucket, count FROM path_rollup"
            f"{' WHERE hour >= ?' if hour else ''}"
        )
        for rid, method, path, legacy, status, bucket, n in conn.execute(sql, hour):
            entry = found.get((rid, method, path))
            if entry is None:
                entry = found[(rid, method, path)] = [0, {}, {}]
            entry[0] += n
            if status < 0:
                continue
            statuses = entry[1]
            statuses[status] = statuses.get(status, 0) + n
            if legacy:
                buckets = entry[2]
                buckets[bucket] = buckets.get(bucket, 0) + n
    return [
        PathTraffic(rid, method, path, n, tuple(statuses.items()), tuple(buckets.items()))
        for (rid, method, path), (n, statuses, buckets) in found.items()
    ]


def served_by_period(conns: Conns, since: float | None, period: int) -> list[ServedCount]:
    """Requests per (period, route, side) from the minute rollup, periods of `period` seconds aligned to the epoch
    (UTC days and hours); the minute holding `since` is included."""
    totals: Counter[tuple[int, str, str]] = Counter()
    params = [] if since is None else [int(since // 60) * 60]
    for conn in conns:
        sql = (
            f"SELECT minute / {int(period)} * {int(period)}, route_id, served_by, SUM(count) FROM traffic"
            f"{' WHERE minute >= ?' if since is not None else ''} GROUP BY 1, 2, 3"
        )
        for start, rid, side, n in conn.execute(sql, params):
            totals[(start, rid, side)] += n
    return [ServedCount(start, rid, side, n) for (start, rid, side), n in sorted(totals.items())]
