"""Mirror requests to the other side, compare the pair off the event loop, and hand records to the store.

`ShadowListener` is an `proxy.events.ExchangeListener`: the proxy core calls it for every request and never waits
for it. The client never pays for the shadow side:
- the candidate request starts when the primary starts (fair latency), on its own connection pools, and nothing the
  candidate does (down, slow, 500, Set-Cookie) reaches the client;
- concurrency is capped and the waiting room is bounded: past it, the shadow is dropped and counted;
- a mirrored request is sent at most once (`retry_stale=False`);
- comparison (deepdiff on mismatches) and redaction run in one worker thread behind a bounded queue, storage in the
  store's writer thread; the event loop only starts requests, reads bodies and updates metrics.
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
from typing import Any

from proxy.config import SAFE_METHODS, Config, Mirror, Redact, Route, Upstream
from proxy.events import ExchangeListener, ExchangeStart, Headers, ResponseSnapshot, Side
from proxy.headers import end_to_end_response_headers
from proxy.metrics import Counter, Metrics
from proxy.state import RuntimeState
from proxy.tasks import TaskOwner
from proxy.transport import UpstreamError, UpstreamPool
from shadow.compare import judge_pair
from shadow.model import Comparison, Outcome, Pair
from shadow.records import TrafficTally, exchange_record, unpaired_record
from shadow.redact import Redactor, key_path_for, load_or_create_key
from shadow.store import StoreWriter

log = logging.getLogger("strangler.shadow")

DRY_RUN_HEADER = "X-Strangler-Dry-Run"
SENT_METRIC = "strangler_shadow_requests_total"
TRAFFIC_FLUSH = 1.0  # seconds between traffic-count flushes to the store


@dataclass(frozen=True, slots=True)
class ShadowLimits:
    """How much shadow work may be under way at once; past both, new shadows are dropped and counted."""

    max_concurrency: int = 64  # candidate requests in flight
    max_waiting: int = 256  # candidates waiting for a slot
    compare_queue: int = 10_000  # pairs waiting for the compare thread
    response_cap: int = 4 * 1024 * 1024  # response bytes read from a candidate for comparison
    close_deadline: float = 10.0  # on shutdown, seconds in-flight candidates get before they are cancelled


@dataclass(slots=True)
class _Pending:
    """One mirrored exchange waiting for both sides."""

    start: ExchangeStart
    route: Route
    mirror: Mirror
    pair: Pair
    primary: ResponseSnapshot | None = None
    candidate: ResponseSnapshot | None = None


class _Observer:
    """Hears how the primary ended; for a mirrored exchange also completes the pair."""

    __slots__ = ("_listener", "_pending", "_start")

    def __init__(self, listener: ShadowListener, start: ExchangeStart, pending: list[_Pending]) -> None:
        self._listener = listener
        self._start = start
        self._pending = pending

    def primary_done(self, primary: ResponseSnapshot) -> None:
        self._listener._traffic.add(self._start, primary)
        for p in self._pending:
            p.primary = primary
            if p.candidate is not None:
                self._listener._pair_ready(p)


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
        self._sent = _extra_counter(
            metrics,
            SENT_METRIC,
            "Copies sent to the other side, by route and pair (candidate, noise).",
            ("route", "pair"),
        )
        self._writer = writer
        self._key = key
        self._redactors: dict[Redact, Redactor] = {}  # one per redaction rule set: reloads may change the rules
        self._limits = limits
        self._rand = rand
        self._tasks = TaskOwner("shadow")
        self._pools: dict[tuple[str, str], UpstreamPool] = {}
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._active = 0  # candidate tasks started and not finished: in flight plus waiting for a slot
        self._closing = False
        self._traffic = TrafficTally()
        self._compare_q: queue.Queue[_Pending | None] = queue.Queue(maxsize=limits.compare_queue)
        self._compare_thread = threading.Thread(target=self._compare_loop, name="strangler-compare", daemon=True)
        self._compare_thread.start()
        self._flusher = self._tasks.start(self._flush_traffic_every(TRAFFIC_FLUSH), name="shadow-traffic-flush")

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

    def request_received(self, start: ExchangeStart) -> _Observer:
        route = start.route
        pending: list[_Pending] = []
        if route is None or self._closing:
            return _Observer(self, start, pending)
        mirror = start.mirror
        if mirror is None:
            reason = _skip_reason(route, start)
            if reason is not None:
                self._record_skip(start, "skipped", reason)
        elif mirror.sample >= 1.0 or self._rand() < mirror.sample:
            if start.request.body is None:  # the handler could not hold it: larger than mirror.max_body
                self._record_skip(start, "skipped", "request_too_large")
            else:
                self._mirror(start, mirror, "candidate", pending)
        # Noise: a second legacy call of a safe, legacy-served request, compared legacy vs legacy.
        if (
            mirror is not None
            and route.noise.sample > 0
            and start.served_by == "legacy"
            and start.request.method in SAFE_METHODS
            and start.request.body is not None
            and self._rand() < route.noise.sample
        ):
            self._mirror(start, mirror, "noise", pending)
        return _Observer(self, start, pending)

    # --- mirroring ----------------------------------------------------------------------------------------------

    def _mirror(self, start: ExchangeStart, mirror: Mirror, pair: Pair, pending: list[_Pending]) -> None:
        route = start.route
        assert route is not None
        if self._active >= self._limits.max_concurrency + self._limits.max_waiting:
            self._record_skip(start, "dropped", "queue_full", pair)
            return
        name = route.upstream if pair == "candidate" and start.served_by == "legacy" else route.legacy
        upstream = start.config.upstreams.get(name)
        if upstream is None:
            self._record_skip(start, "skipped", "unknown_upstream", pair)
            return
        p = _Pending(start, route, mirror, pair)
        self._active += 1
        self._sent.inc((route.id, pair))
        _ = self._tasks.start(self._send(p, upstream), name=f"shadow-{route.id}")
        self._metrics.shadow_queue.set(("candidates",), self._active)
        pending.append(p)

    def _pool(self, upstream: Upstream) -> UpstreamPool:
        key = (upstream.name, str(upstream.url))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = UpstreamPool(upstream.url, max_connections=self._limits.max_concurrency)
        return pool

    async def _send(self, p: _Pending, upstream: Upstream) -> None:
        try:
            async with self._slots:
                snapshot = await self._fetch(p, upstream)
        except asyncio.CancelledError:
            self._record_skip(p.start, "dropped", "shutdown", p.pair)
            raise
        finally:
            self._active -= 1
        p.candidate = snapshot
        if p.primary is not None:
            self._pair_ready(p)

    async def _fetch(self, p: _Pending, upstream: Upstream) -> ResponseSnapshot:
        req = p.start.request
        side: Side = "new" if p.start.served_by == "legacy" and p.pair == "candidate" else "legacy"
        headers = _candidate_headers(req.headers, upstream, req.host, p.mirror, req.method)
        target = upstream.url.raw_path.rstrip("/") + req.path + (("?" + req.query_string) if req.query_string else "")
        began = self._loop.time()
        timeout = p.mirror.timeout
        try:
            async with asyncio.timeout(timeout):
                resp = await self._pool(upstream).request(
                    req.method,
                    target,
                    headers,
                    req.body,
                    content_length=len(req.body) if req.body is not None else None,
                    connect_timeout=min(timeout, p.start.config.defaults.timeouts.connect),
                    read_timeout=timeout,
                    retry_stale=False,  # a mirrored request is sent at most once, even on a stale connection
                )
                try:
                    chunks: list[bytes] = []
                    size = 0
                    complete = True
                    while chunk := await resp.read():
                        size += len(chunk)
                        if size > self._limits.response_cap:
                            complete = False
                            break
                        chunks.append(chunk)
                finally:
                    resp.close()  # an unfinished body discards the connection
        except UpstreamError as exc:
            return _failed(side, upstream.name, exc.kind, self._loop.time() - began)
        except TimeoutError:
            return _failed(side, upstream.name, "timeout", self._loop.time() - began)
        except Exception:  # anything else still completes the pair, so no exchange goes unrecorded
            log.exception("shadow request to %s failed", upstream.name)
            return _failed(side, upstream.name, "error", self._loop.time() - began)
        headers_in = tuple(end_to_end_response_headers(resp.raw_headers))  # as a client would get them
        latency = self._loop.time() - began
        return ResponseSnapshot(side, upstream.name, resp.status, headers_in, b"".join(chunks), complete, latency)

    # --- pairing, comparing, recording -------------------------------------------------------------------------

    def _pair_ready(self, p: _Pending) -> None:
        try:
            self._compare_q.put_nowait(p)
        except queue.Full:
            self._record_skip(p.start, "dropped", "compare_queue_full", p.pair)
        self._metrics.shadow_queue.set(("compare",), self._compare_q.qsize())

    def _compare_loop(self) -> None:
        while (p := self._compare_q.get()) is not None:
            try:
                self._compare_and_record(p)
            except Exception:  # a bad pair must never stop the thread, nor go unrecorded
                log.exception("comparing a shadow pair failed")
                self._record_skip(p.start, "skipped", "compare_failed", p.pair, on_loop=False)

    def _compare_and_record(self, p: _Pending) -> None:
        primary, candidate = p.primary, p.candidate
        assert primary is not None
        assert candidate is not None
        # A noise pair is legacy vs a second legacy call; the second call sits on the record's "new" side.
        candidate_is_new = p.pair == "noise" or p.start.served_by == "legacy"
        legacy, new = (primary, candidate) if candidate_is_new else (candidate, primary)
        comparison: Comparison | None = None
        reason: str | None
        outcome: Outcome
        if p.pair == "candidate" and primary.side == candidate.side:
            # The new side failed and the route fell back: legacy answered both, nothing to learn from the pair.
            outcome, reason = "skipped", "primary_fell_back"
        else:
            outcome, reason, comparison = judge_pair(
                primary, candidate, p.route.compare, candidate_is_new=candidate_is_new
            )
        keep_bodies = outcome != "match" or self._rand() < p.start.config.store.sample_matches
        redactor = self._redactor(p.start.config.store.redact)
        record = exchange_record(
            p.start, p.pair, legacy, new, outcome, reason, comparison, redactor, keep_bodies=keep_bodies
        )
        self._writer.submit(record)
        seconds = comparison.seconds if comparison is not None else None
        self._call_on_loop(self._count_outcome, p.route.id, outcome, reason, seconds)

    def _redactor(self, rules: Redact) -> Redactor:
        r = self._redactors.get(rules)
        if r is None:
            r = self._redactors[rules] = Redactor(self._key, rules)
        return r

    def _record_skip(
        self, start: ExchangeStart, outcome: Outcome, reason: str, pair: Pair = "candidate", *, on_loop: bool = True
    ) -> None:
        route = start.route
        assert route is not None
        if on_loop:
            self._count_outcome(route.id, outcome, reason, None)
        else:
            self._call_on_loop(self._count_outcome, route.id, outcome, reason, None)
        redactor = self._redactor(start.config.store.redact)
        self._writer.submit(unpaired_record(start, pair, outcome, reason, redactor))

    # --- metrics: only ever touched on the event loop (the registry is plain dicts) ----------------------------

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending, metrics no longer matter
            self._loop.call_soon_threadsafe(fn, *args)

    def _count_outcome(self, route_id: str, outcome: Outcome, reason: str | None, seconds: float | None) -> None:
        metrics = self._metrics
        metrics.shadow.inc((route_id, outcome, reason or ""))
        if seconds is not None:
            metrics.compare_time.observe((route_id,), seconds)
        metrics.shadow_queue.set(("compare",), self._compare_q.qsize())
        metrics.shadow_queue.set(("store",), self._writer.depth())
        metrics.shadow_queue.set(("candidates",), self._active)

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
        await asyncio.to_thread(self._compare_q.put, None)  # may wait for room: never block the loop on it
        await asyncio.to_thread(self._compare_thread.join)
        self._flush_traffic()
        await asyncio.to_thread(self._writer.close)
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # run the metric updates the compare thread scheduled last


def shadow_listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
    """A `proxy.app` listeners factory: the shadow listener on `--db` (state.db_path), else the config's store.path."""
    return [ShadowListener.create(state.config, state.metrics, state.db_path)]


