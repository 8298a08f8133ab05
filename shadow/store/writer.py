"""`StoreWriter`: the one thread per process that owns a `Store` and writes what the event loop queues, in batches.

Errors: a store that refuses writes (disk full, read-only, locked, I/O error: `sqlite3.OperationalError`) is a
fault that passes: the batch is kept and retried with a growing delay (RETRY_FIRST up to RETRY_MAX), the store is
reopened read-write before each retry, and what arrives meanwhile waits in the queue, bounded by `max_queue`
records and `max_queue_bytes` (past either, new records are dropped and counted). A batch the store cannot take
for its own sake (a value SQLite cannot bind, a constraint) is retried once, then counted in `lost`. So a short
disk-full spell loses nothing, and every record ends written, dropped or lost, each counted (`rows_lost`).
Retention failures are logged and retried on the next interval. Nothing here raises into the event loop.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence

from proxy.config.model import Retention
from proxy.metrics import STORE_FAILING, STORE_ROWS_LOST, STORE_WRITE_ERRORS, Metrics
from shadow.store.database import Store
from shadow.store.rows import PreparedBatch, SettledRow, batch_bytes, prepare_records, settled_rows
from shadow.values import ExchangeRecord, TrafficCount

log = logging.getLogger("strangler.store")


_Item = PreparedBatch | tuple[TrafficCount, ...]
STORED = "stored"


RETRY_FIRST = 0.1  # seconds before the first retry of a batch the store refused; doubles up to RETRY_MAX
RETRY_MAX = 5.0
ERROR_LOG_EVERY = 30.0  # seconds between log lines while the store keeps refusing writes
CLOSE_RETRY = 5.0  # seconds a store fault is retried for once close() was called, before the rest counts as lost
MAX_QUEUE_BYTES = 256 * 1024 * 1024  # the memory the queue may hold (compressed bodies and ~1 KiB per row)


def store_fault(exc: BaseException) -> bool:
    """Whether a write failed because of the store (full, read-only, locked, I/O: it may pass, so retry the batch)
    rather than because of the batch (it would fail again)."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


