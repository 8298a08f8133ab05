"""Mirror requests to the other side, compare the pair off the event loop, and hand records to the store.

`ShadowListener` is an `proxy.events.ExchangeListener`: the proxy core calls it for every request and never waits
for it. The client never pays for the shadow side:
- the candidate request starts when the primary starts (fair latency), on its own connection pools, and nothing the
  candidate does (down, slow, 500, Set-Cookie) reaches the client;
- concurrency is capped and the waiting room is bounded: past it, the shadow is dropped and counted;
- a mirrored request is sent at most once (`retry_stale=False`);
- comparison (deepdiff on mismatches) runs in one worker thread behind a bounded queue, storage in the store's
  writer thread; the event loop only starts requests and reads bodies.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from proxy.config import SAFE_METHODS, Config, Mirror, Route, Upstream
from proxy.events import ExchangeStart, Headers, ResponseSnapshot
from proxy.metrics import Metrics
from proxy.tasks import TaskOwner
from proxy.transport import UpstreamError, UpstreamPool
from shadow.compare import compare_responses
from shadow.model import Comparison, ExchangeRecord, Outcome, Pair, StoredBody, TrafficCount
from shadow.redact import Redactor, load_or_create_key
from shadow.store import StoreWriter

log = logging.getLogger("strangler.shadow")

DRY_RUN_HEADER = "X-Strangler-Dry-Run"
_SKIP_HOST = frozenset({"host"})


@dataclass(frozen=True, slots=True)
class ShadowLimits:
    """How much shadow work may be under way at once; past both, new shadows are dropped and counted."""

    max_concurrency: int = 64  # candidate requests in flight
    max_waiting: int = 256  # candidates waiting for a slot
    compare_queue: int = 10_000  # pairs waiting for the compare thread
    response_cap: int = 4 * 1024 * 1024  # response bytes read from a candidate for comparison


@dataclass(slots=True)
class _Pending:
    """One mirrored exchange waiting for both sides."""

    start: ExchangeStart
    route: Route
    mirror: Mirror
    pair: Pair
    primary: ResponseSnapshot | None = None
    candidate: ResponseSnapshot | None = None
    done: Callable[[_Pending], None] | None = None


@dataclass(slots=True)
class _Traffic:
    """Per-minute request counts by route and side, flushed to the store with the next batch."""

    counts: dict[tuple[int, str, str, str, str, str], list[float]] = field(default_factory=dict)

    def add(self, key: tuple[int, str, str, str, str, str], error: bool, latency_ms: float) -> None:
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = [0.0, 0.0, 0.0]
        row[0] += 1
        row[1] += error
        row[2] += latency_ms

    def drain(self) -> list[TrafficCount]:
        counts, self.counts = self.counts, {}
        return [
            TrafficCount(minute, route_id, mode, served_by, method, path, int(c), int(e), lat)  # type: ignore[arg-type]
            for (minute, route_id, mode, served_by, method, path), (c, e, lat) in counts.items()
        ]


class _Observer:
    """Hears how the primary ended; for a mirrored exchange also completes the pair."""

    __slots__ = ("_listener", "_pending", "_start")

    def __init__(self, listener: ShadowListener, start: ExchangeStart, pending: list[_Pending]) -> None:
        self._listener = listener
        self._start = start
        self._pending = pending

    def primary_done(self, primary: ResponseSnapshot) -> None:
        self._listener._count_traffic(self._start, primary)
        for p in self._pending:
            p.primary = primary
            if p.candidate is not None:
                self._listener._pair_ready(p)


class ShadowListener:
    """The shadow side of strangler, attached to a running proxy."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        writer: StoreWriter,
        redactor: Redactor,
        limits: ShadowLimits = ShadowLimits(),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._metrics = metrics
        self._writer = writer
        self._redactor = redactor
        self._limits = limits
        self._rand = rand
        self._tasks = TaskOwner("shadow")
        self._pools: dict[tuple[str, str], UpstreamPool] = {}
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._waiting = 0
        self._closing = False
        self._traffic = _Traffic()
        self._traffic_lock = threading.Lock()
        self._compare_q: queue.Queue[_Pending | None] = queue.Queue(maxsize=limits.compare_queue)
        self._compare_thread = threading.Thread(target=self._compare_loop, name="strangler-compare", daemon=True)
        self._compare_thread.start()
        self._flusher = self._tasks.start(self._flush_traffic_every(1.0), name="shadow-traffic-flush")

    @classmethod
    def create(cls, config: Config, metrics: Metrics, db: Path | None = None) -> ShadowListener:
        """The listener for a config: its store (`db` or `store.path`) and its redaction key beside the store."""
        path = db or config.store.path
        writer = StoreWriter(path, retention=config.store.retention)
        key = load_or_create_key(Path(str(path) + ".key"))
        return cls(metrics=metrics, writer=writer, redactor=Redactor(key, config.store.redact))

    # --- the listener protocol: called on the event loop, must return at once -------------------------------

    def request_received(self, start: ExchangeStart) -> _Observer:
        route = start.route
        if route is None or self._closing:
            return _Observer(self, start, [])
        pending: list[_Pending] = []
        mirror = start.mirror
        if mirror is None:
            reason = _skip_reason(route, start)
            if reason is not None:
                self._record_skip(start, route, "skipped", reason)
        elif mirror.sample >= 1.0 or self._rand() < mirror.sample:
            if start.request.body is None and start.request.body_note == "too_large":
                self._record_skip(start, route, "skipped", "request_too_large")
            else:
                p = self._mirror(start, route, mirror, "candidate")
                if p is not None:
                    pending.append(p)
        # Noise: a second legacy call of a safe, legacy-served request, compared legacy vs legacy.
        if (
            route.noise.sample > 0
            and start.mirror is not None
            and start.served_by == "legacy"
            and start.request.method in SAFE_METHODS
            and self._rand() < route.noise.sample
        ):
            p = self._mirror(start, route, start.mirror, "noise")
            if p is not None:
                pending.append(p)
        return _Observer(self, start, pending)

    # --- mirroring ----------------------------------------------------------------------------------------------

    def _mirror(self, start: ExchangeStart, route: Route, mirror: Mirror, pair: Pair) -> _Pending | None:
        if self._waiting >= self._limits.max_waiting:
            self._record_skip(start, route, "dropped", "queue_full")
            return None
        if pair == "candidate":
            name = route.upstream if start.served_by == "legacy" else route.legacy
        else:
            name = route.legacy
        upstream = start.config.upstreams.get(name)
        if upstream is None:
            self._record_skip(start, route, "skipped", "unknown_upstream")
            return None
        p = _Pending(start, route, mirror, pair)
        self._waiting += 1
        self._tasks.start(self._send_candidate(p, upstream), name=f"shadow-{route.id}")
        return p

    def _pool(self, upstream: Upstream) -> UpstreamPool:
        key = (upstream.name, str(upstream.url))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = UpstreamPool(upstream.url, max_connections=self._limits.max_concurrency)
        return pool

    async def _send_candidate(self, p: _Pending, upstream: Upstream) -> None:
        async with self._slots:
            self._waiting -= 1
            snapshot = await self._fetch(p, upstream)
        p.candidate = snapshot
        if p.primary is not None:
            self._pair_ready(p)

    async def _fetch(self, p: _Pending, upstream: Upstream) -> ResponseSnapshot:
        req = p.start.request
        side = "new" if p.start.served_by == "legacy" and p.pair == "candidate" else "legacy"
        headers = _candidate_headers(req.headers, upstream, req.host, p.mirror, req.method)
        target = upstream.url.raw_path.rstrip("/") + req.path + (("?" + req.query_string) if req.query_string else "")
        loop = asyncio.get_running_loop()
        began = loop.time()
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
                    retry_stale=False,  # a mirrored request is sent at most once
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
                    resp.close()
            return ResponseSnapshot(
                side,  # type: ignore[arg-type]
                upstream.name,
                resp.status,
                tuple(resp.headers.items()),
                b"".join(chunks),
                complete,
                loop.time() - began,
            )
        except UpstreamError as exc:
            return _failed(side, upstream.name, exc.kind, loop.time() - began)
        except TimeoutError:
            return _failed(side, upstream.name, "timeout", loop.time() - began)

    # --- pairing, comparing, recording -------------------------------------------------------------------------

    def _pair_ready(self, p: _Pending) -> None:
        try:
            self._compare_q.put_nowait(p)
        except queue.Full:
            self._record_skip(p.start, p.route, "dropped", "compare_queue_full")
        self._metrics.shadow_queue.set(("compare",), self._compare_q.qsize())

    def _compare_loop(self) -> None:
        while True:
            p = self._compare_q.get()
            try:
                if p is None:
                    return
                self._compare_and_record(p)
            except Exception:  # a bad pair must never stop the thread
                log.exception("comparing a shadow pair failed")
            finally:
                self._compare_q.task_done()

    def _compare_and_record(self, p: _Pending) -> None:
        assert p.primary is not None and p.candidate is not None
        # A noise pair is legacy vs a second legacy call; the second call sits on the record's "new" side.
        if p.pair == "noise" or p.start.served_by == "legacy":
            legacy, new = p.primary, p.candidate
        else:
            legacy, new = p.candidate, p.primary
        route = p.route
        comparison: Comparison | None = None
        reason: str | None = None
        if p.candidate.error is not None or (_is_server_error(p.candidate) and not _is_server_error(p.primary)):
            outcome: Outcome = "candidate_error"
            reason = p.candidate.error or f"status_{p.candidate.status}"
            if p.candidate.error is None:
                comparison = compare_responses(legacy, new, route.compare)
        elif p.primary.error is not None:
            outcome, reason = "skipped", f"primary_{p.primary.error}"
        elif not p.primary.body_complete or not p.candidate.body_complete:
            outcome, reason = "skipped", "response_too_large"
        else:
            comparison = compare_responses(legacy, new, route.compare)
            outcome = comparison.outcome
        if comparison is not None:
            self._metrics.compare_time.observe((route.id,), comparison.seconds)
        self._metrics.shadow.inc((route.id, outcome, reason or ""))
        keep_bodies = outcome != "match" or self._rand() < p.start.config.store.sample_matches
        self._writer.submit(self._record(p, legacy, new, outcome, reason, comparison, keep_bodies))

    def _record(
        self,
        p: _Pending,
        legacy: ResponseSnapshot,
        new: ResponseSnapshot,
        outcome: Outcome,
        reason: str | None,
        comparison: Comparison | None,
        keep_bodies: bool,
    ) -> ExchangeRecord:
        req, r, cap = p.start.request, self._redactor, p.start.config.store.body_cap

        def body(headers: Headers, data: bytes | None) -> StoredBody | None:
            if not keep_bodies or data is None:
                return None
            ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
            clean = r.body(ctype, data)
            return StoredBody(clean[:cap], len(data), len(clean) > cap)

        diffs = tuple(r.difference(d) for d in comparison.differences) if comparison else ()
        return ExchangeRecord(
            time=p.start.started_at,
            route_id=p.route.id,
            mode=p.route.mode,
            pair=p.pair,
            method=req.method,
            template=p.route.match.path,
            path=req.path,
            query=r.query(req.query_string),
            request_id=req.request_id,
            served_by=p.start.served_by,
            outcome=outcome,
            reason=reason,
            legacy_status=legacy.status or None,
            legacy_latency_ms=legacy.latency * 1000,
            legacy_size=len(legacy.body) if legacy.body is not None else None,
            new_status=new.status or None,
            new_latency_ms=new.latency * 1000,
            new_size=len(new.body) if new.body is not None else None,
            compare_ms=comparison.seconds * 1000 if comparison else None,
            request_headers=r.headers(req.headers),
            legacy_headers=r.headers(legacy.headers),
            new_headers=r.headers(new.headers),
            request_body=body(req.headers, req.body),
            legacy_body=body(legacy.headers, legacy.body),
            new_body=body(new.headers, new.body),
            differences=diffs,
        )

    def _record_skip(self, start: ExchangeStart, route: Route, outcome: Outcome, reason: str) -> None:
        self._metrics.shadow.inc((route.id, outcome, reason))
        req = start.request
        self._writer.submit(
            ExchangeRecord(
                time=start.started_at,
                route_id=route.id,
                mode=route.mode,
                pair="candidate",
                method=req.method,
                template=route.match.path,
                path=req.path,
                query=self._redactor.query(req.query_string),
                request_id=req.request_id,
                served_by=start.served_by,
                outcome=outcome,
                reason=reason,
                legacy_status=None,
                legacy_latency_ms=None,
                legacy_size=None,
                new_status=None,
                new_latency_ms=None,
                new_size=None,
            )
        )

    # --- traffic rollup ----------------------------------------------------------------------------------------

    def _count_traffic(self, start: ExchangeStart, primary: ResponseSnapshot) -> None:
        route = start.route
        minute = int(start.started_at) // 60 * 60
        if route is None:
            key = (minute, "", "legacy", "legacy", start.request.method, start.request.path)
        else:
            key = (minute, route.id, route.mode, start.served_by, start.request.method, route.match.path)
        error = primary.error is not None or primary.status >= 500
        with self._traffic_lock:
            self._traffic.add(key, error, primary.latency * 1000)

    async def _flush_traffic_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self._flush_traffic()

    def _flush_traffic(self) -> None:
        with self._traffic_lock:
            counts = self._traffic.drain()
        if counts:
            self._writer.count(counts)
        self._metrics.shadow_queue.set(("store",), self._writer.depth())

    # --- shutdown ------------------------------------------------------------------------------------------------

    async def aclose(self, deadline: float = 10.0) -> None:
        """Stop mirroring, let in-flight candidates finish, compare what is queued and flush it all to disk."""
        self._closing = True
        self._flusher.cancel()
        if not await self._tasks.wait(deadline):
            log.warning("shadow: candidates still running after %.1fs; cancelling them", deadline)
        await self._tasks.close()
        self._compare_q.put(None)
        await asyncio.to_thread(self._compare_thread.join)
        self._flush_traffic()
        await asyncio.to_thread(self._writer.close)
        for pool in self._pools.values():
            await pool.close()


