"""The SQLite store file: opening it (migrated to the current schema by `shadow.store.migrations`), and `Store`, which
writes batches in one transaction and reads rollups, exchanges and flips; with `shadow.store.migrations`, the only
sqlite-utils import.

One file in WAL mode is shared by every proxy worker on a machine (one writer thread per process, `BEGIN IMMEDIATE`
with a busy timeout); replicas on other machines write their own file, and `Store.open_readers` reads several files
as one. Rows are built and inserted by `shadow.store.rows`, queued and written by `shadow.store.writer.StoreWriter`,
and read by `shadow.store.figures`, `traffic_reads`, `exchange_reads` and `flip_reads`. Tables: docs/store.md.

Errors: `StoreError` (a file that cannot be created, opened or migrated) is the only exception raised on purpose;
`sqlite3.Error` from a write is the caller's to handle (`StoreWriter` logs, retries once, then counts the batch lost).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import cast

import sqlite_utils

from shadow.store import exchange_reads, figures, flip_reads, traffic_reads
from shadow.store.migrations import SchemaTooNewError, migrate
from shadow.store.rows import PreparedBatch, insert_prepared, prepare_records
from shadow.store.types import (
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
)
from shadow.values import ExchangeRecord, FlipRecord, Pair, TrafficCount

BUSY_TIMEOUT_MS = 5000
WAL_RETRY_PAUSE = 0.01  # seconds between attempts to switch a file another process is switching to WAL
DELETE_CHUNK = 2000  # exchanges deleted per retention transaction, so live writers never wait long


# sqlite3 binds int, float, str and bytearray directly but sends every other value, None and bytes included, through
# its adapter lookup first: a failed registry lookup and two failed attribute lookups, each raising and clearing an
# AttributeError (about 180 ns per value; an exchange row holds a dozen NULLs, and bodies are bytes). Registering
# the identity for both makes the lookup hit at once; what is bound is unchanged. Process-wide, as sqlite3's
# adapter registry is; neither type is one whose registration turns sqlite3's base-type fast path off.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))  # {}.get(None) is None: a C call
sqlite3.register_adapter(bytes, bytes)  # bytes(b) is b itself for exact bytes


class StoreError(Exception):
    """A store file could not be created, opened or migrated; the message names the file."""


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
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not a store file (hint: give a file path, e.g. {path}/strangler.db)")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open the store file: {e}") from e
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        _enable_wal(db)
        conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a power cut loses at most the last commits
        # A multi-row INSERT's statement journal (what a failing row rolls back) spills to a temporary file past
        # 64 KiB: the writer's batches did, creating and deleting a file many times a second. Kept in memory.
        conn.execute("PRAGMA temp_store = MEMORY")
        migrate(db)
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"{path}: {e}") from e
    except SchemaTooNewError as e:
        conn.close()
        raise StoreError(f"{path}: {e}") from None
    except BaseException:
        conn.close()
        raise
    mode = 0o600 if created else path.stat().st_mode & 0o666
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if extra.exists():
            os.chmod(extra, mode)
    return db


def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch the file to WAL mode, waiting up to the busy timeout for a process doing the same: SQLite answers a
    journal-mode change that meets another connection's lock with "database is locked" at once, without the busy
    handler (two proxy workers creating a new store together; the mode is persistent, so the second finds it set)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_RETRY_PAUSE)


_FLIP_FIELDS = (
    "time", "user", "route_id", "action", "from_mode", "to_mode", "from_weight", "to_weight", "reason", "forced",
    "gate", "before_text", "after_text", "reverts",
)  # fmt: skip
_INSERT_FLIP = f"INSERT INTO flips ({', '.join(_FLIP_FIELDS)}) VALUES ({', '.join('?' * len(_FLIP_FIELDS))})"


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
            insert_prepared(conn, batch, traffic)

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
            for table in ("route_rollup", "latency_rollup", "field_rollup", "path_rollup"):
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

    def outcomes_since(self, since: float) -> dict[tuple[str, float], list[tuple[str, str, str, str]]]:
        """Per (request id, time), the (route id, pair, outcome, reason) of each exchange row from `since` on
        (indexed by time): which rows already exist, and what they count as."""
        found: dict[tuple[str, float], list[tuple[str, str, str, str]]] = {}
        rows = self._conns[0].execute(
            "SELECT request_id, time, route_id, pair, outcome, reason FROM exchanges WHERE time >= ?", (since,)
        )
        for request_id, t, route_id, pair, outcome, reason in rows:
            found.setdefault((str(request_id), float(t)), []).append((route_id, pair, outcome, reason or ""))
        return found

    def record_flip(self, flip: FlipRecord) -> int:
        """Append a flip to the audit trail; returns its id."""
        with self._write() as conn:
            cursor = conn.execute(_INSERT_FLIP, tuple(getattr(flip, name) for name in _FLIP_FIELDS))
            return int(cursor.lastrowid or 0)

    def flips(self, route_id: str | None = None) -> list[FlipRecord]:
        """Recorded flips, oldest first."""
        return flip_reads.flips(self._conns, route_id)

    def last_flip(self, route_id: str) -> FlipRecord | None:
        found = flip_reads.flips(self._conns, route_id)
        return found[-1] if found else None

    def route_stats(self, since: float | None = None, route_id: str | None = None) -> list[RouteStats]:
        """Outcome counts per route (sorted by route id) from the rollups."""
        return figures.route_stats(self._conns, since, route_id)

    def latency_percentiles(
        self, since: float | None = None, route_id: str | None = None, pair: Pair = "candidate"
    ) -> dict[tuple[str, str], Percentiles]:
        """(route_id, side) -> p50, p95, p99 in ms, nearest rank over the window's stored latencies (exact to the
        µs); from the histogram rollup (marked inexact) where retention deleted rows. Side is "legacy" or "new"."""
        return figures.latency_percentiles(self._conns, since, route_id, pair)

    def field_stats(
        self, since: float | None = None, route_id: str | None = None, pair: Pair = "candidate"
    ) -> list[FieldStat]:
        """Exchanges that differed per (route, field group), busiest first within a route."""
        return figures.field_stats(self._conns, since, route_id, pair)

    def field_samples(self, route_id: str, group: str, limit: int = 50) -> list[tuple[str | None, str | None]]:
        return figures.field_samples(self._conns, route_id, group, limit)

    def traffic_by_mode(self, since: float | None = None) -> list[TrafficRow]:
        return traffic_reads.traffic_by_mode(self._conns, since)

    def unrouted(self, since: float | None = None, limit: int = 20) -> list[UnroutedPath]:
        """Paths no route matched, busiest first."""
        return traffic_reads.unrouted(self._conns, since, limit)

    def path_traffic(self, since: float | None = None) -> list[PathTraffic]:
        """Requests per (route, method, path), with status mix and legacy latency histogram: the inventory's input."""
        return traffic_reads.path_traffic(self._conns, since)

    def served_by_period(self, since: float | None = None, period: int = 86400) -> list[ServedCount]:
        """Requests per (period, route, side): `strangler progress`'s input; periods are UTC days or hours."""
        return traffic_reads.served_by_period(self._conns, since, period)

    def pair_bodies(self, route_id: str, since: float | None = None, limit: int = 5000) -> list[StoredPairBody]:
        """Stored legacy/new bodies of a route's compared pairs, newest first: `strangler contract`'s input."""
        return exchange_reads.pair_bodies(self._conns, route_id, since, limit)

    def list_exchanges(
        self,
        route_id: str | None = None,
        outcome: str | None = None,
        field_group: str | None = None,
        since: float | None = None,
        limit: int = 50,
        pair: Pair | None = None,
    ) -> list[ExchangeRow]:
        return exchange_reads.list_exchanges(self._conns, route_id, outcome, field_group, since, limit, pair)

    def get_exchange(self, exchange_id: int, source: int = 0) -> ExchangeDetail | None:
        """One exchange in full; `source` is the file index from `ExchangeRow.source` when reading several files."""
        return exchange_reads.get_exchange(self._conns, exchange_id, source)

    def replay_pairs(self, since: float | None = None, route_id: str | None = None) -> list[ReplayPair]:
        """Replayed exchanges (pair "replay") with their originals' outcome and fields: the report's replay section."""
        return exchange_reads.replay_pairs(self._conns, since, route_id)

    def exchanges_for_replay(
        self, route_id: str | None = None, outcome: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[ReplayItem]:
        return exchange_reads.exchanges_for_replay(self._conns, route_id, outcome, since, limit)


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
