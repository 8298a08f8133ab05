"""The store's read queries: each runs on every open file and merges the results, so reports can read several files.

Counts come from the hourly rollups; when `since` falls inside an hour, that first partial hour is counted from the
raw exchanges instead (one indexed hour of rows), so windows like "since the last flip" are exact. Functions take
plain `sqlite3` connections from `shadow.store.database`, which owns opening them (and the only sqlite-utils import).
"""

from __future__ import annotations

import gc
import heapq
import sqlite3
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import orjson

from proxy.percentiles import percentile
from shadow.store.types import (
    LATENCY_BUCKETS,
    ExchangeDetail,
    ExchangeRow,
    FieldStat,
    PathTraffic,
    Percentiles,
    ReplayItem,
    ReplayPair,
    RouteStats,
    ServedCount,
    StoredPairBody,
    TrafficRow,
    UnroutedPath,
    histogram_percentile,
    latency_bucket,
)
from shadow.values import Difference, DiffKind, ExchangeRecord, FieldKind, FlipRecord, Outcome, Pair, StoredBody

Conns = Sequence[sqlite3.Connection]
# The pairs made from live client traffic: the only evidence for readiness. Replays ("replay") are read apart.
LIVE_PAIRS: tuple[Pair, ...] = ("candidate", "noise")
# Methods whose requests carry no body, so they can be replayed without a stored request body.
BODYLESS_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE", "DELETE")


