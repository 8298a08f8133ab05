"""What to do with a request on a mirroring route: decided once, on the proxy's event loop, by pure functions.

The in-process listener and the bridge to the shadow worker both decide with `plan_mirror`, and share the cheap
half of the listener protocol (`TrafficCounting`); the worker only carries a plan out, so sampling and method rules
are applied in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from proxy.config.model import Route
from proxy.events import ExchangeStart, Side
from proxy.methods import READ_METHODS
from proxy.modes import mirror_decision, mirror_options
from shadow.records import TrafficTally

# The skip reason of a request whose body the proxy did not hold (over the route's shadow.max_body): no copy is sent.
# `reports.readiness` reads it too: such requests are left out of the comparison for their size.
REQUEST_TOO_LARGE: Final = "request_too_large"


@dataclass(frozen=True, slots=True)
class MirrorPlan:
    """What to do with one request on a mirroring route."""

    skip: str | None = None  # record the request as skipped, with this reason
    candidate: bool = False  # send the copy to the other side
    noise: bool = False  # send a second copy to legacy (legacy vs legacy)


CANDIDATE = MirrorPlan(candidate=True)  # by far the most common plan: made once


def plan_mirror(start: ExchangeStart, rand: Callable[[], float]) -> MirrorPlan | None:
    """The plan for a request (sampling included); None when there is nothing to do or record."""
    route = start.route
    if route is None:
        return None
    mirror = start.mirror
    if mirror is None:
        reason = mirror_decision(route, start.served_by, start.request.method).skip
        return None if reason is None else MirrorPlan(skip=reason)
    request = start.request
    skip: str | None = None
    candidate = False
    if mirror.sample >= 1.0 or rand() < mirror.sample:
        if request.body is None:  # the handler could not hold it: larger than mirror.max_body
            skip = REQUEST_TOO_LARGE
        else:
            candidate = True
    # Noise: a second legacy call of a safe, legacy-served request, compared legacy vs legacy.
    noise = (
        route.noise.sample > 0
        and start.served_by == "legacy"
        and request.method in READ_METHODS
        and request.body is not None
        and rand() < route.noise.sample
    )
    if candidate and not noise:
        return CANDIDATE
    if skip is None and not candidate and not noise:
        return None
    return MirrorPlan(skip, candidate, noise)


class TrafficCounting:
    """The cheap half of the listener protocol (`proxy.events.RequestCounter`), shared by both shadow listeners:
    routes that mirror nothing cost the core one `wants_exchange` and one `request_served` call, no snapshots."""

    _closing: bool
    _traffic: TrafficTally

    def wants_exchange(self, route: Route | None, served_by: Side, method: str) -> bool:
        """Only requests on a route that mirrors their side: the rest are just counted (`request_served`)."""
        return route is not None and not self._closing and mirror_options(route, served_by) is not None

    def request_served(
        self, route: Route | None, served_by: Side, method: str, path: str, status: int, failed: bool, latency: float
    ) -> None:
        self._traffic.add(route, served_by, method, path, failed, latency, status)

    async def _flush_traffic_every(self, seconds: float) -> None:
        """The traffic counts go to the store in batches: one flush every `seconds`."""
        while True:
            await asyncio.sleep(seconds)
            self._flush_traffic()

    def _flush_traffic(self) -> None:
        raise NotImplementedError
