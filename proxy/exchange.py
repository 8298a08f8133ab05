"""The record of one request as `proxy.handler`'s steps learn about it: path, route, side, held body.

`proxy.handler.ProxyHandler` makes one `Exchange` per request and passes it from step to step (prepare, choose,
hold the body, notify, forward, fall back, finish) instead of threading a dozen arguments through each; it is a
slotted plain class, filled in place, so it costs one small allocation per request and nothing per step.
"""

from __future__ import annotations

from aiohttp import web

from proxy.config.model import Route
from proxy.events import Side
from proxy.paths import CanonicalPath


class Exchange:
    """One request as the steps learn about it (mitmproxy's flow, in small): `_prepare` fills the path and route,
    `_choose` the side, `_fall_back` may move it to legacy. One object per request."""

    __slots__ = (
        "began",
        "body",
        "canon",
        "chosen_side",
        "fallback",
        "peer_ip",
        "query_string",
        "request_id",
        "route",
        "route_id",
        "side",
        "started",
        "upstream_name",
    )

    canon: CanonicalPath
    query_string: str
    route: Route | None
    route_id: str | None
    chosen_side: Side  # traffic is counted by the side chosen at the start, whatever fallback did
    side: Side  # the side serving now: legacy after a fallback
    upstream_name: str
    fallback: bool  # the new side may fail over to legacy (route allows it, breaker closed)
    body: bytes | None  # the body when held (mirroring, fallback), else None: forward() streams it

    def __init__(self, request_id: str, started: float, began: float, peer_ip: str) -> None:
        self.request_id = request_id
        self.started = started  # loop.time(): the breaker's clock
        self.began = began  # proxy.clock.duration_clock(): the request-duration metric's
        self.peer_ip = peer_ip
        self.body = None


# Where the handler leaves a request's Exchange for the access log, and where the server notes when the request's
# head was parsed (`proxy.clock.duration_clock`); set only while an access log is on.
EXCHANGE_KEY = web.RequestKey("strangler_exchange", Exchange)
ARRIVED_KEY = web.RequestKey("strangler_arrived", float)