def _window(since: float | None) -> tuple[int | None, tuple[float, float] | None]:
    """Split `since` into the first whole hour to read from rollups and the partial hour to read raw."""
    if since is None:
        return None, None
    hour = int(since // 3600) * 3600
    if hour == since:
        return hour, None
    return hour + 3600, (since, float(hour + 3600))


def _where(clauses: list[str], params: list[Any], column: str, value: object) -> None:
    if value is not None:
        clauses.append(f"{column} = ?")
        params.append(value)


def _sql_where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def outcome_counts(conn: sqlite3.Connection, since: float | None, route_id: str | None) -> Counter[tuple[str, ...]]:
    """(route_id, pair, outcome, reason) -> exchanges, reason "" when there is none."""
    first_hour, partial = _window(since)
    counts: Counter[tuple[str, ...]] = Counter()
    clauses: list[str] = []
    params: list[Any] = []
    _where(clauses, params, "route_id", route_id)
    if first_hour is not None:
        clauses.append("hour >= ?")
        params.append(first_hour)
    sql = (
        f"SELECT route_id, pair, outcome, reason, SUM(count) FROM route_rollup{_sql_where(clauses)} GROUP BY 1, 2, 3, 4"
    )
    for rid, pair, outcome, reason, n in conn.execute(sql, params):
        counts[(rid, pair, outcome, reason)] += n
    if partial is not None:
        clauses, params = ["time >= ?", "time < ?"], [partial[0], partial[1]]
        _where(clauses, params, "route_id", route_id)
        sql = (
            "SELECT route_id, pair, outcome, COALESCE(reason, ''), COUNT(*) FROM exchanges"
            f"{_sql_where(clauses)} GROUP BY 1, 2, 3, 4"
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
    first_hour, partial = _window(since)
    hists: dict[tuple[str, str], list[int]] = {}

    def add(rid: str, side: str, bucket: int, count: int) -> None:
        hists.setdefault((rid, side), [0] * LATENCY_BUCKETS)[bucket] += count

    clauses, params = ["pair = ?"], list[Any]([pair])
    _where(clauses, params, "route_id", route_id)
    if first_hour is not None:
        clauses.append("hour >= ?")
        params.append(first_hour)
    sql = f"SELECT route_id, side, bucket, SUM(count) FROM latency_rollup{_sql_where(clauses)} GROUP BY 1, 2, 3"
    for rid, side, bucket, count in conn.execute(sql, params):
        add(rid, side, bucket, count)
    if partial is not None:
        clauses, params = ["pair = ?", "time >= ?", "time < ?"], list[Any]([pair, *partial])
        _where(clauses, params, "route_id", route_id)
        sql = f"SELECT route_id, legacy_latency_ms, new_latency_ms FROM exchanges{_sql_where(clauses)}"
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
    _where(clauses, params, "route_id", route_id)
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    sql = f"SELECT route_id, legacy_latency_us, new_latency_us FROM exchanges{_sql_where(clauses)}"
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
    first_hour, partial = _window(since)
    counts: Counter[tuple[str, str, str]] = Counter()  # (route, grp, kind) -> exchanges; kind '' is unknown
    for conn in conns:
        clauses, params = ["pair = ?"], list[Any]([pair])
        _where(clauses, params, "route_id", route_id)
        if first_hour is not None:
            clauses.append("hour >= ?")
            params.append(first_hour)
        sql = f"SELECT route_id, grp, kind, SUM(count) FROM field_rollup{_sql_where(clauses)} GROUP BY 1, 2, 3"
        for rid, grp, kind, n in conn.execute(sql, params):
            counts[(rid, grp, kind or "")] += n
        if partial is not None:
            clauses, params = ["e.pair = ?", "e.time >= ?", "e.time < ?"], list[Any]([pair, *partial])
            _where(clauses, params, "e.route_id", route_id)
            # One kind per (exchange, group), merged as `shadow.values.field_diffs` merges them: "mixed" when several.
            per_exchange = (
                "SELECT e.route_id AS rid, d.grp AS grp,"
                " CASE WHEN COUNT(DISTINCT d.kind) > 1 THEN 'mixed' ELSE MIN(d.kind) END AS kind FROM exchanges e"
                f" JOIN differences d ON d.exchange_id = e.id{_sql_where(clauses)} GROUP BY e.id, d.grp"
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
        sql = f"SELECT route_id, method, path, count FROM traffic{_sql_where(clauses)}"
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


def pair_bodies(conns: Conns, route_id: str, since: float | None, limit: int) -> list[StoredPairBody]:
    """The stored legacy and new bodies of a route's compared candidate pairs (match or mismatch) where both sides
    answered 2xx (an error body has its own contract), newest pairs first, at most `limit` pairs per file."""
    clauses = [
        "e.route_id = ?", "e.pair = 'candidate'", "e.outcome IN ('match', 'mismatch')",
        "e.legacy_status BETWEEN 200 AND 299", "e.new_status BETWEEN 200 AND 299",
    ]  # fmt: skip
    params: list[Any] = [route_id]
    if since is not None:
        clauses.append("e.time >= ?")
        params.append(since)
    found: list[StoredPairBody] = []
    for conn in conns:
        sql = (
            "SELECT e.id, e.outcome, b.which, b.data, b.truncated FROM exchanges e"
            " JOIN bodies b ON b.exchange_id = e.id AND b.which IN ('legacy', 'new')"
            f" WHERE e.id IN (SELECT e.id FROM exchanges e{_sql_where(clauses)}"
            " AND EXISTS (SELECT 1 FROM bodies b WHERE b.exchange_id = e.id) ORDER BY e.id DESC LIMIT ?)"
        )
        for eid, outcome, which, data, truncated in conn.execute(sql, [*params, limit]):
            found.append(StoredPairBody(eid, outcome, which, zlib.decompress(data), bool(truncated)))
    return found


_ROW_COLUMNS = (
    "e.id, e.time, e.route_id, e.mode, e.pair, e.method, e.template, e.path, e.query, e.request_id, e.served_by,"
    " e.outcome, e.reason, e.legacy_status, e.new_status, e.legacy_latency_us / 1000.0, e.new_latency_us / 1000.0,"
    " (SELECT COUNT(*) FROM differences d WHERE d.exchange_id = e.id)"
)


def list_exchanges(
    conns: Conns,
    route_id: str | None,
    outcome: str | None,
    field_group: str | None,
    since: float | None,
    limit: int,
    pair: str | None,
) -> list[ExchangeRow]:
    """The newest exchanges matching every given filter, newest first."""
    clauses: list[str] = []
    params: list[Any] = []
    _where(clauses, params, "e.route_id", route_id)
    _where(clauses, params, "e.outcome", outcome)
    _where(clauses, params, "e.pair", pair)
    if since is not None:
        clauses.append("e.time >= ?")
        params.append(since)
    if field_group is not None:
        clauses.append("EXISTS (SELECT 1 FROM differences d WHERE d.exchange_id = e.id AND d.grp = ?)")
        params.append(field_group)
    sql = f"SELECT {_ROW_COLUMNS} FROM exchanges e{_sql_where(clauses)} ORDER BY e.time DESC, e.id DESC LIMIT ?"
    per_file = [
        [ExchangeRow(row[0], source, *row[1:]) for row in conn.execute(sql, [*params, limit])]
        for source, conn in enumerate(conns)
    ]
    merged = heapq.merge(*per_file, key=lambda r: (r.time, r.id), reverse=True)
    return list(merged)[:limit]


def _headers(text: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in orjson.loads(text)) if text else ()


def _bodies(conn: sqlite3.Connection, exchange_id: int) -> dict[str, StoredBody]:
    sql = "SELECT which, data, length, truncated FROM bodies WHERE exchange_id = ?"
    return {
        which: StoredBody(data=zlib.decompress(data), length=length, truncated=bool(truncated))
        for which, data, length, truncated in conn.execute(sql, (exchange_id,))
    }


def get_exchange(conns: Conns, exchange_id: int, source: int) -> ExchangeDetail | None:
    if not 0 <= source < len(conns):
        return None
    conn = conns[source]
    row = conn.execute(
        "SELECT time, route_id, mode, pair, method, template, path, query, request_id, served_by, outcome, reason,"
        " legacy_status, legacy_latency_us / 1000.0, legacy_size, new_status, new_latency_us / 1000.0, new_size,"
        " compare_ms, request_headers, legacy_headers, new_headers, note, replay_of FROM exchanges WHERE id = ?",
        (exchange_id,),
    ).fetchone()
    if row is None:
        return None
    bodies = _bodies(conn, exchange_id)
    differences = tuple(
        Difference(path=path, group=grp, kind=cast(DiffKind, kind), legacy=legacy, new=new)
        for path, grp, kind, legacy, new in conn.execute(
            "SELECT path, grp, kind, legacy_value, new_value FROM differences WHERE exchange_id = ? ORDER BY id",
            (exchange_id,),
        )
    )
    record = ExchangeRecord(
        time=row[0],
        route_id=row[1],
        mode=row[2],
        pair=cast(Pair, row[3]),
        method=row[4],
        template=row[5],
        path=row[6],
        query=row[7],
        request_id=row[8],
        served_by=row[9],
        outcome=cast(Outcome, row[10]),
        reason=row[11],
        legacy_status=row[12],
        legacy_latency_ms=row[13],
        legacy_size=row[14],
        new_status=row[15],
        new_latency_ms=row[16],
        new_size=row[17],
        compare_ms=row[18],
        request_headers=_headers(row[19]),
        legacy_headers=_headers(row[20]),
        new_headers=_headers(row[21]),
        request_body=bodies.get("request"),
        legacy_body=bodies.get("legacy"),
        new_body=bodies.get("new"),
        differences=differences,
        note=row[22],
        replay_of=row[23],
    )
    return ExchangeDetail(id=exchange_id, source=source, record=record)


def exchanges_for_replay(
    conns: Conns, route_id: str | None, outcome: str | None, since: float | None, limit: int
) -> list[ReplayItem]:
    """Newest first; candidate pairs only (never noise pairs nor earlier replays), and only requests that can be
    sent again exactly: a whole stored body, or a bodyless method."""
    methods = ", ".join("?" * len(BODYLESS_METHODS))
    clauses = [
        "e.pair = 'candidate'",
        f"(b.data IS NOT NULL AND b.truncated = 0 OR b.data IS NULL AND e.method IN ({methods}))",
    ]
    params: list[Any] = list(BODYLESS_METHODS)
    _where(clauses, params, "e.route_id", route_id)
    _where(clauses, params, "e.outcome", outcome)
    if since is not None:
        clauses.append("e.time >= ?")
        params.append(since)
    sql = (
        "SELECT e.id, e.time, e.route_id, e.method, e.path, e.query, e.request_headers, b.data FROM exchanges e"
        " LEFT JOIN bodies b ON b.exchange_id = e.id AND b.which = 'request'"
        f"{_sql_where(clauses)} ORDER BY e.time DESC, e.id DESC LIMIT ?"
    )
    per_file = [
        [
            ReplayItem(
                exchange_id=eid,
                source=source,
                time=t,
                route_id=rid,
                method=method,
                path=path,
                query=query,
                headers=_headers(headers),
                body=zlib.decompress(data) if data is not None else None,
            )
            for eid, t, rid, method, path, query, headers, data in conn.execute(sql, [*params, limit])
        ]
        for source, conn in enumerate(conns)
    ]
    return list(heapq.merge(*per_file, key=lambda r: (r.time, r.exchange_id), reverse=True))[:limit]


def replay_pairs(conns: Conns, since: float | None, route_id: str | None) -> list[ReplayPair]:
    """The window's replays with their originals' outcomes and differing groups, oldest first; of several replays
    of one exchange only the newest counts (it says how the new side answers now)."""
    clauses, params = ["r.pair = 'replay'"], list[Any]()
    _where(clauses, params, "r.route_id", route_id)
    if since is not None:
        clauses.append("r.time >= ?")
        params.append(since)
    sql = (
        "SELECT r.id, r.route_id, r.time, r.outcome, o.id, o.outcome FROM exchanges r"
        f" LEFT JOIN exchanges o ON o.id = r.replay_of AND o.pair = 'candidate'{_sql_where(clauses)}"
        " ORDER BY r.time DESC, r.id DESC"
    )
    found: list[ReplayPair] = []
    for conn in conns:
        rows, seen = [], set()
        for rid, route, t, after, origin, before in conn.execute(sql, params):
            if origin is not None and origin in seen:
                continue
            seen.add(origin)
            rows.append((rid, route, t, after, origin, before))
        groups = _groups(conn, [r[0] for r in rows] + [r[4] for r in rows if r[4] is not None])
        found.extend(
            ReplayPair(
                route_id=route,
                exchange_id=rid,
                origin_id=origin,
                time=t,
                before=cast(Outcome | None, before),
                before_groups=groups.get(origin, frozenset()) if origin is not None else frozenset(),
                after=cast(Outcome, after),
                after_groups=groups.get(rid, frozenset()),
            )
            for rid, route, t, after, origin, before in rows
        )
    return sorted(found, key=lambda p: (p.time, p.exchange_id))


def _groups(conn: sqlite3.Connection, exchange_ids: Sequence[int]) -> dict[int, frozenset[str]]:
    """exchange id -> the field groups of its stored differences."""
    out: dict[int, set[str]] = {}
    for start in range(0, len(exchange_ids), 500):
        chunk = exchange_ids[start : start + 500]
        sql = f"SELECT DISTINCT exchange_id, grp FROM differences WHERE exchange_id IN ({', '.join('?' * len(chunk))})"
        for eid, grp in conn.execute(sql, chunk):
            out.setdefault(eid, set()).add(grp)
    return {eid: frozenset(groups) for eid, groups in out.items()}


_FLIP_COLUMNS = (
    "time, user, route_id, from_mode, to_mode, from_weight, to_weight, reason, forced, gate, action, before_text, "
    "after_text, reverts"
)


def flips(conns: Conns, route_id: str | None) -> list[FlipRecord]:
    """Every recorded flip (of one route, or all), oldest first, each with its store id."""
    found: list[tuple[float, int, FlipRecord]] = []
    clauses: list[str] = []
    params: list[Any] = []
    _where(clauses, params, "route_id", route_id)
    for conn in conns:
        sql = f"SELECT id, {_FLIP_COLUMNS} FROM flips{_sql_where(clauses)}"
        for row in conn.execute(sql, params):
            fid, t, user, rid, from_mode, to_mode, from_w, to_w, reason, forced, gate, action, *texts = row
            before_text, after_text, reverts = texts
            record = FlipRecord(
                t, user, rid, from_mode, to_mode, from_w, to_w, reason, bool(forced), gate, action,
                before_text=before_text, after_text=after_text, reverts=reverts, id=fid,
            )  # fmt: skip
            found.append((t, fid, record))
    return [record for _, _, record in sorted(found, key=lambda item: (item[0], item[1]))]