def _extra_counter(metrics: Metrics, name: str, help: str, labels: tuple[str, ...]) -> Counter:
    """A counter in `metrics.extra`, created once per registry (several listeners may share one)."""
    for metric in metrics.extra:
        if metric.name == name and isinstance(metric, Counter):
            return metric
    counter = Counter(name, help, labels)
    metrics.extra.append(counter)
    return counter


def _failed(side: Side, upstream: str, error: str, latency: float) -> ResponseSnapshot:
    return ResponseSnapshot(side, upstream, 0, (), None, False, latency, error)


def _skip_reason(route: Route, start: ExchangeStart) -> str | None:
    """Why a request on a mirroring route was not mirrored; None when the route does not mirror this side."""
    if start.served_by == "legacy":
        opts = route.shadow if route.mode in ("shadow", "canary") else None
    else:
        opts = route.verify if route.mode == "new" else None
    if opts is None:
        return None
    if start.request.method not in opts.methods:
        return "method_not_mirrored"
    return "side_effects_blocked"


_NOT_FORWARDED = frozenset({"host", DRY_RUN_HEADER.lower()})


def _candidate_headers(headers: Headers, upstream: Upstream, client_host: str, mirror: Mirror, method: str) -> Headers:
    """The primary's forwarded headers for the other upstream: its Host, the shadow mark, the dry-run mark.

    A client's own copies of the mark headers are dropped, so only strangler decides what a candidate sees.
    """
    host = client_host if upstream.host_header == "preserve" else _host_of(upstream)
    mark = mirror.header.lower()
    out = [(k, v) for k, v in headers if (name := k.lower()) not in _NOT_FORWARDED and name != mark]
    out.append(("Host", host))
    out.append((mirror.header, "1"))
    if mirror.side_effects == "dry_run" and method not in SAFE_METHODS:
        out.append((DRY_RUN_HEADER, "1"))
    return tuple(out)


def _host_of(upstream: Upstream) -> str:
    url = upstream.url
    default = 443 if url.scheme == "https" else 80
    return f"{url.host}:{url.port}" if url.port not in (None, default) else str(url.host)
