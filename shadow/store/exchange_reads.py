"""Stored exchanges read back: the newest exchanges matching filters (`list_exchanges`), one in full
(`get_exchange`), compared pair bodies (`pair_bodies`, for `strangler contract`), the requests that can be sent again
(`exchanges_for_replay`) and replays with their originals (`replay_pairs`), each merged over every open file.
"""

from __future__ import annotations

import heapq
import sqlite3
import zlib
from collections.abc import Sequence
from typing import Any, cast

import orjson

from shadow.store.read_sql import Conns, sql_where, where
from shadow.store.types import (
    ExchangeDetail,
    ExchangeRow,
    ReplayItem,
    ReplayPair,
    StoredPairBody,
)
from shadow.values import Difference, DiffKind, ExchangeRecord, Outcome, Pair, StoredBody

# Methods whose requests carry no body, so they can be replayed without a stored request body.
BODYLESS_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE", "DELETE")


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
            f" WHERE e.id IN (SELECT e.id FROM exchanges e{sql_where(clauses)}"
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
    where(clauses, params, "e.route_id", route_id)
    where(clauses, params, "e.outcome", outcome)
    where(clauses, params, "e.pair", pair)
    if since is not None:
        clauses.append("e.time >= ?")
        params.append(since)
    if field_group is not None:
        clauses.append("EXISTS (SELECT 1 FROM differences d WHERE d.exchange_id = e.id AND d.grp = ?)")
        params.append(field_group)
    sql = f"SELECT {_ROW_COLUMNS} FROM exchanges e{sql_where(clauses)} ORDER BY e.time DESC, e.id DESC LIMIT ?"
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
    where(clauses, params, "e.route_id", route_id)
    where(clauses, params, "e.outcome", outcome)
    if since is not None:
        clauses.append("e.time >= ?")
        params.append(since)
    sql = (
        "SELECT e.id, e.time, e.route_id, e.method, e.path, e.query, e.request_headers, b.data FROM exchanges e"
        " LEFT JOIN bodies b ON b.exchange_id = e.id AND b.which = 'request'"
        f"{sql_where(clauses)} ORDER BY e.time DESC, e.id DESC LIMIT ?"
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
    where(clauses, params, "r.route_id", route_id)
    if since is not None:
        clauses.append("r.time >= ?")
        params.append(since)
    sql = (
        "SELECT r.id, r.route_id, r.time, r.outcome, o.id, o.outcome FROM exchanges r"
        f" LEFT JOIN exchanges o ON o.id = r.replay_of AND o.pair = 'candidate'{sql_where(clauses)}"
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
