"""Send stored requests again to both sides of their route, compare and store the pairs, and say what changed.

This is how a developer proves a fix without waiting for production traffic: replay the mismatches, and the summary
tells per route and field how many former mismatches now match. Each pair goes through the shadow pipeline's own
parts (`UpstreamPool`, `judge_pair` with the route's compare rules, the `Redactor`, `Store.write_batch`);
stored replays are ordinary candidate exchanges whose request id starts with `replay-`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from proxy.config import Config, Mirror, Route, Upstream
from proxy.events import Headers, ResponseSnapshot, Side
from proxy.headers import HOP_BY_HOP, end_to_end_response_headers, upstream_host
from proxy.methods import SAFE_METHODS
from proxy.transport import UpstreamError, UpstreamPool
from shadow.compare import judge_pair
from shadow.fetch import DRY_RUN_HEADER, read_capped
from shadow.model import Comparison, ExchangeRecord, Outcome, StoredBody
from shadow.origins import route_origins
from shadow.records import compared_record
from shadow.redact import Redactor
from shadow.store import Store
from shadow.store_types import ReplayItem

REPLAY_PREFIX = "replay-"
REPLAY_HEADER = "X-Strangler-Replay"
RESPONSE_CAP = 4 * 1024 * 1024  # response bytes read per side, as live shadowing reads
FETCH_FACTOR = 3  # stored rows read per wanted item: noise pairs and earlier replays are filtered out
# Stored bodies are kept decoded (records.stored_body): a replayed body goes out without its original coding, so
# that coding's header must not go with it.
_NOT_SENT = frozenset({*HOP_BY_HOP, "host", "content-length", "content-encoding", "expect"})


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """A stored request chosen for replay, with what its original comparison found."""

    item: ReplayItem
    route: Route
    before: str  # the original outcome
    before_groups: frozenset[str]  # field groups that differed originally
    request_id: str


@dataclass(frozen=True, slots=True)
class ReplayResult:
    target: ReplayTarget
    after: Outcome
    after_groups: frozenset[str]
    reason: str | None
    record: ExchangeRecord


@dataclass(frozen=True, slots=True)
class Skipped:
    exchange_id: int
    route_id: str
    reason: str  # unsafe_method, route_not_in_config


def select_targets(
    store: Store,
    config: Config,
    *,
    route_id: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    limit: int = 100,
    allow_unsafe: bool = False,
) -> tuple[list[ReplayTarget], list[Skipped]]:
    """The newest replayable candidate exchanges matching the filters (never noise pairs or earlier replays)."""
    targets: list[ReplayTarget] = []
    skipped: list[Skipped] = []
    for item in store.exchanges_for_replay(route_id, outcome, since, limit * FETCH_FACTOR):
        if len(targets) >= limit:
            break
        detail = store.get_exchange(item.exchange_id, item.source)
        if detail is None or detail.record.pair != "candidate" or detail.record.request_id.startswith(REPLAY_PREFIX):
            continue
        route = config.route(item.route_id)
        if route is None:
            skipped.append(Skipped(item.exchange_id, item.route_id, "route_not_in_config"))
            continue
        if item.method not in SAFE_METHODS and not allow_unsafe:
            skipped.append(Skipped(item.exchange_id, item.route_id, "unsafe_method"))
            continue
        record = detail.record
        groups = frozenset(d.group for d in record.differences)
        targets.append(ReplayTarget(item, route, record.outcome, groups, record.request_id))
    return targets, skipped


class Replayer:
    """Sends targets to both sides with bounded concurrency; one connection pool per upstream, closed by `aclose`."""

    def __init__(self, config: Config, redactor: Redactor, *, concurrency: int = 8) -> None:
        self._config = config
        self._redactor = redactor
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._pools: dict[str, UpstreamPool] = {}

    async def run(
        self, targets: Sequence[ReplayTarget], on_result: Callable[[ReplayResult], None] | None = None
    ) -> list[ReplayResult]:
        async def one(target: ReplayTarget) -> ReplayResult:
            async with self._slots:
                result = await self.replay_one(target)
            if on_result is not None:
                on_result(result)
            return result

        return list(await asyncio.gather(*(one(t) for t in targets)))

    async def replay_one(self, target: ReplayTarget) -> ReplayResult:
        route = target.route
        legacy_up = self._config.upstreams[route.legacy]
        new_up = self._config.upstreams[route.upstream]
        mirror = route.shadow or route.verify or self._config.defaults.shadow
        began = time.time()
        legacy, new = await asyncio.gather(
            self._fetch(target, legacy_up, "legacy", mirror), self._fetch(target, new_up, "new", mirror)
        )
        origins = route_origins(self._config, route, target.item.headers)
        outcome, reason, comparison = judge_pair(legacy, new, route.compare, origins=origins)
        record = self._record(target, began, legacy, new, outcome, reason, comparison)
        groups = frozenset(d.group for d in record.differences)
        return ReplayResult(target, outcome, groups, reason, record)

    def _pool(self, upstream: Upstream) -> UpstreamPool:
        pool = self._pools.get(upstream.name)
        if pool is None:
            pool = self._pools[upstream.name] = UpstreamPool(upstream.url, max_connections=16)
        return pool

    async def _fetch(self, target: ReplayTarget, upstream: Upstream, side: Side, mirror: Mirror) -> ResponseSnapshot:
        item = target.item
        headers = request_headers(item.headers, upstream, mirror, item.method)
        path = upstream.url.raw_path.rstrip("/") + item.path + (f"?{item.query}" if item.query else "")
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(mirror.timeout):
                resp = await self._pool(upstream).request(
                    item.method,
                    path,
                    headers,
                    item.body,
                    content_length=len(item.body) if item.body is not None else None,
                    connect_timeout=min(mirror.timeout, self._config.defaults.timeouts.connect),
                    read_timeout=mirror.timeout,
                    retry_stale=False,  # a replayed request is sent at most once per side
                )
                try:
                    body, complete = await read_capped(resp, RESPONSE_CAP)
                finally:
                    resp.close()
        except UpstreamError as exc:
            return ResponseSnapshot(side, upstream.name, 0, (), None, False, loop.time() - began, exc.kind)
        except TimeoutError:
            return ResponseSnapshot(side, upstream.name, 0, (), None, False, loop.time() - began, "timeout")
        headers_in = tuple(end_to_end_response_headers(resp.raw_headers))  # as live shadowing records them
        return ResponseSnapshot(side, upstream.name, resp.status, headers_in, body, complete, loop.time() - began)

    def _record(
        self,
        target: ReplayTarget,
        began: float,
        legacy: ResponseSnapshot,
        new: ResponseSnapshot,
        outcome: Outcome,
        reason: str | None,
        comparison: Comparison | None,
    ) -> ExchangeRecord:
        item, cap = target.item, self._config.store.body_cap
        keep = outcome != "match"
        return compared_record(
            time=began,
            route=target.route,
            pair="candidate",
            method=item.method,
            path=item.path,
            query=item.query,  # stored already redacted
            request_id=REPLAY_PREFIX + target.request_id,
            served_by="legacy",
            request_headers=item.headers,  # the stored request was redacted already: not twice
            request_body=StoredBody(item.body[:cap], len(item.body), len(item.body) > cap)
            if keep and item.body
            else None,
            legacy=legacy,
            new=new,
            outcome=outcome,
            reason=reason,
            comparison=comparison,
            redactor=self._redactor,
            cap=cap,
            keep_bodies=keep,
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()


def request_headers(stored: Headers, upstream: Upstream, mirror: Mirror, method: str) -> Headers:
    """The stored request headers for one side: framing recomputed, Host as live shadowing sends it (the upstream's,
    or the client's under `host_header: preserve`), marked as mirrored and replayed, and as a dry run when the route
    mirrors writes that way (as live shadowing does)."""
    dropped = (REPLAY_HEADER.lower(), DRY_RUN_HEADER.lower())
    out = [(k, v) for k, v in stored if (name := k.lower()) not in _NOT_SENT and name not in dropped]
    out.append(("Host", _replay_host(stored, upstream)))
    out.append((mirror.header, "1"))
    out.append((REPLAY_HEADER, "1"))
    if mirror.side_effects == "dry_run" and method not in SAFE_METHODS:
        out.append((DRY_RUN_HEADER, "1"))
    return tuple(out)


def _replay_host(stored: Headers, upstream: Upstream) -> str:
    """Host as live shadowing sends it: the upstream's own, or under `host_header: preserve` the one the client
    asked for. The stored headers are those forwarded to the primary, whose Host may be the primary upstream's; the
    client's is in the X-Forwarded-Host strangler added (neither is ever redacted)."""
    if upstream.host_header == "preserve":
        for wanted in ("x-forwarded-host", "host"):
            value = next((v for k, v in stored if k.lower() == wanted), None)
            if value:
                return value.split(",")[0].strip()
    return upstream_host(upstream)


# --- before → after --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteChange:
    """Before → after for one route's replayed exchanges."""

    route_id: str
    replayed: int
    mismatched_before: int
    mismatched_after: int
    fixed: int  # mismatch (or candidate error) before, match now
    regressed: int  # match before, mismatch or candidate error now
    errors_after: int  # candidate errors now
    skipped_after: int  # not compared now (legacy failed, body too large)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """How many replayed exchanges differed in one field group, before and after."""

    route_id: str
    group: str
    before: int
    after: int

    @property
    def fixed(self) -> int:
        return max(0, self.before - self.after)


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    routes: tuple[RouteChange, ...]
    fields: tuple[FieldChange, ...]  # per route, most fixed first

    @property
    def fixed(self) -> int:
        return sum(r.fixed for r in self.routes)


_BAD = frozenset({"mismatch", "candidate_error"})


def summarize(results: Iterable[ReplayResult]) -> ReplaySummary:
    """Group results by route and field group; pure."""
    by_route: dict[str, list[ReplayResult]] = {}
    for result in results:
        by_route.setdefault(result.target.route.id, []).append(result)
    routes: list[RouteChange] = []
    fields: list[FieldChange] = []
    for rid in sorted(by_route):
        rs = by_route[rid]
        routes.append(
            RouteChange(
                route_id=rid,
                replayed=len(rs),
                mismatched_before=sum(r.target.before == "mismatch" for r in rs),
                mismatched_after=sum(r.after == "mismatch" for r in rs),
                fixed=sum(r.target.before in _BAD and r.after == "match" for r in rs),
                regressed=sum(r.target.before == "match" and r.after in _BAD for r in rs),
                errors_after=sum(r.after == "candidate_error" for r in rs),
                skipped_after=sum(r.after == "skipped" for r in rs),
            )
        )
        groups = sorted({g for r in rs for g in (*r.target.before_groups, *r.after_groups)})
        changes = [
            FieldChange(rid, g, sum(g in r.target.before_groups for r in rs), sum(g in r.after_groups for r in rs))
            for g in groups
        ]
        fields.extend(sorted(changes, key=lambda c: (-c.fixed, -c.before, c.group)))
    return ReplaySummary(tuple(routes), tuple(fields))
