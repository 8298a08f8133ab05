"""Send stored requests again to both sides of their route, compare and store the pairs, and say what changed.

This is how a developer proves a fix without waiting for production traffic: replay the mismatches, and the summary
tells per route and field how many former mismatches now match. Each pair goes through the shadow pipeline's own
parts (`shadow.fetch.fetch_copy`, the send path of live shadowing, then `judge_pair` with the route's compare rules,
the `Redactor`, `Store.write_batch`).
Replays are stored apart, as pair "replay" with `replay_of` naming the exchange sent again (request id `replay-`
and the original's): they are no new client traffic, so they never count toward readiness, verdicts or the gate;
the report shows them in their own section (`reports.replay_changes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from proxy.config.model import Config, Mirror, Route, Upstream
from proxy.events import RequestSnapshot, ResponseSnapshot, Side
from proxy.methods import SAFE_METHODS
from shadow.fetch import CandidatePools, fetch_copy
from shadow.judge.compare import judge_pair
from shadow.judge.origins import route_origins
from shadow.records import compared_record
from shadow.redact import Redactor
from shadow.store.database import Store
from shadow.store.types import ReplayItem, ReplayPair
from shadow.values import Comparison, ExchangeRecord, Outcome, StoredBody

REPLAY_PREFIX = "replay-"
FETCH_FACTOR = 3  # stored rows read per wanted item: some are skipped (route gone, unsafe method)


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """A stored request chosen for replay, with what its original comparison found."""

    item: ReplayItem
    route: Route
    before: Outcome  # the original outcome
    before_groups: frozenset[str]  # field groups that differed originally
    request_id: str


@dataclass(frozen=True, slots=True)
class ReplayResult:
    target: ReplayTarget
    after: Outcome
    after_groups: frozenset[str]
    reason: str | None
    record: ExchangeRecord

    @property
    def before_after(self) -> ReplayPair:
        """Before → after, as the report reads it back from the store."""
        return ReplayPair(
            route_id=self.target.route.id,
            exchange_id=0,  # not stored yet
            origin_id=self.target.item.exchange_id,
            time=self.record.time,
            before=self.target.before,
            before_groups=self.target.before_groups,
            after=self.after,
            after_groups=self.after_groups,
        )


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
    """The newest replayable candidate exchanges matching the filters (the store never offers noise pairs or
    earlier replays)."""
    targets: list[ReplayTarget] = []
    skipped: list[Skipped] = []
    for item in store.exchanges_for_replay(route_id, outcome, since, limit * FETCH_FACTOR):
        if len(targets) >= limit:
            break
        detail = store.get_exchange(item.exchange_id, item.source)
        if detail is None:
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
        self._pools = CandidatePools(max_connections=16)

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
        request = stored_request(target.item, REPLAY_PREFIX + target.request_id)
        legacy, new = await asyncio.gather(
            self._fetch(request, legacy_up, "legacy", mirror), self._fetch(request, new_up, "new", mirror)
        )
        origins = route_origins(self._config, route, target.item.headers)
        outcome, reason, comparison = judge_pair(legacy, new, route.compare, origins=origins)
        record = self._record(target, began, legacy, new, outcome, reason, comparison)
        groups = frozenset(d.group for d in record.differences)  # as stored: what the report reads back
        return ReplayResult(target, outcome, groups, reason, record)

    async def _fetch(
        self, request: RequestSnapshot, upstream: Upstream, side: Side, mirror: Mirror
    ) -> ResponseSnapshot:
        timeouts = self._config.defaults.timeouts
        target = self._pools.get(upstream)
        return await fetch_copy(
            target,
            upstream,
            request,
            mirror,
            side,
            connect_timeout=timeouts.connect,
            pool_timeout=timeouts.pool,
            replay=True,
        )

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
        record = compared_record(
            time=began,
            route=target.route,
            pair="replay",
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
        return record._replace(replay_of=item.exchange_id)

    async def aclose(self) -> None:
        await self._pools.close()


def stored_request(item: ReplayItem, request_id: str) -> RequestSnapshot:
    """A stored request as the request a copy repeats (`shadow.fetch.fetch_copy`), under the replay's request id.

    The stored headers are those forwarded to the primary (redacted), whose Host may be the primary upstream's; the
    Host the client asked for is in the X-Forwarded-Host strangler added (neither is ever redacted)."""
    host = next((v for k, v in item.headers if k.lower() == "x-forwarded-host" and v), None)
    if host is None:
        host = next((v for k, v in item.headers if k.lower() == "host"), "")
    return RequestSnapshot(
        method=item.method,
        path=item.path,
        query_string=item.query,
        headers=item.headers,
        body=item.body,
        body_note=None,
        request_id=request_id,
        client_ip="",  # a copy never sends it
        host=host.split(",")[0].strip(),
    )
