"""What to do with a request on a mirroring route: decided once, on the proxy's event loop, by pure functions.

The in-process listener and the bridge to the shadow worker both decide with `plan_mirror`, and share the cheap
half of the listener protocol (`CountingGate`); the worker only carries a plan out, so sampling and method rules
are applied in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from proxy.config import SAFE_METHODS, Mirror, Route
from proxy.events import ExchangeStart, Side
from shadow.records import TrafficTally


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
        reason = skip_reason(route, start)
        return None if reason is None else MirrorPlan(skip=reason)
    request = start.request
    skip: str | None = None
    candidate = False
    if mirror.sample >= 1.0 or rand() < mirror.sample:
        if request.body is None:  # the handler could not hold it: larger than mirror.max_body
            skip = "request_too_large"
        else:
            candidate = True
    # Noise: a second legacy call of a safe, legacy-served request, compared legacy vs legacy.
    noise = (
        route.noise.sample > 0
        and start.served_by == "legacy"
        and request.method in SAFE_METHODS
        and request.body is not None
        and rand() < route.noise.sample
    )
    if candidate and not noise:
        return CANDIDATE
    if skip is None and not candidate and not noise:
        return None
    return MirrorPlan(skip, candidate, noise)


def mirror_options(route: Route, served_by: Side) -> Mirror | None:
    """The route's mirror options for requests the given side serves; None when it mirrors none of them."""
    if served_by == "legacy":
        return route.shadow if route.mode in ("shadow", "canary") else None
    return route.verify if route.mode == "new" else None


def skip_reason(route: Route, start: ExchangeStart) -> str | None:
    """Why a request on a mirroring route was not mirrored; None when the route does not mirror this side."""
    opts = mirror_options(route, start.served_by)
    if opts is None:
        return None
    if start.request.method not in opts.methods:
        return "method_not_mirrored"
    return "side_effects_blocked"


class CountingGate:
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
        self._traffic.add(route, served_by, method, path, failed, latency)

    async def _flush_traffic_every(self, seconds: float) -> None:
        """The traffic counts go to the store in batches: one flush every `seconds`."""
        while True:
            await asyncio.sleep(seconds)
            self._flush_traffic()

    def _flush_traffic(self) -> None:
        raise NotImplementedError
