"""Exchange records turned into store rows, and the multi-row INSERTs that write them (plain `sqlite3`).

Kept apart from `shadow.store.database` (which owns the file, the schema and the transactions) so records can be
prepared in any thread without touching a connection, and so the insert path stays one small, pure-SQL module.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import orjson

from shadow.values import ExchangeRecord, TrafficCount, field_diffs, latency_bucket

_Key = tuple[object, ...]
# (position of the exchange, route_id, time, pair, path, grp, kind, legacy_value, new_value)
_DiffRow = tuple[int, str, float, str, str, str, str, str | None, str | None]


@dataclass(slots=True)
class PreparedBatch:
    """Records turned into rows, ready to insert: built by whoever has the records (`prepare_records`), so the
    writer thread, which must win the GIL back from the event loop for every bit of Python it runs, only binds and
    steps. Exchange rows lack their id (assigned under the write lock); bodies and differences point at their
    exchange by position. The exchange rows come flattened (`_EXCHANGE_FIELDS` and the header columns, row after
    row), so the writer hands slices of one list to SQLite."""

    exchange_values: list[object] = field(default_factory=list)
    count: int = 0  # exchange rows in exchange_values
    bodies: list[tuple[int, str, bytes, int, int]] = field(default_factory=list)
    differences: list[_DiffRow] = field(default_factory=list)
    # Rollup increments, summed per key: (hour, route, pair, outcome, reason), (..., side, bucket), (..., grp, kind).
    outcomes: dict[_Key, int] = field(default_factory=dict)
    latencies: dict[_Key, int] = field(default_factory=dict)
    fields: dict[_Key, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.count

    def extend(self, other: PreparedBatch) -> None:
        """Append another batch (positions shift by this batch's length; rollups add up)."""
        offset = self.count
        self.exchange_values.extend(other.exchange_values)
        self.count += other.count
        self.bodies.extend((i + offset, w, data, n, cut) for i, w, data, n, cut in other.bodies)
        self.differences.extend(
            (i + offset, route, t, pair, path, grp, kind, a, b)
            for i, route, t, pair, path, grp, kind, a, b in other.differences
        )
        for mine, theirs in (
            (self.outcomes, other.outcomes),
            (self.latencies, other.latencies),
            (self.fields, other.fields),
        ):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n


# zlib level of stored bodies. The shadow worker compresses two or three bodies per mismatching pair; level 1 takes
# about 70% of the default level's time and, measured on a 1.4 KB JSON order, comes within 3% of its size.
BODY_LEVEL = 1
_EMPTY_BODY = zlib.compress(b"", BODY_LEVEL)  # most requests have no body: compressed once


def prepare_records(records: Sequence[ExchangeRecord]) -> PreparedBatch:
    """The rows and rollup increments of some records (pure; any thread)."""
    batch = PreparedBatch()
    values, bodies, differences = batch.exchange_values, batch.bodies, batch.differences
    outcomes, latencies, fields = batch.outcomes, batch.latencies, batch.fields
    dumps = orjson.dumps
    for i, r in enumerate(records):
        values.extend(
            (
                r.time, r.route_id, r.mode, r.pair, r.method, r.template, r.path, r.query, r.request_id,
                r.served_by, r.outcome, r.reason, r.legacy_status, r.legacy_latency_ms, r.legacy_size,
                r.new_status, r.new_latency_ms, r.new_size, r.compare_ms,
                dumps(r.request_headers).decode() if r.request_headers else None,
                dumps(r.legacy_headers).decode() if r.legacy_headers else None,
                dumps(r.new_headers).decode() if r.new_headers else None,
                r.note,
                latency_us(r.legacy_latency_ms),
                latency_us(r.new_latency_ms),
                r.replay_of,
            )
        )  # fmt: skip
        for which, body in (("request", r.request_body), ("legacy", r.legacy_body), ("new", r.new_body)):
            if body is not None:
                data = zlib.compress(body.data, BODY_LEVEL) if body.data else _EMPTY_BODY
                bodies.append((i, which, data, body.length, int(body.truncated)))
        hour = int(r.time // 3600) * 3600
        key: _Key = (hour, r.route_id, r.pair, r.outcome, r.reason or "")
        outcomes[key] = outcomes.get(key, 0) + 1
        if r.legacy_latency_ms is not None:
            key = (hour, r.route_id, r.pair, "legacy", latency_bucket(r.legacy_latency_ms))
            latencies[key] = latencies.get(key, 0) + 1
        if r.new_latency_ms is not None:
            key = (hour, r.route_id, r.pair, "new", latency_bucket(r.new_latency_ms))
            latencies[key] = latencies.get(key, 0) + 1
        batch.count += 1
        for d in r.differences:
            differences.append((i, r.route_id, r.time, r.pair, d.path, d.group, d.kind, d.legacy, d.new))
        # Every differing group of the pair, once per exchange: from the exact list, never the capped rows.
        for f in r.fields or field_diffs(r.differences):
            key = (hour, r.route_id, r.pair, f.group, f.kind)
            fields[key] = fields.get(key, 0) + 1
    return batch


def latency_us(ms: float | None) -> int | None:
    """A duration in ms (a float from the monotonic clock) as the integer microseconds stored."""
    return None if ms is None else round(ms * 1000)


# Columns copied as they are from ExchangeRecord; the three header columns follow as JSON, then the note, the
# latencies in µs and the replayed exchange's id.
_EXCHANGE_FIELDS = (
    "time", "route_id", "mode", "pair", "method", "template", "path", "query", "request_id", "served_by", "outcome",
    "reason", "legacy_status", "legacy_latency_ms", "legacy_size", "new_status", "new_latency_ms", "new_size",
    "compare_ms",
)  # fmt: skip
_EXCHANGE_COLUMNS = (
    "id", *_EXCHANGE_FIELDS, "request_headers", "legacy_headers", "new_headers", "note", "legacy_latency_us",
    "new_latency_us", "replay_of",
)  # fmt: skip
_ROW_WIDTH = len(_EXCHANGE_COLUMNS) - 1  # a flattened row in PreparedBatch.exchange_values (no id)
_REQUEST_ID_AT = _EXCHANGE_FIELDS.index("request_id")
_OUTCOME_AT = _EXCHANGE_FIELDS.index("outcome")  # the reason follows it
_PAIR_AT = _EXCHANGE_FIELDS.index("pair")


# A row the writer is done with: (request id, route id, pair, outcome, reason or "", fate), the fate "stored" or the
# reason it never will be. A plain tuple: one per written row, built in the writer thread (a NamedTuple's __new__
# is a Python call per row).
SettledRow = tuple[str, str, str, str, str, str]


def settled_rows(batch: PreparedBatch, fate: str) -> list[SettledRow]:
    """The `SettledRow` of each exchange row in a batch, in order, all with `fate`."""
    values, width = batch.exchange_values, _ROW_WIDTH
    return [
        (
            values[at + _REQUEST_ID_AT],  # type: ignore[misc]
            values[at + 1],
            values[at + _PAIR_AT],
            values[at + _OUTCOME_AT],
            values[at + _OUTCOME_AT + 1] or "",
            fate,
        )
        for at in range(0, batch.count * width, width)
    ]


def batch_bytes(batch: PreparedBatch) -> int:
    """About how much memory a batch holds: its compressed bodies and ~1 KiB per row (headers, values)."""
    return sum(len(body[2]) for body in batch.bodies) + 1024 * batch.count


_ADD_COUNT = " ON CONFLICT DO UPDATE SET count = count + excluded.count"


@dataclass(frozen=True, slots=True)
class _Insert:
    """A multi-row INSERT: `{verb} INTO {table} ({columns}) VALUES (?, ...), (?, ...) ...{tail}`."""

    table: str
    columns: tuple[str, ...]
    tail: str = ""
    verb: str = "INSERT"


# Without the id: SQLite numbers rows one past the highest id, in order (see `insert_prepared`).
_EXCHANGES = _Insert("exchanges", _EXCHANGE_COLUMNS[1:])
_BODIES = _Insert("bodies", ("exchange_id", "which", "data", "length", "truncated"), verb="INSERT OR REPLACE")
_DIFFERENCES = _Insert(
    "differences", ("exchange_id", "route_id", "time", "pair", "path", "grp", "kind", "legacy_value", "new_value")
)
_ROUTE_ROLLUP = _Insert("route_rollup", ("hour", "route_id", "pair", "outcome", "reason", "count"), _ADD_COUNT)
_LATENCY_ROLLUP = _Insert("latency_rollup", ("hour", "route_id", "pair", "side", "bucket", "count"), _ADD_COUNT)
_FIELD_ROLLUP = _Insert("field_rollup", ("hour", "route_id", "pair", "grp", "kind", "count"), _ADD_COUNT)
_TRAFFIC = _Insert(
    "traffic",
    ("minute", "route_id", "mode", "served_by", "method", "path", "count", "errors", "latency_ms_sum"),
    " ON CONFLICT DO UPDATE SET count = count + excluded.count, errors = errors + excluded.errors,"
    " latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum",
)
_PATH_ROLLUP = _Insert(
    "path_rollup",
    ("hour", "route_id", "served_by", "method", "path", "status", "bucket", "count"),
    _ADD_COUNT,
)
# Rows per statement, largest first: few distinct SQL texts, so sqlite3's statement cache keeps them prepared.
_CHUNKS = (1024, 256, 64, 16, 4, 1)


@lru_cache(maxsize=64)
def _insert_sql(insert: _Insert, rows: int) -> str:
    one = "(" + ", ".join("?" * len(insert.columns)) + ")"
    values = ", ".join([one] * rows)
    return f"{insert.verb} INTO {insert.table} ({', '.join(insert.columns)}) VALUES {values}{insert.tail}"


def _insert_rows(conn: sqlite3.Connection, insert: _Insert, rows: Sequence[tuple[object, ...]]) -> None:
    _insert_values(conn, insert, [value for row in rows for value in row], len(rows))


def _insert_values(conn: sqlite3.Connection, insert: _Insert, values: list[object], rows: int) -> None:
    """Insert `rows` rows given flattened, up to a thousand per statement rather than one per step: the sqlite3
    module lets go of the GIL around every step, and each time the writer thread must win it back from the busy
    event loop."""
    width = len(insert.columns)
    limit = _variable_limit(conn)
    done = 0
    for size in _CHUNKS:
        if size * width > limit and size > 1:
            continue
        while rows - done >= size:
            conn.execute(_insert_sql(insert, size), values[done * width : (done + size) * width])
            done += size


def _variable_limit(conn: sqlite3.Connection) -> int:
    return conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def insert_prepared(conn: sqlite3.Connection, batch: PreparedBatch, traffic: Sequence[TrafficCount] = ()) -> None:
    """Insert a prepared batch and traffic counts; the caller holds the write transaction (`Store.write_prepared`)."""
    _insert_values(conn, _EXCHANGES, batch.exchange_values, batch.count)
    if batch.bodies or batch.differences:
        # SQLite gave the rows ids one past the highest, in order, under this transaction's write lock.
        first_id = conn.execute("SELECT MAX(id) FROM exchanges").fetchone()[0] - batch.count + 1
        _insert_rows(conn, _BODIES, [(first_id + i, w, data, n, cut) for i, w, data, n, cut in batch.bodies])
        _insert_rows(conn, _DIFFERENCES, [(first_id + i, *rest) for i, *rest in batch.differences])
    _insert_rows(conn, _ROUTE_ROLLUP, [(*k, n) for k, n in batch.outcomes.items()])
    _insert_rows(conn, _LATENCY_ROLLUP, [(*k, n) for k, n in batch.latencies.items()])
    _insert_rows(conn, _FIELD_ROLLUP, [(*k, n) for k, n in batch.fields.items()])
    _insert_rows(conn, _TRAFFIC, _merge_traffic(traffic))
    _insert_rows(conn, _PATH_ROLLUP, _merge_path_rollup(traffic))


def _merge_traffic(traffic: Sequence[TrafficCount]) -> list[tuple[object, ...]]:
    """Sum counts with the same key first: callers may send one TrafficCount per request."""
    merged: dict[tuple[int, str, str, str, str, str], list[float]] = {}
    for t in traffic:
        into = merged.setdefault((t.minute, t.route_id, t.mode, t.served_by, t.method, t.path), [0, 0, 0.0])
        into[0] += t.count
        into[1] += t.errors
        into[2] += t.latency_ms_sum
    return [(*k, int(v[0]), int(v[1]), v[2]) for k, v in merged.items()]


def _merge_path_rollup(traffic: Sequence[TrafficCount]) -> list[tuple[object, ...]]:
    """The hourly (route, side, method, path, status, latency bucket) counts of the traffic's histograms; requests
    a count has beyond its histogram go under status and bucket -1 (unknown), so the rollup sums to the traffic."""
    merged: dict[tuple[int, str, str, str, str, int, int], int] = {}
    for t in traffic:
        hour = t.minute // 3600 * 3600
        rest = t.count
        for status, bucket, n in t.histogram:
            key = (hour, t.route_id, t.served_by, t.method, t.path, status, bucket)
            merged[key] = merged.get(key, 0) + n
            rest -= n
        if rest > 0:
            key = (hour, t.route_id, t.served_by, t.method, t.path, -1, -1)
            merged[key] = merged.get(key, 0) + rest
    return [(*k, n) for k, n in merged.items()]