def _failed(side: str, upstream: str, error: str, latency: float) -> ResponseSnapshot:
    return ResponseSnapshot(side, upstream, 0, (), None, False, latency, error)  # type: ignore[arg-type]


def _is_server_error(resp: ResponseSnapshot) -> bool:
    return resp.status >= 500


def _skip_reason(route: Route, start: ExchangeStart) -> str | None:
    """Why a request on a mirroring route was not mirrored; None when the route does not mirror this side."""
    opts = route.shadow if start.served_by == "legacy" else route.verify
    if opts is None or (start.served_by == "legacy" and route.mode not in ("shadow", "canary")):
        return None
    if start.served_by == "new" and route.mode != "new":
        return None
    if start.request.method not in opts.methods:
        return "method_not_mirrored"
    return "side_effects_blocked"


def _candidate_headers(headers: Headers, upstream: Upstream, client_host: str, mirror: Mirror, method: str) -> Headers:
    host = client_host if upstream.host_header == "preserve" else _host_of(upstream)
    out = [(k, v) for k, v in headers if k.lower() not in _SKIP_HOST]
    out.append(("Host", host))
    out.append((mirror.header, "1"))
    if mirror.side_effects == "dry_run" and method not in SAFE_METHODS:
        out.append((DRY_RUN_HEADER, "1"))
    return tuple(out)


def _host_of(upstream: Upstream) -> str:
    url = upstream.url
    default = 443 if url.scheme == "https" else 80
    return f"{url.host}:{url.port}" if url.port not in (None, default) else str(url.host)

