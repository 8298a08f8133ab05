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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


def _headers_json(headers: tuple[tuple[str, str], ...]) -> str | None:
    return orjson.dumps(headers).decode() if headers else None


def _exchange_row(exchange_id: int, r: ExchangeRecord) -> tuple[object, ...]:
    fields = (getattr(r, name) for name in _EXCHANGE_FIELDS)
    headers = (_headers_json(r.request_headers), _headers_json(r.legacy_headers), _headers_json(r.new_headers))
    return (exchange_id, *fields, *headers)


# Columns copied as they are from ExchangeRecord; the three header columns follow as JSON.
_EXCHANGE_FIELDS = (
    "time", "route_id", "mode", "pair", "method", "template", "path", "query", "request_id", "served_by", "outcome",
    "reason", "legacy_status", "legacy_latency_ms", "legacy_size", "new_status", "new_latency_ms", "new_size",
    "compare_ms",
)  # fmt: skip
_EXCHANGE_COLUMNS = ("id", *_EXCHANGE_FIELDS, "request_headers", "legacy_headers", "new_headers")
_INSERT_EXCHANGE = (
    f"INSERT INTO exchanges ({', '.join(_EXCHANGE_COLUMNS)}) VALUES ({', '.join('?' * len(_EXCHANGE_COLUMNS))})"
)
_FLIP_FIELDS = (
    "time", "user", "route_id", "action", "from_mode", "to_mode", "from_weight", "to_weight", "reason", "forced",
    "gate",
)  # fmt: skip
_INSERT_FLIP = f"INSERT INTO flips ({', '.join(_FLIP_FIELDS)}) VALUES ({', '.join('?' * len(_FLIP_FIELDS))})"
_INSERT_BODY = "INSERT OR REPLACE INTO bodies (exchange_id, which, data, length, truncated) VALUES (?, ?, ?, ?, ?)"
_INSERT_DIFFERENCE = (
    "INSERT INTO differences (exchange_id, route_id, time, pair, path, grp, kind, legacy_value, new_value)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_ROUTE = (
    "INSERT INTO route_rollup (hour, route_id, pair, outcome, reason, count) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET count = count + excluded.count"
)
_UPSERT_LATENCY = (
    "INSERT INTO latency_rollup (hour, route_id, pair, side, bucket, count) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET count = count + excluded.count"
)
_UPSERT_FIELD = (
    "INSERT INTO field_rollup (hour, route_id, pair, grp, count) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET count = count + excluded.count"
)
_UPSERT_TRAFFIC = (
    "INSERT INTO traffic (minute, route_id, mode, served_by, method, path, count, errors, latency_ms_sum)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET count = count + excluded.count,"
    " errors = errors + excluded.errors, latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum"
)


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
        exchanges, bodies, differences = [], [], []
        outcomes: Counter[tuple[int, str, str, str, str]] = Counter()
        latencies: Counter[tuple[int, str, str, str, int]] = Counter()
        fields: Counter[tuple[int, str, str, str]] = Counter()
        with self._write() as conn:
            # Ids are assigned here, under the write lock, so bodies and differences can use executemany too.
            first_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM exchanges").fetchone()[0]
            for eid, r in enumerate(records, start=first_id):
                exchanges.append(_exchange_row(eid, r))
                for which, body in (("request", r.request_body), ("legacy", r.legacy_body), ("new", r.new_body)):
                    if body is not None:
                        bodies.append((eid, which, zlib.compress(body.data), body.length, int(body.truncated)))
                for d in r.differences:
                    differences.append((eid, r.route_id, r.time, r.pair, d.path, d.group, d.kind, d.legacy, d.new))
                hour = int(r.time // 3600) * 3600
                outcomes[(hour, r.route_id, r.pair, r.outcome, r.reason or "")] += 1
                if r.legacy_latency_ms is not None:
                    latencies[(hour, r.route_id, r.pair, "legacy", latency_bucket(r.legacy_latency_ms))] += 1
                if r.new_latency_ms is not None:
                    latencies[(hour, r.route_id, r.pair, "new", latency_bucket(r.new_latency_ms))] += 1
                for group in {d.group for d in r.differences}:  # once per exchange, however many fields in it
                    fields[(hour, r.route_id, r.pair, group)] += 1
            conn.executemany(_INSERT_EXCHANGE, exchanges)
            conn.executemany(_INSERT_BODY, bodies)
            conn.executemany(_INSERT_DIFFERENCE, differences)
            conn.executemany(_UPSERT_ROUTE, [(*k, n) for k, n in outcomes.items()])
            conn.executemany(_UPSERT_LATENCY, [(*k, n) for k, n in latencies.items()])
            conn.executemany(_UPSERT_FIELD, [(*k, n) for k, n in fields.items()])
            conn.executemany(_UPSERT_TRAFFIC, _merge_traffic(traffic))

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


_Item = ExchangeRecord | tuple[TrafficCount, ...]


class StoreWriter:
    """A thread that owns one `Store` and writes what the event loop hands it, in batches.

    `submit` and `count` never block: past `max_queue` items they drop and count (`dropped`). The thread flushes
    every `flush_interval` seconds or `batch_size` items, applies retention every `retention_interval` seconds,
    and on `close` writes everything still queued. A failed batch is logged, retried once, then counted in `lost`.
    Not a daemon thread, so queued records are written even when the program ends without calling `close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 100_000,
        flush_interval: float = 0.1,
        batch_size: int = 500,
        retention: Retention | None = None,
        retention_interval: float = 600.0,
        start: bool = True,
    ) -> None:
        self._store = Store.open(path)  # opened here so a bad path fails at start-up, not in the thread
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max_queue)
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
        if self._stopping.is_set():
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def count(self, traffic: TrafficCount | Sequence[TrafficCount]) -> None:
        """Queue request counts (one or many, as one queue item); summed per key when written."""
        item = (traffic,) if isinstance(traffic, TrafficCount) else tuple(traffic)
        if self._stopping.is_set():
            self.dropped_counts += len(item)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped_counts += len(item)

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, write everything queued, and wait up to `timeout` seconds for the thread."""
        self._stopping.set()
        if self._thread.ident is None:
            self._thread.start()  # never started: start it now so what was queued is written
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._store.close()

    def _run(self) -> None:
        next_retention = time.monotonic()
        while True:
            if not threading.main_thread().is_alive():
                # The program ended without close(): drain and exit, or interpreter shutdown would wait forever.
                self._stopping.set()
            stopping = self._stopping.is_set()
            batch = self._take_batch(wait=not stopping)
            if batch:
                self._flush(batch)
            elif stopping:
                break
            if self._retention is not None and time.monotonic() >= next_retention:
                next_retention = time.monotonic() + self._retention_interval
                self._apply_retention(self._retention)

    def _take_batch(self, *, wait: bool) -> list[_Item]:
        batch: list[_Item] = []
        deadline = time.monotonic() + self._flush_interval
        while len(batch) < self._batch_size:
            try:
                if wait:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                else:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
            if self._stopping.is_set():
                wait = False  # closing: take what is there without waiting out the interval
        return batch

    def _flush(self, batch: list[_Item]) -> None:
        records = [item for item in batch if isinstance(item, ExchangeRecord)]
        traffic = [t for item in batch if not isinstance(item, ExchangeRecord) for t in item]
        for attempt in (1, 2):
            try:
                self._store.write_batch(records, traffic)
            except Exception:  # the proxy must outlive any store failure
                log.exception("store write of %d records failed (attempt %d of 2)", len(records), attempt)
                continue
            self.written += len(records)
            return
        self.lost += len(records)

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
