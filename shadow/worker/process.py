"""The shadow worker: a child process that runs the whole shadow side for one proxy process.

Started by `shadow.worker.bridge.ShadowBridge` as `python -c WORKER_MAIN --fd N [--db PATH]`
(`shadow.worker.supervisor`), with one end of a socketpair. The proxy process decides what to mirror and sends each
request (and later its primary response); this process sends the copies, compares the pairs and writes the store, on its
own core and its own GIL, with the same `ShadowListener` that also runs in-process. Why a process: a shadowed request
costs the candidate's whole HTTP exchange, a comparison and a row, and in one process all of it competes with the
primary traffic for the one event loop and the GIL.

It exits when told to ("close") or when the proxy process goes away (end of stream), in both cases after letting
in-flight copies finish, comparing what is queued and flushing every row to the store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from pathlib import Path
from typing import cast

from proxy.app import settle_gc
from proxy.config.model import SHADOW_WORKER_NICE, Config, Route
from proxy.events import ExchangeObserver, ExchangeStart
from proxy.metrics import Counter, Metrics
from proxy.modes import mirror_options
from proxy.tasks import TaskOwner
from proxy.tuples import new_tuple
from shadow.runner import ShadowListener
from shadow.store.database import Store
from shadow.store.writer import STORED, publish_store_metrics
from shadow.worker.wire import (
    FrameReader,
    Message,
    MetricState,
    WireError,
    frame,
    metric_changes,
    read_config,
    read_primary,
    read_start,
    read_traffic,
    settled_message,
)

log = logging.getLogger("strangler.shadow.worker")

METRICS_EVERY = 0.25  # seconds between metric reports to the proxy process
_ALIVE = ("metrics", ())
WORKER_LOST = "worker_lost"  # the drop reason of a copy a dead worker had taken but not stored
COUNTED_IN_PROXY = frozenset({"worker_down", "worker_busy"})  # drop reasons the proxy process counts itself


class WorkerProtocol(asyncio.Protocol):
    """Reads the proxy's messages and feeds them to the listener; reports metrics back."""

    def __init__(self, db: Path | None) -> None:
        self._db = db
        self._loop = asyncio.get_running_loop()
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None
        self._config: Config | None = None
        self._routes: dict[str, Route] = {}
        self._observers: dict[int, ExchangeObserver] = {}
        # Per request id, the starts whose rows are not all written yet: [seq, rows still to come], oldest first.
        self._unsettled: dict[str, deque[list[int]]] = {}
        self._settled: list[int] = []  # seqs to acknowledge in the next report
        self._resent: list[tuple[int, ExchangeStart, str]] = []  # drop records to check against the store first
        self._reader_store: Store | None = None
        self.metrics = Metrics()
        # What the proxy is told about outcomes: counted when a row is written (or lost in the writer), not when the
        # pair is judged, so that a worker killed in between does not count a request both as its outcome and, in
        # the next worker, as worker_lost. (`metrics.shadow` still counts at judging, and is not reported.)
        self._outcomes = Counter(self.metrics.shadow.name, self.metrics.shadow.help, self.metrics.shadow.labelnames)
        self._reported: MetricState = {}
        self.listener: ShadowListener | None = None
        self.done: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses, but have its methods

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.done.done():
            self.done.set_result(None)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return True  # keep our side open to send the last metrics

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except WireError:
            log.exception("shadow worker: unreadable stream from the proxy process; stopping")
            if not self.done.done():
                self.done.set_result(None)
            return
        for message in messages:
            try:
                self._handle(message)
            except Exception:  # one bad message must not lose the others
                log.exception("shadow worker: a %r message failed", message[0])

    def _handle(self, m: Message) -> None:
        kind = m[0]
        if kind == "start":
            self._start(m)
        elif kind == "primary":
            seq, primary = read_primary(m)
            observer = self._observers.pop(seq, None)
            if observer is not None:
                observer.primary_done(primary)
        elif kind == "traffic":
            if self.listener is not None:
                self.listener.add_traffic(read_traffic(m))
        elif kind == "config":
            config = read_config(m)
            self._config = config
            self._routes = {r.id: r for r in config.routes}
            if self.listener is None:
                self.listener = ShadowListener.create(config, self.metrics, self._db, track_ids=True)
                settle_gc()  # as the proxy does: every exchange allocates many short-lived objects here too
                if self._transport is not None:
                    self._transport.write(frame(("ready",)))
        elif kind == "close":
            if not self.done.done():
                self.done.set_result(None)
        else:
            raise WireError(f"unknown message {kind!r}")

    def _start(self, m: Message) -> None:
        f = read_start(m)
        config, listener = self._config, self.listener
        route = self._routes.get(f.route_id)
        if config is None or listener is None or route is None:
            raise WireError(f"a request on route {f.route_id!r} before its config")
        # The proxy decided whether to copy (the plan in the frame); the options for the copy come with the route.
        plan = f.plan
        mirror = mirror_options(route, f.served_by) if plan.candidate or plan.noise else None
        start: ExchangeStart = new_tuple(
            ExchangeStart,
            (config, route, f.served_by, f.primary_upstream, mirror, f.request, f.started_at, self._loop.time()),
        )
        if f.drop is not None:
            # A copy the proxy dropped, or one a dead worker had taken and not stored (`worker_lost`): only its row.
            if not self._resent:
                self._loop.call_soon(self._record_drops)
            self._resent.append((f.seq, start, f.drop))
            return
        skip = plan.skip is not None
        self._expect(f.seq, f.request.request_id, skip + ((plan.candidate + plan.noise) if mirror is not None else 0))
        observer = listener.begin(start, plan)
        if observer is not None:
            self._observers[f.seq] = observer

    def _expect(self, seq: int, request_id: str, rows: int) -> None:
        """Acknowledge `seq` to the proxy once `rows` rows with this request id are written (or counted lost)."""
        if seq == 0:
            return
        if rows == 0:
            self._settled.append(seq)
        else:
            self._unsettled.setdefault(request_id, deque()).append([seq, rows])

    def _record_drops(self) -> None:
        """Write the rows of dropped copies, except those a dead worker had already stored (it died before it could
        acknowledge them): one indexed look at the store's recent rows per batch."""
        drops, self._resent = self._resent, []
        listener = self.listener
        if listener is None:
            return
        stored = self._stored_since(min(start.started_at for _, start, _ in drops))
        for seq, start, reason in drops:
            rows = stored.get((start.request.request_id, start.started_at))
            if rows:
                # Written by the dead worker, which died before its report: that report would have carried both
                # the acknowledgement and the outcome (one write), so the outcome is counted here instead.
                for key in rows:
                    self._count_row(*key)
                self._expect(seq, start.request.request_id, 0)
                continue
            self._expect(seq, start.request.request_id, 1)
            if reason == WORKER_LOST:  # counted here, where its row is written; the proxy counted the others
                listener.recorder.record_skip(start, "dropped", reason)
            else:
                listener.record_dropped(start, reason)

    def _stored_since(self, since: float) -> dict[tuple[str, float], list[tuple[str, str, str, str]]]:
        try:
            if self._reader_store is None:
                config = self._config
                assert config is not None
                self._reader_store = Store.open(self._db if self._db is not None else config.store.path)
            return self._reader_store.outcomes_since(since)
        except Exception:  # a store we cannot read: write the drop rows (a duplicate beats a loss)
            log.exception("shadow worker: cannot check the store for rows of lost copies")
            return {}

    def _count_row(self, route_id: str, pair: str, outcome: str, reason: str) -> None:
        """Count a written row's outcome for the proxy, unless the proxy counted it (a drop it made itself)."""
        if not (outcome == "dropped" and reason in COUNTED_IN_PROXY):
            self._outcomes.inc((route_id, pair, outcome, reason))

    def _collect_settled(self) -> None:
        listener = self.listener
        if listener is None:
            return
        unsettled, outcomes = self._unsettled, self._outcomes
        for request_id, route_id, pair, outcome, reason, fate in listener.writer.drain_settled():
            if fate == STORED:
                self._count_row(route_id, pair, outcome, reason)
            elif reason not in COUNTED_IN_PROXY:
                outcomes.inc((route_id, pair, "dropped", fate))  # never to be a row: counted as a drop
            waiting = unsettled.get(request_id)
            if not waiting:
                continue
            head = waiting[0]
            head[1] -= 1
            if head[1] == 0:
                self._settled.append(head[0])
                waiting.popleft()
                if not waiting:
                    del unsettled[request_id]

    def report(self) -> None:
        """Send the metric changes since the last report (with none, an empty report: the proxy's sign of life) and
        the starts whose rows are now written, in one write."""
        if self.listener is not None:
            publish_store_metrics(self.listener.writer, self.metrics)
        self._collect_settled()
        data = frame(metric_changes(self.metrics, self._reported, shadow=self._outcomes) or _ALIVE)
        if self._settled:
            data += frame(settled_message(self._settled))
            self._settled = []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def report_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.report()

    async def finish(self) -> None:
        """Let the copies under way finish, flush the store, send the last metrics and close the stream."""
        if self._observers:
            # The proxy process went away without closing: these primaries will never come, so the pairs cannot be
            # judged. (A proxy that closes properly sends every primary before "close".)
            log.warning("shadow worker: %d exchanges lost waiting for their primary", len(self._observers))
            self._observers.clear()
        if self._resent:
            self._record_drops()
        if self.listener is not None:
            await self.listener.aclose()
        self.report()
        if self._reader_store is not None:
            self._reader_store.close()
        if self._transport is not None:
            self._transport.close()


