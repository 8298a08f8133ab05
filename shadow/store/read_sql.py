"""SQL helpers shared by the store's read modules (`figures`, `traffic_reads`, `exchange_reads`, `flip_reads`): the
connections they read (one per open file), WHERE clause building, and splitting a `since` into rollup hours and a
raw partial hour."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

Conns = Sequence[sqlite3.Connection]


def window(since: float | None) -> tuple[int | None, tuple[float, float] | None]:
    """Split `since` into the first whole hour to read from rollups and the partial hour to read raw."""
    if since is None:
        return None, None
    hour = int(since // 3600) * 3600
    if hour == since:
        return hour, None
    return hour + 3600, (since, float(hour + 3600))


def where(clauses: list[str], params: list[Any], column: str, value: object) -> None:
    if value is not None:
        clauses.append(f"{column} = ?")
        params.append(value)


def sql_where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def rollup_filter(first_hour: int | None, route_id: str | None, pair: str | None = None) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (and their parameters) of a rollup read: the pair kind, one route, from an hour on."""
    clauses: list[str] = []
    params: list[Any] = []
    where(clauses, params, "pair", pair)
    where(clauses, params, "route_id", route_id)
    if first_hour is not None:
        clauses.append("hour >= ?")
        params.append(first_hour)
    return clauses, params
