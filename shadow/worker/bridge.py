"""The shadow side as seen from the proxy process: decide, hand over to the shadow worker, never wait.

`ShadowBridge` is the `ExchangeListener` `strangler serve` installs. On the event loop it only decides what to do
with a request (`plan_mirror`: route options and sampling) and appends its message to a list that is encoded as one
frame (`batch_frame`) and written to the worker at the end of the loop iteration, at most once per WRITE_GAP (starts),
or within LAZY_FLUSH (primaries, traffic counts); the copies, the comparisons and the store run in the worker process
(`shadow.worker.process`). The client's request pays for its snapshots and a share of one encoding and one write per
loop iteration, not for a second HTTP exchange: measured, this is what lets shadowing at 100% keep most of
pass-through's throughput.

Failure never reaches the client:
- a worker that cannot keep up: past `max_backlog` bytes waiting for it (`limits.shadow_backlog`), new copies are
  dropped and counted (`strangler_shadow_total{pair="candidate",outcome="dropped",reason="worker_busy"}`);
- a worker that dies, or stops reporting for `SILENT_AFTER` seconds (it is killed then): copies are dropped and
  counted (`worker_down`) and it is restarted with a growing delay. What it had taken and not yet stored is not
  lost uncounted: the worker acknowledges each start once its rows are written ("settled"), the bridge keeps the
  message of every start not yet acknowledged, and sends their row-only records to the next worker as drops
  (`worker_lost`), which writes and counts the ones the dead worker had not stored. So every mirrored request ends
  as a row, or as a counted drop (`strangler_shadow_mirrored_total` = stored + dropped by reason);
- on shutdown (after the proxy drained) the worker is told to close: it lets in-flight copies finish, compares
  what is queued and flushes every row before it exits.

Starting the worker process, restarting it and killing it when silent is `shadow.worker.supervisor`'s job; the bridge
is told when a worker connects, goes and comes back, and keeps the frames and the accounting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from mypy_extensions import mypyc_attr

from proxy.config.model import SHADOW_WORKER_NICE, Config
from proxy.events import ExchangeListener, ExchangeObserver, ExchangeStart, ResponseSnapshot
from proxy.metrics import WORKER_RESTARTS, Counter
from proxy.state import RuntimeState
from proxy.tasks import TaskOwner
from shadow.plan import MirrorPlan, TrafficCounting, plan_mirror
from shadow.records import TrafficTally
from shadow.redact import key_path_for, load_or_create_key
from shadow.store.database import Store
from shadow.worker.supervisor import SILENT_AFTER, WorkerSupervisor
from shadow.worker.wire import (
    Message,
    batch_frame,
    config_message,
    drop_record,
    frame,
    primary_message,
    start_drop,
    start_message,
    start_route,
    traffic_message,
)

log = logging.getLogger("strangler.shadow.bridge")

TRAFFIC_FLUSH = 1.0  # seconds between traffic-count messages
LAZY_FLUSH = 0.005  # seconds frames nothing waits for (primaries, traffic) may gather before they are written
# Seconds between two writes of starts: under load many loop iterations follow each other within one, and their
# starts then go out in one write (one encoding, one system call, one wake-up of the worker) instead of one each;
# at a low rate a start still leaves at the end of its loop iteration.
WRITE_GAP = 0.001
RESTART_METRIC = WORKER_RESTARTS
MIRRORED_METRIC = "strangler_shadow_mirrored_total"
WORKER_LOST = "worker_lost"
DROP_WARN_EVERY = 10.0  # seconds between log lines about dropped copies


class ShadowBridge(TrafficCounting):
    """Hands the shadow side of a running proxy to a worker process. Create it on the proxy's event loop."""

    def __init__(
        self,
        state: RuntimeState,
        db: Path,
        *,
        max_backlog: int = 64 * 1024 * 1024,
        close_deadline: float = 60.0,
        silent_after: float = SILENT_AFTER,
        worker_nice: int = SHADOW_WORKER_NICE,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._state = state
        self._metrics = state.metrics
        self._max_backlog = max_backlog
        self._close_deadline = close_deadline
        self._rand = rand
        self._restarts: Counter = state.metrics.extra_counter(
            RESTART_METRIC, "Shadow worker processes restarted after they died (or were killed as stuck)."
        )
        self._mirrored: Counter = state.metrics.extra_counter(
            MIRRORED_METRIC,
            "Requests handed to the shadow side, by route: each ends as stored rows or a drop counted with its reason.",
            ("route",),
        )
        self._traffic = TrafficTally()
        # Starts sent and not yet acknowledged as stored: should this worker die, their row-only records
        # (`drop_record`) go to the next one. The message itself is kept, not a record made for every request: it
        # holds the request body (up to the mirror's max_body) a little longer, as long as the worker holds the copy.
        # A record with a drop reason other than worker_lost is a drop this process made and counted already.
        self._unsettled: dict[int, Message] = {}
        self._lost_with_worker: list[int] = []  # seqs sent to the worker that died, to resend to the next one
        self._pending: list[Message] = []  # messages of this loop iteration, encoded together when flushed
        self._out: list[bytes] = []  # encoded frames not yet written to the stream
        self._out_bytes = 0
        self._buffered = 0  # the transport's write buffer after the last write (0: all taken by the socket)
        self._written_at = -WRITE_GAP  # loop time of the last write
        self._metrics.shadow_queue.set(("worker_stream",), 0)  # shown from the start; set again when it changes
        self._flush_handle: asyncio.Handle | None = None  # a write at the end of this loop iteration
        self._lazy_handle: asyncio.TimerHandle | None = None  # a write within LAZY_FLUSH
        self._transport: asyncio.Transport | None = None
        self._up = True  # a worker is running or starting: requests are handed over (buffered until it connects)
        self._generation = 1  # one per worker process; observers of an earlier one are stale
        self._config_sent: Config | None = None
        self._seq = 0
        self._drops_logged_at = -DROP_WARN_EVERY
        self._drops_unlogged = 0
        self._closing = False
        self._worker = WorkerSupervisor(
            self, db, state.metrics, max_backlog=max_backlog, silent_after=silent_after, nice=worker_nice
        )
        self._tasks = TaskOwner("shadow-bridge")
        self._send_config(state.config)
        self._supervision = self._tasks.start(self._worker.supervise(), name="shadow-worker")
        self._flusher = self._tasks.start(self._flush_traffic_every(TRAFFIC_FLUSH), name="shadow-bridge-traffic")

    @classmethod
    def create(cls, state: RuntimeState) -> ShadowBridge:
        """The bridge for a running proxy: its store is `--db` (state.db_path), else the config's store.path.

        The store and the redaction key are opened here first, so a bad path fails `serve` at start-up with a
        clear error instead of in a worker."""
        db = Path(state.db_path) if state.db_path else state.config.store.path
        Store.open(db).close()
        load_or_create_key(key_path_for(db))
        limits = state.config.limits
        return cls(state, db, max_backlog=limits.shadow_backlog, worker_nice=limits.shadow_worker_nice)

    # --- the listener protocol: on the event loop, returns at once ----------------------------------------------

    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        if self._closing:
            return None
        plan = plan_mirror(start, self._rand)
        if plan is None:
            return None
        route = start.route
        assert route is not None
        self._mirrored.inc((route.id,))
        if not self._up or (
            self._out_bytes + self._buffered > self._max_backlog and self.backlog() > self._max_backlog
        ):
            self._drop(start, plan, route.id)
            return None
        self._seq = seq = self._seq + 1
        message = start_message(seq, plan, start)
        self._unsettled[seq] = message
        if start.config is not self._config_sent:
            self._send_config(start.config)
        if self._flush_handle is not None:  # (`_send`, inlined: the common case, a write is already due)
            self._pending.append(message)
        else:
            self._send(message)
        if not (plan.candidate or plan.noise):
            return None
        return _Sent((self, seq, self._generation))

    def _drop(self, start: ExchangeStart, plan: MirrorPlan, route_id: str) -> None:
        """No worker, or too much waiting for it: the copy is dropped and counted here."""
        backlog = self.backlog()
        drop = "worker_down" if not self._up else "worker_busy"
        self._metrics.shadow.inc((route_id, "candidate", "dropped", drop))
        self._warn_drops(drop, backlog)
        # Its row (without the body) still goes to the worker, or to the next one; past twice the limit,
        # the drop is only counted.
        if backlog <= 2 * self._max_backlog and plan.candidate:
            self._seq += 1
            message = start_message(self._seq, plan, start, drop)
            self._unsettled[self._seq] = message
            if start.config is not self._config_sent:
                self._send_config(start.config)
            self._send(message)

    def _warn_drops(self, reason: str, backlog: int) -> None:
        """At most one log line per DROP_WARN_EVERY seconds while copies are being dropped, with their count."""
        self._drops_unlogged += 1
        now = self._loop.time()
        if now - self._drops_logged_at >= DROP_WARN_EVERY:
            log.warning(
                "shadow copies dropped (%s): %d since the last warning; %d bytes waiting for the worker",
                reason,
                self._drops_unlogged,
                backlog,
            )
            self._drops_logged_at = now
            self._drops_unlogged = 0

    async def ready(self) -> None:
        """Until the first worker can take copies (its store open), so the proxy's first requests do not all
        reach it as one burst; also returns if that worker died first. `start_proxy` bounds the wait."""
        await asyncio.shield(self._worker.first_ready)

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (None before it started or while it is down)."""
        proc = self._worker.proc
        return proc.pid if proc is not None and proc.returncode is None and self._up else None

    def backlog(self) -> int:
        """Bytes handed over and not yet taken by the worker's socket (frames of this loop iteration not counted
        until it ends)."""
        buffered = self._buffered
        if buffered:  # what the transport kept at the last write; it only shrinks until the next: look again
            transport = self._transport
            self._buffered = buffered = transport.get_write_buffer_size() if transport is not None else 0
        return self._out_bytes + buffered

    # --- the stream --------------------------------------------------------------------------------------------

    def _send_config(self, config: Config) -> None:
        self._config_sent = config
        self._send(config_message(config))

    def _send(self, message: Message, *, soon: bool = True) -> None:
        """Queue a message. `soon`: written at the end of this loop iteration, or WRITE_GAP after the last write if
        that is later (a start: the copy should leave with its primary); else within LAZY_FLUSH (a primary, traffic:
        nothing waits for them), so that at a low rate the worker is woken once for several of them instead of once
        per request."""
        self._pending.append(message)
        if self._flush_handle is not None:
            return
        if soon:
            # At most one write per loop iteration (the frames of every request handled in it go out together),
            # and per WRITE_GAP.
            loop = self._loop
            due = self._written_at + WRITE_GAP
            if loop.time() >= due:
                self._flush_handle = loop.call_soon(self._flush)
            else:
                self._flush_handle = loop.call_at(due, self._flush)
        elif self._lazy_handle is None:
            # Left armed when a write at the end of an iteration takes these first: re-arming a timer per request
            # (a primary, then the next request's start) cost more than an idle wake-up every LAZY_FLUSH.
            self._lazy_handle = self._loop.call_later(LAZY_FLUSH, self._lazy_flush)

    def _lazy_flush(self) -> None:
        self._lazy_handle = None
        if self._flush_handle is None and self._pending:
            self._flush()

    def _seal(self) -> None:
        """Encode the queued messages as one frame, behind the frames already encoded."""
        pending = self._pending
        if pending:
            data = batch_frame(pending) if len(pending) > 1 else frame(pending[0])
            self._pending = []
            self._out.append(data)
            self._out_bytes += len(data)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._pending:
            self._seal()
        transport = self._transport
        if transport is None or not self._out:
            return  # the worker is starting: kept until it connects
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._out_bytes = 0
        transport.write(data)
        self._written_at = self._loop.time()
        buffered = transport.get_write_buffer_size()
        if buffered or self._buffered:  # the gauge is set once the stream backs up, and again once it is clear
            self._metrics.shadow_queue.set(("worker_stream",), buffered)
        self._buffered = buffered

    def _flush_traffic(self) -> None:
        counts = self._traffic.drain()
        if counts:  # while the worker is down, kept for the next one
            self._send(traffic_message(counts), soon=False)
        self._worker.check_alive()

    # --- the worker's life (`WorkerOwner`: told by the supervisor) ---------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    def worker_connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._flush()

    def worker_disconnected(self) -> None:
        self._transport = None
        if self._buffered:
            self._metrics.shadow_queue.set(("worker_stream",), 0)
        self._buffered = 0

    def worker_settled(self, seqs: tuple[int, ...]) -> None:
        """The worker wrote these starts' rows: nothing more to account for."""
        unsettled = self._unsettled
        for seq in seqs:
            unsettled.pop(seq, None)

    def worker_lost(self) -> None:
        """Forget what was meant for the dead worker: its copies cannot be paired by another one."""
        self._up = False
        self._lost_with_worker = list(self._unsettled)
        if self._lost_with_worker:
            log.warning(
                "shadow worker lost with %d requests not stored; their rows go to the next worker (worker_lost)",
                len(self._lost_with_worker),
            )
        self._pending.clear()
        self._out.clear()
        self._out_bytes = 0
        self._config_sent = None
        for stage in ("candidates", "compare", "store"):  # its gauges, last reported, no longer hold
            self._metrics.shadow_queue.set((stage,), 0)

    def worker_restarting(self) -> None:
        """A new worker: the config goes first, then what was kept meanwhile (drop rows, traffic counts)."""
        self._restarts.inc()
        self._generation += 1
        self._up = True
        self._seal()
        kept, kept_config, self._out = self._out, self._config_sent, []
        self._out_bytes = 0
        self._send_config(self._state.config)
        unsettled = self._unsettled
        for seq in self._lost_with_worker:  # before what was kept: it holds config frames of its own
            held = unsettled.get(seq)
            if held is not None:
                if start_drop(held) is None:  # a copy the dead worker had: now only its row, as worker_lost
                    unsettled[seq] = held = drop_record(held, WORKER_LOST)
                self._send(held)
        self._lost_with_worker = []
        self._seal()
        for data in kept:
            self._out.append(data)
            self._out_bytes += len(data)
        if kept:  # they hold their own config frames: the worker's current config is the last of those
            self._config_sent = kept_config

    # --- shutdown ----------------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop handing over; tell the worker to finish (copies, comparisons, every row) and wait until it has."""
        if self._closing:
            return
        self._closing = True
        self._flusher.cancel()
        if self._up:
            self._flush_traffic()
            self._send(("close",))
            self._flush()
            try:
                await asyncio.wait_for(asyncio.shield(self._supervision), self._close_deadline)
            except TimeoutError:
                log.error("shadow worker still running %.0fs after close; killing it", self._close_deadline)
        for handle in (self._flush_handle, self._lazy_handle):
            if handle is not None:
                handle.cancel()
        await self._tasks.close()  # a worker still running is killed when its supervision is cancelled
        self._metrics.shadow_queue.set(("worker_stream",), 0)
        for message in self._unsettled.values():  # no worker left to write their rows: counted only
            if start_drop(message) in (None, WORKER_LOST):  # (other drops were counted when this process made them)
                self._metrics.shadow.inc((start_route(message), "candidate", "dropped", WORKER_LOST))
        self._unsettled.clear()


@mypyc_attr(native_class=False)  # a tuple subclass: compiled, a Python class with compiled methods
class _Sent(tuple[ShadowBridge, int, int]):
    """The observer of one handed-over exchange: forwards its primary to the worker that has its copies. A tuple
    (bridge, seq, worker generation): one is made per mirrored request, and a tuple is built without running any
    Python code."""

    __slots__ = ()

    def primary_done(self, primary: ResponseSnapshot) -> None:
        # Always sent, whatever the backlog: the worker holds the copy's result until its primary arrives.
        bridge, seq, generation = self
        if generation == bridge._generation and bridge._up:
            bridge._send(primary_message(seq, primary), soon=False)


def shadow_worker_listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
    """A `proxy.app` listeners factory: the shadow side in a worker process (what `strangler serve` runs)."""
    return [ShadowBridge.create(state)]