async def run(fd: int, db: Path | None) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=fd)
    transport, protocol = await loop.connect_accepted_socket(lambda: WorkerProtocol(db), sock)
    tasks = TaskOwner("shadow-worker")
    _ = tasks.start(protocol.report_every(METRICS_EVERY), name="shadow-worker-metrics")
    try:
        await protocol.done
    finally:
        await tasks.close()
        await protocol.finish()
        transport.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shadow.worker.process", description="strangler's shadow worker process")
    ap.add_argument("--fd", type=int, required=True, help="the inherited socket to the proxy process")
    ap.add_argument("--db", type=Path, default=None, help="the store file (default: the config's store.path)")
    ap.add_argument(
        "--nice",
        type=int,
        default=SHADOW_WORKER_NICE,
        help="added to this process's nice value before it starts any thread (limits.shadow_worker_nice)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The worker's life is the stream's: it stops when the proxy closes it (after draining) or goes away, so every
    # exchange still gets its row. Ctrl-C reaches a terminal's whole process group, and a service manager stopping
    # the service sends SIGTERM to every process in it (systemd's KillMode=control-group): both are left to the
    # proxy, which drains and then closes the stream. (SIGKILL still ends it at once.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The client never pays for the shadow: when the proxy and the worker want the same core, the proxy goes first
    # (a copy waits, or past the worker's limits is dropped and counted); with a core to spare nothing changes.
    # Before any thread starts: on Linux a nice value belongs to a thread, and new threads inherit their creator's.
    if args.nice:
        with contextlib.suppress(OSError):
            os.nice(args.nice)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        runner = asyncio.Runner()
    with runner:
        runner.run(run(args.fd, args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
