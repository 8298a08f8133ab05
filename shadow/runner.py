"""Mirror requests to the other side, compare the pair off the event loop, and hand records to the store.

`ShadowListener` is an `proxy.events.ExchangeListener`: the proxy core calls it for every request and never waits
for it. The client never pays for the shadow side:
- the candidate request starts when the primary starts (fair latency), on its own connection pools, and nothing the
  candidate does (down, slow, 500, Set-Cookie) reaches the client;
- concurrency is capped and the waiting room is bounded: past it, the shadow is dropped and counted;
- a mirrored request is sent at most once (`retry_stale=False`);
- pairs the fast path can judge (matches, failures; small bodies) are judged and recorded on the loop, in one
  handoff every `HANDOFF` seconds; only the rest cross to the compare thread (deepdiff, never on the loop), in
  batches, and metrics come back the same way. Storage runs in the store's writer thread.

Cheap on purpose, since it runs for every request: routes that mirror nothing cost the core one `wants_exchange`
and one `request_served` call (no snapshots). Every wake-up of a thread must win the GIL back from the busy loop,
which costs both threads far more than the work itself, so threads wake per batch, never per request; and a
candidate's deadline is enforced by one sweeper rather than a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.config import Config, Mirror, Redact, Route, Upstream
from proxy.events import ExchangeListener, ExchangeObserver, ExchangeStart, ResponseSnapshot, Side
from proxy.metrics import Counter, Metrics
from proxy.state import RuntimeState
from proxy.tasks import TaskOwner
from shadow.compare import judge_pair, judge_pair_quick
from shadow.fetch import CandidatePools, fetch_copy
from shadow.model import Comparison, ExchangeRecord, Outcome, Pair, TrafficCount
from shadow.plan import MirrorPlan, mirror_options, plan_mirror
from shadow.records import TrafficTally, exchange_record, unpaired_record
from shadow.redact import Redactor, key_path_for, load_or_create_key
from shadow.store_writer import StoreWriter

log = logging.getLogger("strangler.shadow")

SENT_METRIC = "strangler_shadow_requests_total"
TRAFFIC_FLUSH = 1.0  # seconds between traffic-count flushes to the store
HANDOFF = 0.01  # seconds finished pairs (and records made on the loop) gather before crossing to a thread
SWEEP = 0.05  # seconds between checks for candidates past their deadline (the precision of `timeout`)
# Pairs whose bodies are both at most this size are judged on the loop when no field-by-field comparison is needed
# (matches, failures): the fast path costs microseconds, less than waking the compare thread for them.
LOOP_JUDGE_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class ShadowLimits:
    """How much shadow work may be under way at once; past both, new shadows are dropped and counted."""

    max_concurrency: int = 64  # candidate requests in flight
    max_waiting: int = 256  # candidates waiting for a slot
    compare_queue: int = 10_000  # pairs waiting for the compare thread
    response_cap: int = 4 * 1024 * 1024  # response bytes read from a candidate for comparison
    close_deadline: float = 10.0  # on shutdown, seconds in-flight candidates get before they are cancelled


# (route id, outcome, reason, compare seconds): one metric update, made in a thread and applied on the loop.
_Tally = tuple[str, Outcome, str | None, float | None]


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
    )

    def __init__(
        self, listener: ShadowListener, start: ExchangeStart, route: Route, mirror: Mirror, pair: Pair
    ) -> None:
        self.listener = listener
        self.start = start
        self.route = route
        self.mirror = mirror
        self.pair: Pair = pair
        self.primary: ResponseSnapshot | None = None
        self.candidate: ResponseSnapshot | None = None
        self.task: asyncio.Task[None] | None = None
        self.deadline = 0.0  # loop.time() past which the sweeper cancels the candidate (set once it has a slot)
        self.timed_out = False

    def primary_done(self, primary: ResponseSnapshot) -> None:
        self.primary = primary
        if self.candidate is not None:
            self.listener._pair_ready(self)


class _Both:
    """The observer of an exchange mirrored twice (candidate and noise)."""

    __slots__ = ("_pending",)

    def __init__(self, *pending: _Pending) -> None:
        self._pending = pending

    def primary_done(self, primary: ResponseSnapshot) -> None:
        for p in self._pending:
            p.primary_done(primary)


class ShadowListener:
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
        self._sent = extra_counter(
            metrics,
            SENT_METRIC,
            "Copies sent to the other side, by route and pair (candidate, noise).",
            ("route", "pair"),
        )
        self._writer = writer
        self._key = key
        self._redactors: dict[Redact, Redactor] = {}  # one per redaction rule set: reloads may change the rules
        self._limits = limits
        self._max_active = limits.max_concurrency + limits.max_waiting
        self._rand = rand
        self._tasks = TaskOwner("shadow")  # candidate requests
        self._background = TaskOwner("shadow-background")  # the traffic flusher and the deadline sweeper
        # id(upstream) -> it, its pool, its base path, the Host a copy to it carries (unless preserved)
        self._pools = CandidatePools(limits.max_concurrency)
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._active = 0  # candidate tasks started and not finished: in flight plus waiting for a slot
        self._in_flight: set[_Pending] = set()  # candidates holding a slot, watched by the deadline sweeper
        self._closing = False
        self._traffic = TrafficTally()
        # Gathered on the loop, handed over together: pairs to the compare thread, records to the writer.
        self._ready: list[_Pending] = []
        self._loop_records: list[ExchangeRecord] = []
        self._handoff: asyncio.TimerHandle | None = None
        self._handed = 0  # pairs handed to the compare thread (written on the loop only)
        self._compared = 0  # pairs it has finished (written by the compare thread only)
        self._compare_q: queue.SimpleQueue[list[_Pending] | None] = queue.SimpleQueue()
        self._compare_thread = threading.Thread(target=self._compare_loop, name="strangler-compare", daemon=True)
        self._compare_thread.start()
        self._flusher = self._background.start(self._flush_traffic_every(TRAFFIC_FLUSH), name="shadow-traffic-flush")
        _ = self._background.start(self._sweep_every(SWEEP), name="shadow-deadlines")

    @classmethod
    def create(
        cls, config: Config, metrics: Metrics, db: str | Path | None = None, *, limits: ShadowLimits = ShadowLimits()
    ) -> ShadowListener:
        """The listener for a config: its store (`db`, else `store.path`) and the redaction key beside the store."""
        path = Path(db) if db else config.store.path
        writer = StoreWriter(path, retention=config.store.retention)
        try:
            key = load_or_create_key(key_path_for(path))
        except (OSError, ValueError):
            writer.close()
            raise
        return cls(metrics=metrics, writer=writer, key=key, limits=limits)

    # --- the listener protocol: called on the event loop, must return at once -------------------------------

    def wants_exchange(self, route: Route | None, served_by: Side, method: str) -> bool:
        """Only requests on a route that mirrors their side: the rest are just counted (`request_served`)."""
        return route is not None and not self._closing and mirror_options(route, served_by) is not None

    def request_served(
        self, route: Route | None, served_by: Side, method: str, path: str, status: int, failed: bool, latency: float
    ) -> None:
        self._traffic.add(route, served_by, method, path, failed, latency)

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
            self._record_skip(start, "skipped", plan.skip)
        mirror = start.mirror
        if mirror is None:
            return None
        candidate = self._mirror(start, route, mirror, "candidate") if plan.candidate else None
        noise = self._mirror(start, route, mirror, "noise") if plan.noise else None
        if noise is not None:
            return noise if candidate is None else _Both(candidate, noise)
        return candidate

    def add_traffic(self, counts: Sequence[TrafficCount]) -> None:
        """Traffic counts tallied elsewhere (the proxy process, when this runs in a shadow worker)."""
        if counts:
            self._writer.count(counts)

    # --- mirroring ----------------------------------------------------------------------------------------------

    def _mirror(self, start: ExchangeStart, route: Route, mirror: Mirror, pair: Pair) -> _Pending | None:
        if self._active >= self._max_active:
            self._record_skip(start, "dropped", "queue_full", pair)
            return None
        name = route.upstream if pair == "candidate" and start.served_by == "legacy" else route.legacy
        upstream = start.config.upstreams.get(name)
        if upstream is None:
            self._record_skip(start, "skipped", "unknown_upstream", pair)
            return None
        p = _Pending(self, start, route, mirror, pair)
        self._active += 1
        self._sent.inc((route.id, pair))
        p.task = self._tasks.start(self._send(p, upstream), name="shadow-candidate")
        self._metrics.shadow_queue.set(("candidates",), self._active)
        return p

    async def _send(self, p: _Pending, upstream: Upstream) -> None:
        try:
            async with self._slots:
                p.deadline = self._loop.time() + p.mirror.timeout
                self._in_flight.add(p)
                try:
                    snapshot = await self._fetch(p, upstream)
                finally:
                    self._in_flight.discard(p)
        except asyncio.CancelledError:
            self._record_skip(p.start, "dropped", "shutdown", p.pair)
            raise
        finally:
            self._active -= 1
        p.candidate = snapshot
        if p.primary is not None:
            self._pair_ready(p)

    async def _fetch(self, p: _Pending, upstream: Upstream) -> ResponseSnapshot:
        side: Side = "new" if p.start.served_by == "legacy" and p.pair == "candidate" else "legacy"
        target = self._pools.get(upstream)
        return await fetch_copy(target, upstream, p.start, p.mirror, side, self._limits.response_cap, p)

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

    # --- pairing, comparing, recording -------------------------------------------------------------------------

    def _pair_ready(self, p: _Pending) -> None:
        self._ready.append(p)
        self._schedule_handoff()

    def _schedule_handoff(self) -> None:
        if self._handoff is None:
            self._handoff = self._loop.call_later(HANDOFF, self._hand_over)

    def _hand_over(self) -> None:
        """Judge the pairs gathered since the last handoff that the fast path can (matches, failures) and record
        them; send the rest to the compare thread and every record to the writer, each in one go."""
        self._handoff = None
        ready, self._ready = self._ready, []
        if ready:
            ready = self._judge_on_loop(ready)
        if ready:
            room = self._limits.compare_queue - (self._handed - self._compared)
            if len(ready) > room:
                for p in ready[max(room, 0) :]:
                    self._record_skip(p.start, "dropped", "compare_queue_full", p.pair)
                del ready[max(room, 0) :]
            if ready:
                self._handed += len(ready)
                self._compare_q.put(ready)
        records, self._loop_records = self._loop_records, []
        if records:
            self._writer.submit_many(records)
        self._metrics.shadow_queue.set(("compare",), self._handed - self._compared)

    def _judge_on_loop(self, ready: list[_Pending]) -> list[_Pending]:
        """Record the pairs judged without deepdiff; returns the ones the compare thread must look at."""
        slow: list[_Pending] = []
        tallies: list[_Tally] = []
        records = self._loop_records
        for p in ready:
            primary, candidate = p.primary, p.candidate
            assert primary is not None
            assert candidate is not None
            try:
                if p.pair == "candidate" and primary.side == candidate.side:
                    judged: tuple[Outcome, str | None, Comparison | None] | None = (
                        "skipped",
                        "primary_fell_back",
                        None,
                    )
                elif len(primary.body or b"") > LOOP_JUDGE_MAX or len(candidate.body or b"") > LOOP_JUDGE_MAX:
                    judged = None
                else:
                    judged = judge_pair_quick(
                        primary, candidate, p.route.compare, candidate_is_new=self._candidate_is_new(p)
                    )
                if judged is None:
                    slow.append(p)
                    continue
                records.append(self._record(p, *judged, tallies))
            except Exception:  # a bad pair must never break the loop's handoff, nor go unrecorded
                log.exception("judging a shadow pair failed")
                self._record_skip(p.start, "skipped", "compare_failed", p.pair)
        if tallies:
            self._count_outcomes(tallies)
        return slow

    @staticmethod
    def _candidate_is_new(p: _Pending) -> bool:
        # A noise pair is legacy vs a second legacy call; the second call sits on the record's "new" side.
        return p.pair == "noise" or p.start.served_by == "legacy"

    def _compare_loop(self) -> None:
        while (batch := self._compare_q.get()) is not None:
            records: list[ExchangeRecord] = []
            tallies: list[_Tally] = []
            for p in batch:
                try:
                    records.append(self._compare_and_record(p, tallies))
                except Exception:  # a bad pair must never stop the thread, nor go unrecorded
                    log.exception("comparing a shadow pair failed")
                    redactor = self._redactor(p.start.config.store.redact)
                    records.append(unpaired_record(p.start, p.pair, "skipped", "compare_failed", redactor))
                    tallies.append((p.route.id, "skipped", "compare_failed", None))
            self._writer.submit_many(records)
            self._compared += len(batch)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
                self._loop.call_soon_threadsafe(self._count_outcomes, tallies)

    def _compare_and_record(self, p: _Pending, tallies: list[_Tally]) -> ExchangeRecord:
        """In the compare thread: the full judgement (deepdiff on mismatches) and the record."""
        primary, candidate = p.primary, p.candidate
        assert primary is not None
        assert candidate is not None
        if p.pair == "candidate" and primary.side == candidate.side:
            # The new side failed and the route fell back: legacy answered both, nothing to learn from the pair.
            return self._record(p, "skipped", "primary_fell_back", None, tallies)
        judged = judge_pair(primary, candidate, p.route.compare, candidate_is_new=self._candidate_is_new(p))
        return self._record(p, *judged, tallies)

    def _record(
        self,
        p: _Pending,
        outcome: Outcome,
        reason: str | None,
        comparison: Comparison | None,
        tallies: list[_Tally],
    ) -> ExchangeRecord:
        """The redacted record of a judged pair (bodies kept for all but an unsampled match); tallied."""
        primary, candidate = p.primary, p.candidate
        assert primary is not None
        assert candidate is not None
        legacy, new = (primary, candidate) if self._candidate_is_new(p) else (candidate, primary)
        keep_bodies = outcome != "match" or self._rand() < p.start.config.store.sample_matches
        redactor = self._redactor(p.start.config.store.redact)
        record = exchange_record(
            p.start, p.pair, legacy, new, outcome, reason, comparison, redactor, keep_bodies=keep_bodies
        )
        tallies.append((p.route.id, outcome, reason, comparison.seconds if comparison is not None else None))
        return record

    def _redactor(self, rules: Redact) -> Redactor:
        r = self._redactors.get(rules)
        if r is None:
            r = self._redactors[rules] = Redactor(self._key, rules)
        return r

    def _record_skip(self, start: ExchangeStart, outcome: Outcome, reason: str, pair: Pair = "candidate") -> None:
        """On the loop: count at once, and queue the record for the next handoff."""
        route = start.route
        assert route is not None
        self._count_outcome(route.id, outcome, reason, None)
        redactor = self._redactor(start.config.store.redact)
        self._loop_records.append(unpaired_record(start, pair, outcome, reason, redactor))
        self._schedule_handoff()

    # --- metrics: only ever touched on the event loop (the registry is plain dicts) ----------------------------

    def _count_outcome(self, route_id: str, outcome: Outcome, reason: str | None, seconds: float | None) -> None:
        metrics = self._metrics
        metrics.shadow.inc((route_id, outcome, reason or ""))
        if seconds is not None:
            metrics.compare_time.observe((route_id,), seconds)
        self._set_depths()

    def _count_outcomes(self, tallies: list[_Tally]) -> None:
        shadow, compare_time = self._metrics.shadow, self._metrics.compare_time
        for route_id, outcome, reason, seconds in tallies:
            shadow.inc((route_id, outcome, reason or ""))
            if seconds is not None:
                compare_time.observe((route_id,), seconds)
        self._set_depths()

    def _set_depths(self) -> None:
        depth = self._metrics.shadow_queue
        depth.set(("compare",), self._handed - self._compared)
        depth.set(("store",), self._writer.depth())
        depth.set(("candidates",), self._active)

    async def _flush_traffic_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self._flush_traffic()

    def _flush_traffic(self) -> None:
        counts = self._traffic.drain()
        if counts:
            self._writer.count(counts)
        self._metrics.shadow_queue.set(("store",), self._writer.depth())

    # --- shutdown ------------------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop mirroring, let in-flight candidates finish, compare what is queued and flush it all to disk."""
        if self._closing:
            return
        self._closing = True
        self._flusher.cancel()
        deadline = self._limits.close_deadline
        if not await self._tasks.wait(deadline):
            log.warning("shadow: candidates still running after %.1fs; cancelling them", deadline)
        await self._tasks.close()
        await self._background.close()
        if self._handoff is not None:
            self._handoff.cancel()
        self._hand_over()
        self._compare_q.put(None)
        await asyncio.to_thread(self._compare_thread.join)
        self._flush_traffic()
        await asyncio.to_thread(self._writer.close)
        await self._pools.close()
        await asyncio.sleep(0)  # run the metric updates the compare thread scheduled last


def shadow_listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
    """A `proxy.app` listeners factory: the shadow listener on `--db` (state.db_path), else the config's store.path."""
    return [ShadowListener.create(state.config, state.metrics, state.db_path)]


def extra_counter(metrics: Metrics, name: str, help: str, labels: tuple[str, ...]) -> Counter:
    """A counter in `metrics.extra`, created once per registry (several listeners may share one)."""
    for metric in metrics.extra:
        if metric.name == name and isinstance(metric, Counter):
            return metric
    counter = Counter(name, help, labels)
    metrics.extra.append(counter)
    return counter
