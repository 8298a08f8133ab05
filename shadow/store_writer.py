"""`StoreWriter`: the one thread per process that owns a `Store` and writes what the event loop queues, in batches.

Errors: a failed write is logged, retried once, then counted in `lost`; retention failures are logged and retried on
the next interval. Nothing here raises into the event loop.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence

from proxy.config import Retention
from shadow.model import ExchangeRecord, TrafficCount
from shadow.store import Store
from shadow.store_rows import PreparedBatch, prepare_records

log = logging.getLogger("strangler.store")


_Item = PreparedBatch | tuple[TrafficCount, ...]


class StoreWriter:
    """A thread that owns one `Store` and writes what the event loop hands it, in batches.

    `submit`, `submit_many` and `count` never block: past `max_queue` records they drop and count (`dropped`).
    The thread wakes every `flush_interval` seconds and writes what is queued, `batch_size` records per
    transaction at most (few, large transactions: see `_run` and `shadow.store_rows`), applies retention every
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