class StoreWriter:
    """A thread that owns one `Store` and writes what the event loop hands it, in batches.

    `submit`, `submit_many` and `count` never block: past `max_queue` records they drop and count (`dropped`).
    The thread wakes every `flush_interval` seconds and writes what is queued, `batch_size` records per
    transaction at most (few, large transactions: see `_run` and `shadow.store.rows`), applies retention every
    `retention_interval` seconds, and on `close` writes everything still queued. A batch the store refuses is
    retried with backoff until it is written (after `close`, for `close_retry` seconds more at most); one that fails
    for its own sake is retried once; a batch given up is counted in `lost`. With `track_ids`, the request ids of
    rows written or lost are kept for `drain_settled` (the shadow worker acknowledges them to the proxy). Not a
    daemon thread, so queued records are written even when the program ends without calling `close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_queue: int = 100_000,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        track_ids: bool = False,
        close_retry: float = CLOSE_RETRY,
        flush_interval: float = 0.25,
        batch_size: int = 2000,
        retention: Retention | None = None,
        retention_interval: float = 600.0,
        start: bool = True,
    ) -> None:
        self._path = path
        self._store: Store | None = Store.open(path)  # opened here so a bad path fails at start-up, not in the thread
        # Unbounded as a queue; bounded by `max_queue` records, counted on both sides (items may be batches).
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        self._put_bytes = 0  # estimated bytes queued (under _put_lock)
        self._taken_bytes = 0  # and taken (under _put_lock too: two counters a reader compares)
        self._track_ids = track_ids
        self._settled: list[SettledRow] = []  # rows written or lost since the last `drain_settled`
        self._settled_lock = threading.Lock()
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
        self.lost = 0  # records in batches given up (the batch itself failed twice, or close() came first)
        self.written = 0
        self.write_errors = 0  # failed write attempts
        self.failing = False  # the last write attempt failed
        self._give_up_at: float | None = None  # closing with a failing store: retries end then
        self._close_retry = close_retry
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

    @property
    def rows_lost(self) -> int:
        """Records that will never be rows: dropped at a full queue (or after close) and lost to failed writes."""
        return self.dropped + self.lost

    def drain_settled(self) -> list[SettledRow]:
        """With `track_ids`: the rows written or lost since the last call (any thread)."""
        with self._settled_lock:
            settled, self._settled = self._settled, []
        return settled

    def _settle(self, batch: PreparedBatch, fate: str) -> None:
        if self._track_ids and batch.count:
            rows = settled_rows(batch, fate)
            with self._settled_lock:
                self._settled.extend(rows)

    def _enqueue(self, item: PreparedBatch) -> None:
        n = len(item)
        size = batch_bytes(item)
        with self._put_lock:
            full = (
                self._put - self._taken + n > self._max_queue
                or self._put_bytes - self._taken_bytes + size > self._max_queue_bytes
            )
            if self._stopping.is_set() or full:
                self.dropped += n
                self._settle(item, "store_queue_full")
                return
            self._put += n
            self._put_bytes += size
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
        if not self._thread.is_alive() and self._store is not None:
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
                self._write(batch, traffic)
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
                with self._put_lock:
                    self._taken_bytes += batch_bytes(item)
                if batch is None:
                    batch = item
                else:
                    batch.extend(item)
            else:
                traffic.extend(item)
        return batch if batch is not None else PreparedBatch(), traffic

    def _write(self, batch: PreparedBatch, traffic: list[TrafficCount]) -> None:
        """Write one batch: retried while the store refuses writes (until close), once when the batch is at fault."""
        delay = RETRY_FIRST
        batch_failures = 0
        logged_at = -ERROR_LOG_EVERY
        while True:
            try:
                store = self._store if self._store is not None else self._reopen()
                store.write_prepared(batch, traffic)
            except Exception as exc:  # noqa: BLE001 (logged below, rate-limited) the proxy must outlive any store failure
                self.write_errors += 1
                self.failing = True
                fault = store_fault(exc)
                batch_failures += not fault
                now = time.monotonic()
                if now - logged_at >= ERROR_LOG_EVERY:
                    logged_at = now
                    log.error(
                        "store write of %d records failed (%s: %s); %s",
                        len(batch),
                        type(exc).__name__,
                        exc,
                        "retrying" if fault else "retrying once",
                    )
                if fault and self._stopping.is_set() and self._give_up_at is None:
                    self._give_up_at = now + self._close_retry
                if batch_failures >= 2 or (self._give_up_at is not None and now >= self._give_up_at):
                    self.lost += len(batch)
                    self._settle(batch, "store_error")
                    log.error("store write of %d records given up: counted as lost", len(batch))
                    return
                if fault:
                    self._close_store()  # reopened read-write on the next attempt (permissions may be back)
                    if self._stopping.is_set():
                        time.sleep(min(delay, max(0.0, (self._give_up_at or now) - now)))
                    else:
                        self._stopping.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                continue
            if self.failing:
                self.failing = False
                log.info("store writes work again")
            self.written += len(batch)
            self._settle(batch, STORED)
            return

    def _reopen(self) -> Store:
        self._store = Store.open(self._path)
        return self._store

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # a connection that cannot close cleanly is dropped all the same
                log.exception("closing the store after a failed write")

    def _apply_retention(self, retention: Retention) -> None:
        try:
            store = self._store if self._store is not None else self._reopen()
            deleted = store.enforce_retention(retention.max_age, retention.max_exchanges, time.time())
        except Exception:  # retention is retried on the next interval
            log.exception("store retention failed")
            return
        if deleted:
            log.info("store retention deleted %d exchanges", deleted)


def publish_store_metrics(writer: StoreWriter, metrics: Metrics) -> None:
    """Copy a writer's fault counts into a registry (on the event loop; the writer's ints are read, never locked)."""
    errors = metrics.extra_counter(STORE_WRITE_ERRORS, "Store write attempts that failed (each is retried).")
    lost = metrics.extra_counter(
        STORE_ROWS_LOST,
        "Records that will never be rows, by reason: store_queue_full (the writer's bounded queue was full), "
        "store_error (the store refused them until the writer gave up).",
        ("reason",),
    )
    errors.values[()] = float(writer.write_errors)
    lost.values[("store_queue_full",)] = float(writer.dropped)
    lost.values[("store_error",)] = float(writer.lost)
    failing = metrics.extra_gauge(STORE_FAILING, "1 while the store refuses writes (records wait and are retried).")
    failing.set((), 1.0 if writer.failing else 0.0)
