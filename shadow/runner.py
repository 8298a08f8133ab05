"""Mirror requests to the other side and pair each copy with its primary; `Recorder` judges and stores the pairs.

`ShadowListener` is an `proxy.events.ExchangeListener`: the proxy core calls it for every request and never waits
for it (in the proxy process with `--no-shadow-worker`, else fed by `shadow.worker.process`). The client never pays for
the shadow side:
- the candidate request starts when the primary starts (fair latency), on its own connection pools, and nothing the
  candidate does (down, slow, 500, Set-Cookie) reaches the client;
- concurrency is capped and the waiting room is bounded: past it, the shadow is dropped and counted. A copy waiting
  for a slot is only data in a queue (no task, no coroutine) until a finished copy hands it its slot;
- a mirrored request is sent at most once (`retry_stale=False`);
- a candidate's deadline is enforced by one sweeper rather than a timer per request.

Cheap on purpose, since it runs for every request: routes that mirror nothing cost the core one `wants_exchange`
and one `request_served` call (no snapshots).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.config.model import Config, Mirror, Route, Upstream
from proxy.events import ExchangeListener, ExchangeObserver, ExchangeStart, ResponseSnapshot, Side
from proxy.metrics import Metrics
from proxy.modes import mirror_target
from proxy.state import RuntimeState
from proxy.tasks import TaskOwner
from shadow.fetch import RESPONSE_CAP, CandidatePools, fetch_copy
from shadow.judging import Recorder
from shadow.plan import MirrorPlan, TrafficCounting, plan_mirror
from shadow.records import TrafficTally
from shadow.redact import key_path_for, load_or_create_key
from shadow.store.writer import StoreWriter, publish_store_metrics
from shadow.values import Pair, TrafficCount

log = logging.getLogger("strangler.shadow")

SENT_METRIC = "strangler_shadow_requests_total"
TRAFFIC_FLUSH = 1.0  # seconds between traffic-count flushes to the store
SWEEP = 0.05  # seconds between checks for candidates past their deadline (the precision of `timeout`)


@dataclass(frozen=True, slots=True)
class ShadowLimits:
    """How much shadow work may be under way at once; past both, new shadows are dropped and counted."""

    max_concurrency: int = 64  # candidate requests in flight
    max_waiting: int = 256  # candidates waiting for a slot
    compare_queue: int = 10_000  # pairs waiting for the compare thread
    response_cap: int = RESPONSE_CAP  # response bytes read from a candidate for comparison
    close_deadline: float = 10.0  # on shutdown, seconds in-flight candidates get before they are cancelled


class _Pending:
    """One mirrored exchange waiting for both sides; also the core's observer of its primary."""

    __slots__ = (
        "candidate",
        "deadline",
        "listener",
        "mirror",
        "pair",
        "primary",
        "route",
        "start",
        "task",
        "timed_out",
        "upstream",
    )

    def __init__(
        self,
        listener: ShadowListener,
        start: ExchangeStart,
        route: Route,
        mirror: Mirror,
        pair: Pair,
        upstream: Upstream,
    ) -> None:
        self.listener = listener
        self.start = start
        self.route = route
        self.mirror = mirror
        self.pair: Pair = pair
        self.upstream = upstream  # where the copy goes
        self.primary: ResponseSnapshot | None = None
        self.candidate: ResponseSnapshot | None = None
        self.task: asyncio.Task[None] | None = None
        self.deadline = 0.0  # loop.time() past which the sweeper cancels the candidate (set once it has a slot)
        self.timed_out = False

    def primary_done(self, primary: ResponseSnapshot) -> None:
        self.primary = primary.decoded()
        if self.candidate is not None:
            self.listener.recorder.pair_ready(self)


class _Both:
    """The observer of an exchange mirrored twice (candidate and noise)."""

    __slots__ = ("_pending",)

    def __init__(self, *pending: _Pending) -> None:
        self._pending = pending

    def primary_done(self, primary: ResponseSnapshot) -> None:
        primary = primary.decoded()  # once for both
        for p in self._pending:
            p.primary_done(primary)


