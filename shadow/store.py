"""The SQLite store of exchanges, differences, rollups and flips, and its batched writer thread; the only sqlite-utils
import.

One file in WAL mode is shared by every proxy worker on a machine (one writer thread per process, `BEGIN IMMEDIATE`
with a busy timeout); replicas on other machines write their own file, and `Store.open_readers` reads several files
as one. Table documentation: docs/store.md.

Errors: `StoreError` (a file that cannot be created, opened or migrated) is the only exception raised on purpose;
`sqlite3.Error` from a write is the caller's to handle (`StoreWriter` logs, retries once, then counts the batch lost).
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import TracebackType

import orjson
import sqlite_utils

from proxy.config import Retention
from shadow import store_queries as queries
from shadow.model import ExchangeRecord, FlipRecord, Pair, TrafficCount
from shadow.store_types import (
    ExchangeDetail,
    ExchangeRow,
    FieldStat,
    Percentiles,
    ReplayItem,
    RouteStats,
    TrafficRow,
    UnroutedPath,
    latency_bucket,
)

log = logging.getLogger("strangler.store")

BUSY_TIMEOUT_MS = 5000
DELETE_CHUNK = 2000  # exchanges deleted per retention transaction, so live writers never wait long


class StoreError(Exception):
    """A store file could not be created, opened or migrated; the message names the file."""


def _migration_1(db: sqlite_utils.Database) -> None:
    """The first schema; docs/store.md describes every table and column."""
    exchanges = db.table("exchanges")
    exchanges.create(
        {
            "id": int, "time": float, "route_id": str, "mode": str, "pair": str, "method": str, "template": str,
            "path": str, "query": str, "request_id": str, "served_by": str, "outcome": str, "reason": str,
            "legacy_status": int, "legacy_latency_ms": float, "legacy_size": int,
            "new_status": int, "new_latency_ms": float, "new_size": int, "compare_ms": float,
            "request_headers": str, "legacy_headers": str, "new_headers": str,
        },
        pk="id",
        not_null=("time", "route_id", "mode", "pair", "method", "path", "outcome"),
    )  # fmt: skip
    for columns in (["route_id", "time"], ["outcome", "time"], ["time"]):
        exchanges.create_index(columns)
    db.table("bodies").create(
        {"exchange_id": int, "which": str, "data": bytes, "length": int, "truncated": int},
        pk=("exchange_id", "which"),
        not_null=("data", "length", "truncated"),
    )
    differences = db.table("differences")
    differences.create(
        {
            "id": int, "exchange_id": int, "route_id": str, "time": float, "pair": str, "path": str, "grp": str,
            "kind": str, "legacy_value": str, "new_value": str,
        },
        pk="id",
        not_null=("exchange_id", "route_id", "time", "pair", "path", "grp", "kind"),
    )  # fmt: skip
    differences.create_index(["route_id", "grp"])
    differences.create_index(["exchange_id"])
    traffic_key = {"minute": int, "route_id": str, "mode": str, "served_by": str, "method": str, "path": str}
    db.table("traffic").create(
        {**traffic_key, "count": int, "errors": int, "latency_ms_sum": float}, pk=tuple(traffic_key)
    )
    rollups: dict[str, dict[str, type]] = {
        "route_rollup": {"outcome": str, "reason": str},
        "latency_rollup": {"side": str, "bucket": int},
        "field_rollup": {"grp": str},
    }
    for name, extra_key in rollups.items():
        key = {"hour": int, "route_id": str, "pair": str, **extra_key}
        db.table(name).create({**key, "count": int}, pk=tuple(key))
    db.table("flips").create(
        {
            "id": int, "time": float, "user": str, "route_id": str, "action": str, "from_mode": str, "to_mode": str,
            "from_weight": float, "to_weight": float, "reason": str, "forced": int, "gate": str,
        },
        pk="id",
        not_null=("time", "route_id", "action", "from_mode", "to_mode", "forced"),
    )  # fmt: skip
    db.table("flips").create_index(["route_id", "time"])


# Applied in order at open, all pending ones in one transaction; never edit a released step, append a new one.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_migration_1,)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(conn: sqlite3.Connection) -> int:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _migrate(db: sqlite_utils.Database, path: Path) -> None:
    conn = db.conn
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    # IMMEDIATE: two processes opening a new file at once queue here; the second then finds nothing left to do.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path}: schema version {version} is newer than this strangler ({SCHEMA_VERSION})")
        for step in MIGRATIONS[version:]:
            step(db)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _connect(path: Path, *, create: bool) -> sqlite_utils.Database:
    created = False
    if not path.exists():
        if not create:
            raise StoreError(f"{path}: no such store file")
        try:
            # Created by us with 0600 before SQLite sees it: bodies and headers may hold personal data.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError as e:
            raise StoreError(f"{path}: cannot create the store file: {e.strerror}") from e
        created = True
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        db.enable_wal()
        conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a power cut loses at most the last commits
        _migrate(db, path)
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"{path}: {e}") from e
    except BaseException:
        conn.close()
        raise
    mode = 0o600 if created else path.stat().st_mode & 0o666
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if extra.exists():
            os.chmod(extra, mode)
    return db


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
    # Rollup increments, summed per key: (hour, route, pair, outcome, reason), (..., side, bucket), (..., grp).
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
            )
        )  # fmt: skip
        for which, body in (("request", r.request_body), ("legacy", r.legacy_body), ("new", r.new_body)):
            if body is not None:
                bodies.append((i, which, zlib.compress(body.data), body.length, int(body.truncated)))
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
        if r.differences:
            for d in r.differences:
                differences.append((i, r.route_id, r.time, r.pair, d.path, d.group, d.kind, d.legacy, d.new))
            for group in {d.group for d in r.differences}:  # once per exchange, however many fields in it
                key = (hour, r.route_id, r.pair, group)
                fields[key] = fields.get(key, 0) + 1
    return batch


# Columns copied as they are from ExchangeRecord; the three header columns follow as JSON.
_EXCHANGE_FIELDS = (
    "time", "route_id", "mode", "pair", "method", "template", "path", "query", "request_id", "served_by", "outcome",
    "reason", "legacy_status", "legacy_latency_ms", "legacy_size", "new_status", "new_latency_ms", "new_size",
    "compare_ms",
)  # fmt: skip
_EXCHANGE_COLUMNS = ("id", *_EXCHANGE_FIELDS, "request_headers", "legacy_headers", "new_headers")
_FLIP_FIELDS = (
    "time", "user", "route_id", "action", "from_mode", "to_mode", "from_weight", "to_weight", "reason", "forced",
    "gate",
)  # fmt: skip
_INSERT_FLIP = f"INSERT INTO flips ({', '.join(_FLIP_FIELDS)}) VALUES ({', '.join('?' * len(_FLIP_FIELDS))})"
_ADD_COUNT = " ON CONFLICT DO UPDATE SET count = count + excluded.count"


@dataclass(frozen=True, slots=True)
class _Insert:
    """A multi-row INSERT: `{verb} INTO {table} ({columns}) VALUES (?, ...), (?, ...) ...{tail}`."""

    table: str
    columns: tuple[str, ...]
    tail: str = ""
    verb: str = "INSERT"


# Without the id: SQLite numbers rows one past the highest id, in order (see Store.write_prepared).
_EXCHANGES = _Insert("exchanges", _EXCHANGE_COLUMNS[1:])
_BODIES = _Insert("bodies", ("exchange_id", "which", "data", "length", "truncated"), verb="INSERT OR REPLACE")
_DIFFERENCES = _Insert(
    "differences", ("exchange_id", "route_id", "time", "pair", "path", "grp", "kind", "legacy_value", "new_value")
)
_ROUTE_ROLLUP = _Insert("route_rollup", ("hour", "route_id", "pair", "outcome", "reason", "count"), _ADD_COUNT)
_LATENCY_ROLLUP = _Insert("latency_rollup", ("hour", "route_id", "pair", "side", "bucket", "count"), _ADD_COUNT)
_FIELD_ROLLUP = _Insert("field_rollup", ("hour", "route_id", "pair", "grp", "count"), _ADD_COUNT)
_TRAFFIC = _Insert(
    "traffic",
    ("minute", "route_id", "mode", "served_by", "method", "path", "count", "errors", "latency_ms_sum"),
    " ON CONFLICT DO UPDATE SET count = count + excluded.count, errors = errors + excluded.errors,"
    " latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum",
)
# Rows per statement, largest first: few distinct SQL texts, so sqlite3's statement cache keeps them prepared.
_CHUNKS = (1024, 256, 64, 16, 4, 1)
_MAX_VARIABLES = 999  # SQLite's historical minimum for SQLITE_MAX_VARIABLE_NUMBER; raised from the connection


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
    try:
        return conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except AttributeError:  # pragma: no cover - Python < 3.11
        return _MAX_VARIABLES


class Store:
    """An open store: one file to write (`open`) or several to read as one (`open_readers`)."""

    def __init__(self, dbs: Sequence[sqlite_utils.Database], *, readonly: bool) -> None:
        self._dbs = list(dbs)
        self._conns = [db.conn for db in self._dbs]
        self._readonly = readonly

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Store:
        """Open (creating it with mode 0600 unless `create` is false) and migrate one store file for writing."""
        return cls([_connect(Path(path), create=create)], readonly=False)

    @classmethod
    def open_readers(cls, paths: Sequence[str | os.PathLike[str]]) -> Store:
        """Open existing files (e.g. one per replica) to read together; queries merge their results."""
        if not paths:
            raise StoreError("no store files given")
        dbs: list[sqlite_utils.Database] = []
        try:
            for path in paths:
                dbs.append(_connect(Path(path), create=False))
        except BaseException:
            for db in dbs:
                db.close()
            raise
        return cls(dbs, readonly=True)

    def close(self) -> None:
        for db in self._dbs:
            db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._readonly:
            raise StoreError("this store was opened for reading several files; open one file to write")
        conn = self._conns[0]
        # IMMEDIATE takes the write lock up front, so busy_timeout applies; a deferred BEGIN that later writes
        # can fail at once with "database is locked" when another process wrote in between.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def write_batch(self, records: Sequence[ExchangeRecord], traffic: Sequence[TrafficCount] = ()) -> None:
        """Write exchanges (with bodies and differences), traffic counts and their rollups in one transaction."""
        self.write_prepared(prepare_records(records), traffic)

    def write_prepared(self, batch: PreparedBatch, traffic: Sequence[TrafficCount] = ()) -> None:
        """`write_batch` for records already turned into rows (`prepare_records`)."""
        with self._write() as conn:
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

    def enforce_retention(self, max_age: float, max_exchanges: int, now: float) -> int:
        """Delete exchanges older than `max_age` and all but the newest `max_exchanges`; returns how many.

        Bodies and differences go with their exchange; rollups and traffic older than `max_age` go too. Flips are
        an audit trail and are kept. Deletes run in chunks, each its own short transaction.
        """
        cutoff = now - max_age
        deleted = self._delete_chunks("SELECT id FROM exchanges WHERE time < ? LIMIT ?", (cutoff,), None)
        excess = self._conns[0].execute("SELECT COUNT(*) FROM exchanges").fetchone()[0] - max_exchanges
        if excess > 0:
            # Ids grow in commit order (assigned under the write lock), so the lowest ids are the oldest writes.
            deleted += self._delete_chunks("SELECT id FROM exchanges ORDER BY id LIMIT ?", (), excess)
        with self._write() as conn:
            for table in ("route_rollup", "latency_rollup", "field_rollup"):
                conn.execute(f"DELETE FROM {table} WHERE hour + 3600 <= ?", (cutoff,))
            conn.execute("DELETE FROM traffic WHERE minute + 60 <= ?", (cutoff,))
        return deleted

    def _delete_chunks(self, select: str, params: tuple[float, ...], at_most: int | None) -> int:
        deleted = 0
        while at_most is None or deleted < at_most:
            chunk = DELETE_CHUNK if at_most is None else min(DELETE_CHUNK, at_most - deleted)
            with self._write() as conn:
                ids = [row[0] for row in conn.execute(select, (*params, chunk))]
                if not ids:
                    break
                marks = ", ".join("?" * len(ids))
                conn.execute(f"DELETE FROM bodies WHERE exchange_id IN ({marks})", ids)
                conn.execute(f"DELETE FROM differences WHERE exchange_id IN ({marks})", ids)
                conn.execute(f"DELETE FROM exchanges WHERE id IN ({marks})", ids)
            deleted += len(ids)
        return deleted

    def record_flip(self, flip: FlipRecord) -> int:
        """Append a flip to the audit trail; returns its id."""
        with self._write() as conn:
            cursor = conn.execute(_INSERT_FLIP, tuple(getattr(flip, name) for name in _FLIP_FIELDS))
            return int(cursor.lastrowid or 0)

    def flips(self, route_id: str | None = None) -> list[FlipRecord]:
        """Recorded flips, oldest first."""
        return queries.flips(self._conns, route_id)

    def last_flip(self, route_id: str) -> FlipRecord | None:
        found = queries.flips(self._conns, route_id)
        return found[-1] if found else None

    def route_stats(self, since: float | None = None, route_id: str | None = None) -> list[RouteStats]:
        """Outcome counts per route (sorted by route id) from the rollups."""
        return queries.route_stats(self._conns, since, route_id)

    def latency_percentiles(
        self, since: float | None = None, route_id: str | None = None, pair: Pair = "candidate"
    ) -> dict[tuple[str, str], Percentiles]:
        """(route_id, side) -> (p50, p95, p99) in ms from the histogram rollup; side is "legacy" or "new"."""
        return queries.latency_percentiles(self._conns, since, route_id, pair)

    def field_stats(
        self, since: float | None = None, route_id: str | None = None, pair: Pair = "candidate"
    ) -> list[FieldStat]:
        """Exchanges that differed per (route, field group), busiest first within a route."""
        return queries.field_stats(self._conns, since, route_id, pair)

    def field_samples(self, route_id: str, group: str, limit: int = 50) -> list[tuple[str | None, str | None]]:
        return queries.field_samples(self._conns, route_id, group, limit)

    def traffic_by_mode(self, since: float | None = None) -> list[TrafficRow]:
        return queries.traffic_by_mode(self._conns, since)

    def unrouted(self, since: float | None = None, limit: int = 20) -> list[UnroutedPath]:
        """Paths no route matched, busiest first."""
        return queries.unrouted(self._conns, since, limit)

    def list_exchanges(
        self,
        route_id: str | None = None,
        outcome: str | None = None,
        field_group: str | None = None,
        since: float | None = None,
        limit: int = 50,
        pair: Pair | None = None,
    ) -> list[ExchangeRow]:
        return queries.list_exchanges(self._conns, route_id, outcome, field_group, since, limit, pair)

    def get_exchange(self, exchange_id: int, source: int = 0) -> ExchangeDetail | None:
        """One exchange in full; `source` is the file index from `ExchangeRow.source` when reading several files."""
        return queries.get_exchange(self._conns, exchange_id, source)

    def exchanges_for_replay(
        self, route_id: str | None = None, outcome: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[ReplayItem]:
        return queries.exchanges_for_replay(self._conns, route_id, outcome, since, limit)


def _merge_traffic(traffic: Sequence[TrafficCount]) -> list[tuple[object, ...]]:
    """Sum counts with the same key first: callers may send one TrafficCount per request."""
    merged: dict[tuple[int, str, str, str, str, str], list[float]] = {}
    for t in traffic:
        into = merged.setdefault((t.minute, t.route_id, t.mode, t.served_by, t.method, t.path), [0, 0, 0.0])
        into[0] += t.count
        into[1] += t.errors
        into[2] += t.latency_ms_sum
    return [(*k, int(v[0]), int(v[1]), v[2]) for k, v in merged.items()]


_Item = PreparedBatch | tuple[TrafficCount, ...]


class StoreWriter:
    """A thread that owns one `Store` and writes what the event loop hands it, in batches.

    `submit`, `submit_many` and `count` never block: past `max_queue` records they drop and count (`dropped`).
    The thread wakes every `flush_interval` seconds and writes what is queued, `batch_size` records per
    transaction at most (few, large transactions: see `_run` and `_insert_rows`), applies retention every
    `retention_interval` seconds, and on `close` writes everything still queued. A failed batch is logged,
    retried once, then counted in `lost`. Not a daemon thread, so queued records are written even when the
    program ends without calling `close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 100_000,
        flush_interval: float = 0.25,
        batch_size: int = 2000,
        retention: Retention | None = None,
        retention_interval: float = 600.0,
        start: bool = True,
    ) -> None:
        self._store = Store.open(path)  # opened here so a bad path fails at start-up, not in the thread
        # Unbounded as a queue; bounded by `max_queue` records, counted on both sides (items may be batches).
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._max_queue = max_queue
        self._put_lock = threading.Lock()  # producers: the event loop and the shadow compare thread
        self._put = 0  # records queued (under _put_lock)
        self._taken = 0  # records taken by the writer thread (written by it only)
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._retention = retention
        self._retention_interval = retention_interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="strangler-store-writer")
        self.dropped = 0  # records refused because the queue was full (or the writer closed)
        self.dropped_counts = 0  # traffic counts refused likewise
        self.lost = 0  # records in batches that failed twice
        self.written = 0
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: ExchangeRecord) -> None:
        self.submit_many((record,))

    def submit_many(self, records: Sequence[ExchangeRecord]) -> None:
        """Queue several records as one item. They are turned into rows here, in the caller's thread, so the
        writer thread runs as little Python as possible (see `PreparedBatch`)."""
        if records:
            self._enqueue(prepare_records(records))

    def _enqueue(self, item: PreparedBatch) -> None:
        n = len(item)
        with self._put_lock:
            if self._stopping.is_set() or self._put - self._taken + n > self._max_queue:
                self.dropped += n
                return
            self._put += n
            self._queue.put(item)  # under the lock: close() cannot slip in between the check and the put

    def count(self, traffic: TrafficCount | Sequence[TrafficCount]) -> None:
        """Queue request counts (one or many, as one queue item); summed per key when written."""
        item = (traffic,) if isinstance(traffic, TrafficCount) else tuple(traffic)
        with self._put_lock:
            if self._stopping.is_set() or self.depth() >= self._max_queue:
                self.dropped_counts += len(item)
                return
            self._queue.put(item)

    def depth(self) -> int:
        """Records queued and not yet taken by the writer thread."""
        return self._put - self._taken

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, write everything queued, and wait up to `timeout` seconds for the thread."""
        with self._put_lock:  # no record is queued after the thread may have seen the last one
            self._stopping.set()
        if self._thread.ident is None:
            self._thread.start()  # never started: start it now so what was queued is written
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._store.close()

    def _run(self) -> None:
        """Every `flush_interval`, write whatever is queued. The thread sleeps in between rather than waking for
        each item: every wake-up must win the GIL back from the busy event loop, which costs both threads."""
        next_retention = time.monotonic()
        while True:
            if not threading.main_thread().is_alive():
                # The program ended without close(): drain and exit, or interpreter shutdown would wait forever.
                self._stopping.set()
            stopping = self._stopping.is_set()
            while True:
                batch, traffic = self._take_batch()
                if not batch and not traffic:
                    break
                self._flush(batch, traffic)
            if stopping:  # nothing is queued after close() set the flag, and the drain above came after it
                break
            if self._retention is not None and time.monotonic() >= next_retention:
                next_retention = time.monotonic() + self._retention_interval
                self._apply_retention(self._retention)
            self._stopping.wait(self._flush_interval)

    def _take_batch(self) -> tuple[PreparedBatch, list[TrafficCount]]:
        """What is queued, up to about `batch_size` records (a queued batch is never split), and its traffic."""
        batch: PreparedBatch | None = None
        traffic: list[TrafficCount] = []
        get = self._queue.get_nowait
        while batch is None or len(batch) < self._batch_size:
            try:
                item = get()
            except queue.Empty:
                break
            if isinstance(item, PreparedBatch):
                self._taken += len(item)
                if batch is None:
                    batch = item
                else:
                    batch.extend(item)
            else:
                traffic.extend(item)
        return batch if batch is not None else PreparedBatch(), traffic

    def _flush(self, batch: PreparedBatch, traffic: list[TrafficCount]) -> None:
        for attempt in (1, 2):
            try:
                self._store.write_prepared(batch, traffic)
            except Exception:  # the proxy must outlive any store failure
                log.exception("store write of %d records failed (attempt %d of 2)", len(batch), attempt)
                continue
            self.written += len(batch)
            return
        self.lost += len(batch)

    def _apply_retention(self, retention: Retention) -> None:
        try:
            deleted = self._store.enforce_retention(retention.max_age, retention.max_exchanges, time.time())
        except Exception:  # retention is retried on the next interval
            log.exception("store retention failed")
            return
        if deleted:
            log.info("store retention deleted %d exchanges", deleted)


def count_noise_only(
    store: Store, route_id: str, noise_groups: Sequence[str], since: float | None = None, pair: Pair = "candidate"
) -> int:
    """Mismatched exchanges of a route whose differences all lie in `noise_groups` (read-only; for reports).

    One indexed count per file: the route's mismatches in the window, each checked against its differences.
    """
    if not noise_groups:
        return 0
    marks = ", ".join("?" * len(noise_groups))
    sql = (
        "SELECT COUNT(*) FROM exchanges e WHERE e.route_id = ? AND e.pair = ? AND e.outcome = 'mismatch'"
        f"{' AND e.time >= ?' if since is not None else ''}"
        " AND EXISTS (SELECT 1 FROM differences d WHERE d.exchange_id = e.id)"
        f" AND NOT EXISTS (SELECT 1 FROM differences d WHERE d.exchange_id = e.id AND d.grp NOT IN ({marks}))"
    )
    params: list[object] = [route_id, pair, *([since] if since is not None else []), *noise_groups]
    return sum(int(conn.execute(sql, params).fetchone()[0]) for conn in store._conns)