class ShadowListener(TrafficCounting):
    """The shadow side of strangler, attached to a running proxy. Create it on the event loop it will serve."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        writer: StoreWriter,
        key: bytes,
        limits: ShadowLimits = ShadowLimits(),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._metrics = metrics
        self._sent = metrics.extra_counter(
            SENT_METRIC,
            "Copies sent to the other side, by route and pair (candidate, noise).",
            ("route", "pair"),
        )
        self._writer = writer
        self._limits = limits
        self._max_active = limits.max_concurrency + limits.max_waiting
        self._rand = rand
        self._tasks = TaskOwner("shadow")  # candidate requests
        self._background = TaskOwner("shadow-background")  # the traffic flusher and the deadline sweeper
        self._pools = CandidatePools(limits.max_concurrency)
        # A slot is a running copy's task; a copy past `max_concurrency` waits in `_waiting` as data (no task, which
        # a semaphore would need) until a finishing copy starts it. `_active` is both: the waiting room's bound.
        self._free_slots = limits.max_concurrency
        self._waiting: deque[_Pending] = deque()
        self._active = 0  # candidates accepted and not finished: in flight plus waiting for a slot
        self._in_flight: set[_Pending] = set()  # candidates holding a slot, watched by the deadline sweeper
        self._closing = False
        self._slots_closed = False  # shutdown's deadline passed: a freed slot no longer starts a waiting copy
        self._traffic = TrafficTally()
        self.recorder = Recorder(
            metrics=metrics,
            writer=writer,
            key=key,
            compare_queue=limits.compare_queue,
            rand=rand,
            candidates=lambda: self._active,
        )
        self._flusher = self._background.start(self._flush_traffic_every(TRAFFIC_FLUSH), name="shadow-traffic-flush")
        _ = self._background.start(self._sweep_every(SWEEP), name="shadow-deadlines")

    @classmethod
    def create(
        cls,
        config: Config,
        metrics: Metrics,
        db: str | Path | None = None,
        *,
        limits: ShadowLimits | None = None,
        track_ids: bool = False,
    ) -> ShadowListener:
        """The listener for a config: its store (`db`, else `store.path`), the redaction key beside the store, and
        its limits (else the config's `limits.shadow_in_flight` and `shadow_waiting`)."""
        if limits is None:
            limits = ShadowLimits(
                max_concurrency=config.limits.shadow_in_flight, max_waiting=config.limits.shadow_waiting
            )
        path = Path(db) if db else config.store.path
        writer = StoreWriter(path, retention=config.store.retention, track_ids=track_ids)
        try:
            key = load_or_create_key(key_path_for(path))
        except (OSError, ValueError):
            writer.close()
            raise
        return cls(metrics=metrics, writer=writer, key=key, limits=limits)

    # --- the listener protocol: called on the event loop, must return at once -------------------------------

    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        if self._closing:
            return None
        plan = plan_mirror(start, self._rand)
        return None if plan is None else self.begin(start, plan)

    def begin(self, start: ExchangeStart, plan: MirrorPlan) -> ExchangeObserver | None:
        """Carry out a plan made by `plan_mirror` (here, or in the proxy process when this runs in a shadow
        worker): record the skip, start the copies. The observer wants the primary's snapshot."""
        route = start.route
        if route is None or self._closing:
            return None
        if plan.skip is not None:
            self.recorder.record_skip(start, "skipped", plan.skip)
        mirror = start.mirror
        if mirror is None:
            return None
        candidate = self._mirror(start, route, mirror, "candidate") if plan.candidate else None
        noise = self._mirror(start, route, mirror, "noise") if plan.noise else None
        if noise is not None:
            return noise if candidate is None else _Both(candidate, noise)
        return candidate

    def record_dropped(self, start: ExchangeStart, reason: str) -> None:
        """The row of a copy dropped before it reached this listener (by the proxy process); counted there."""
        if start.route is not None:
            self.recorder.record_skip(start, "dropped", reason, counted=False)

    def add_traffic(self, counts: Sequence[TrafficCount]) -> None:
        """Traffic counts tallied elsewhere (the proxy process, when this runs in a shadow worker)."""
        if counts:
            self._writer.count(counts)

    # --- mirroring ----------------------------------------------------------------------------------------------

    def _mirror(self, start: ExchangeStart, route: Route, mirror: Mirror, pair: Pair) -> _Pending | None:
        if self._active >= self._max_active:
            self.recorder.record_skip(start, "dropped", "queue_full", pair)
            return None
        # A noise copy is a second legacy call; a candidate copy goes to the side that did not serve.
        name = route.legacy if pair == "noise" else mirror_target(route, start.served_by)
        upstream = start.config.upstreams.get(name) if name is not None else None
        if upstream is None:
            self.recorder.record_skip(start, "skipped", "unknown_upstream", pair)
            return None
        p = _Pending(self, start, route, mirror, pair, upstream)
        self._active += 1
        self._sent.inc((route.id, pair))
        if self._free_slots:
            self._free_slots -= 1
            self._run(p)
        else:
            self._waiting.append(p)
        self._metrics.shadow_queue.set(("candidates",), self._active)
        return p

    def _run(self, p: _Pending) -> None:
        """Start a copy that holds a slot: its deadline runs from now."""
        p.deadline = self._loop.time() + p.mirror.timeout
        self._in_flight.add(p)
        p.task = self._tasks.start(self._send(p), name="shadow-candidate", loop=self._loop)

    def _release(self, p: _Pending) -> None:
        """A copy is done with its slot: the first waiting copy takes it (first come, first served)."""
        self._in_flight.discard(p)
        self._active -= 1
        if self._waiting and not self._slots_closed:
            self._run(self._waiting.popleft())
        else:
            self._free_slots += 1

    async def _send(self, p: _Pending) -> None:
        start, upstream = p.start, p.upstream
        side: Side = "new" if start.served_by == "legacy" and p.pair == "candidate" else "legacy"
        timeouts = start.config.defaults.timeouts
        try:
            snapshot = await fetch_copy(
                self._pools.get(upstream),
                upstream,
                start.request,
                p.mirror,
                side,
                connect_timeout=timeouts.connect,
                pool_timeout=timeouts.pool,
                cap=self._limits.response_cap,
                watched=p,
            )
        except asyncio.CancelledError:
            self.recorder.record_skip(start, "dropped", "shutdown", p.pair)
            raise
        finally:
            self._release(p)
        p.candidate = snapshot
        if p.primary is not None:
            self.recorder.pair_ready(p)

    async def _sweep_every(self, seconds: float) -> None:
        """Cancel candidates past their deadline: one timer for all of them instead of one per request."""
        while True:
            await asyncio.sleep(seconds)
            if not self._in_flight:
                continue
            now = self._loop.time()
            for p in [p for p in self._in_flight if p.deadline <= now and not p.timed_out]:
                p.timed_out = True
                if p.task is not None:
                    p.task.cancel()

    def _flush_traffic(self) -> None:
        counts = self._traffic.drain()
        if counts:
            self._writer.count(counts)
        self._metrics.shadow_queue.set(("store",), self._writer.depth())
        publish_store_metrics(self._writer, self._metrics)

    @property
    def writer(self) -> StoreWriter:
        """The store writer (the shadow worker reads which rows it has settled)."""
        return self._writer

    # --- shutdown ------------------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop mirroring, let in-flight candidates finish, compare what is queued and flush it all to disk."""
        if self._closing:
            return
        self._closing = True
        self._flusher.cancel()
        deadline = self._limits.close_deadline
        ends = self._loop.time() + deadline
        # Copies waiting for a slot start as running ones finish: wait until none runs, or the deadline.
        while self._tasks and (left := ends - self._loop.time()) > 0:
            await self._tasks.wait(left)
        if self._tasks or self._waiting:
            log.warning("shadow: candidates still running after %.1fs; cancelling them", deadline)
        self._slots_closed = True
        waiting, self._waiting = self._waiting, deque()
        for p in waiting:  # never sent: their rows say so
            self._active -= 1
            self.recorder.record_skip(p.start, "dropped", "shutdown", p.pair)
        await self._tasks.close()
        await self._background.close()
        await self.recorder.close()
        self._flush_traffic()
        await asyncio.to_thread(self._writer.close)
        await self._pools.close()


def shadow_listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
    """A `proxy.app` listeners factory: the shadow listener on `--db` (state.db_path), else the config's store.path."""
    return [ShadowListener.create(state.config, state.metrics, state.db_path)]
