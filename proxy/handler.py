"""The per-request coroutine, in named steps: prepare (refusals that reach no back end, canonical path, route) →
choose (side by mode, canary bucket, breaker) → hold the body when a route needs it again → notify listeners →
forward (and fall back to legacy when a fallback route's new side failed before answering) → finish (breaker,
metrics, listeners told the primary is done).

Unmatched requests go to the default legacy upstream. The hot path does no logging, no regex and builds each
header list once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import lru_cache
from itertools import chain
from types import MappingProxyType
from typing import Final

from aiohttp import web

from proxy.clock import duration_clock
from proxy.config.model import Config, Limits, Mirror, Route, Upstream
from proxy.errors import KINDS, UPSTREAM_FAULTS, ErrorKind, RequestBodyError
from proxy.events import ExchangeObserver, Headers
from proxy.exchange import EXCHANGE_KEY, Exchange
from proxy.forwarding import FallbackAvailable, ForwardResult, ForwardTarget, base_path, forward
from proxy.headers import (
    new_request_id,
    unsupported_transfer_coding,
    upstream_request_headers,
    valid_host,
    valid_request_id,
)
from proxy.modes import mirror_for, serving_side, side_upstream, split_key
from proxy.notify import exchange_start, notify_done, notify_served, notify_start, wanting
from proxy.paths import PathError, canonical_path
from proxy.request_body import expect_continue, read_held
from proxy.responses import error_response
from proxy.server import UnsupportedVersionRequest
from proxy.state import RuntimeState, Snapshot
from proxy.tuples import new_tuple
from proxy.websocket import forward_websocket, is_websocket_upgrade

UNMATCHED: Final = "unmatched"  # route label for requests no route matched (metrics, debug header)
# Bodies up to this size are read before sending to a new service with fallback, so legacy can get them again.
FALLBACK_BODY: Final = 1024 * 1024
# When mirrored, the primary response body is captured up to this many times the mirror's request-body cap.
CAPTURE_FACTOR: Final = 4

_CLASS_OF = {index: f"{index}xx" for index in range(1, 6)}  # status // 100 → its metrics label; else "0xx"
_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_OBSERVERS: tuple[()] = ()
_CLIENT_GONE = ForwardResult(0, 0, "client_gone", (), None, False, 0.0)  # what listeners hear of a primary cut short


@lru_cache(maxsize=64)
def _via_header(via: str) -> Headers:
    """The Via entry this hop adds to responses: the same tuple every time, so proxy.headers caches its bytes."""
    return (("Via", "1.1 " + via),)


def _status_class(status: int) -> str:
    return _CLASS_OF.get(status // 100, "0xx")


def head_size(raw_headers: tuple[tuple[bytes, bytes], ...]) -> int:
    """Bytes of the header lines as received (name, ': ', value, CRLF), for limits.max_header_size."""
    return sum(map(len, chain.from_iterable(raw_headers))) + 4 * len(raw_headers)  # no generator frame per header


class ProxyHandler:
    """The `web.Server` request handler. Reads `state.snapshot` once per request and keeps it to the end."""

    __slots__ = ("_loop", "_state")

    def __init__(self, state: RuntimeState) -> None:
        self._state = state
        # The loop it serves on, kept: `asyncio.get_running_loop()` makes a getpid system call on every call (it
        # checks for a fork), and the request path read the clock through it four times per request.
        self._loop = asyncio.get_running_loop()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self._state
        snap = state.snapshot
        config = snap.config
        incoming_id = request.headers.get("X-Request-Id")
        request_id = incoming_id if incoming_id is not None and valid_request_id(incoming_id) else new_request_id()
        ex = Exchange(request_id, self._loop.time(), duration_clock(), request.remote or "")
        if state.access_log is not None:
            request[EXCHANGE_KEY] = ex  # the access log reads it once the response is written (proxy.server)
        refused = self._prepare(request, snap, ex)
        if refused is not None:
            return refused
        self._choose(request, config, ex)
        if is_websocket_upgrade(request):
            resp = await self._websocket(request, config, ex)
            if type(resp) is not web.WebSocketResponse:
                # Not switched (no session, the back end refused or could not be reached): the connection closes
                # after the answer (README "HTTP behaviour"), so bytes a client sends behind its Upgrade are never
                # read as requests.
                resp.force_close()
            return resp

        listening = state.hooks.listeners  # tested as a tuple: ListenerHooks.__bool__ is a Python call
        mirror = mirror_for(ex.route, ex.side, request.method) if listening else None
        if request.body_exists:
            refused = await self._hold_body(request, config.limits, mirror, ex)
            if refused is not None:
                return refused
        elif ex.fallback or (mirror is not None and mirror.max_body):
            ex.body = b""  # held as the empty body it is, so fallback may re-send it
        upstream = config.upstreams[ex.upstream_name]
        fwd_headers = _upstream_headers(request, config, upstream, ex.peer_ip, request_id)
        observers = self._notify_start(request, config, mirror, fwd_headers, ex) if listening else _NO_OBSERVERS
        capture = mirror.max_body * CAPTURE_FACTOR if mirror is not None and observers else 0
        try:  # forward, with fallback
            try:
                resp, result = await self._forward(
                    request, config, upstream, fwd_headers, capture, ex.fallback, bool(observers), ex
                )
            except FallbackAvailable as exc:
                upstream, fwd_headers = self._fall_back(request, config, exc, ex)
                resp, result = await self._forward(
                    request, config, upstream, fwd_headers, capture, False, bool(observers), ex
                )
        except BaseException:
            self._notify_gone(request, observers, ex)
            raise
        self._finish(request, result, observers, ex)
        return resp

    def _prepare(self, request: web.BaseRequest, snap: Snapshot, ex: Exchange) -> web.Response | None:
        """Refuse what must reach no back end (HTTP version, head size, Host, transfer coding, bad path, encoded
        slash); find the canonical path and the route. None when the request goes on."""
        limits = snap.config.limits
        if type(request) is UnsupportedVersionRequest:
            return self._reject(505, "http_version_not_supported", ex.request_id, close=True)
        if head_size(request.raw_headers) > limits.max_header_size:
            return self._reject(431, "headers_too_large", ex.request_id)
        host = request.headers.get("Host")
        if host is not None and not valid_host(host):
            return self._reject(400, "bad_host", ex.request_id)
        coding = request.headers.get("Transfer-Encoding")
        if coding is not None and unsupported_transfer_coding(coding):
            return self._reject(501, "unsupported_transfer_coding", ex.request_id, close=True)
        raw_path, _, query_string = request.raw_path.partition("?")
        try:
            canon = canonical_path(raw_path)
        except PathError as exc:
            return self._reject(400, "bad_path", ex.request_id, reason=exc.reason)
        query = request.query if query_string else _EMPTY
        found = snap.table.match(request.method, canon.segments, request.headers, query)
        route = found.route if found is not None else None
        if canon.has_encoded_slash and (route is None or not route.match.allow_encoded_slash):
            return self._reject(400, "encoded_slash", ex.request_id, route=route)
        ex.canon = canon
        ex.query_string = query_string
        ex.route = route
        ex.route_id = route.id if route is not None else None
        return None

    def _choose(self, request: web.BaseRequest, config: Config, ex: Exchange) -> None:
        """The serving side by the route's mode (`proxy.modes`); a fallback route whose breaker is open goes
        straight to legacy."""
        route = ex.route
        key = None
        canary = route.canary if route is not None and route.mode == "canary" else None
        if route is not None and canary is not None and canary.sticky is not None:
            cookies = request.cookies if canary.sticky.kind == "cookie" else _EMPTY
            key = split_key(route, request.headers, cookies, ex.peer_ip)
        side = serving_side(route, key)
        upstream_name = side_upstream(route, side, config.defaults.legacy)
        fallback = route is not None and route.fallback and side == "new"
        if fallback and route is not None:
            state = self._state
            breaker = state.breakers[upstream_name]
            before = breaker.state
            allowed = breaker.allow(ex.started)
            if breaker.state != before:
                state.breaker_changed(upstream_name, breaker)
            if not allowed:
                state.metrics.fallbacks.inc((route.id, "breaker_open"))
                side, upstream_name, fallback = "legacy", route.legacy, False
        ex.chosen_side = ex.side = side
        ex.upstream_name = upstream_name
        ex.fallback = fallback

    async def _hold_body(
        self, request: web.BaseRequest, limits: Limits, mirror: Mirror | None, ex: Exchange
    ) -> web.Response | None:
        """Answer `Expect: 100-continue`; read the body when the route needs it again (a mirror's copy, a fallback's
        re-send), within its size and idle limits. A refusal when the body cannot be read."""
        await expect_continue(request, limits.max_body)
        cap = mirror.max_body if mirror is not None else 0
        if ex.fallback:
            cap = max(cap, FALLBACK_BODY)
        if not cap:
            return None
        try:
            ex.body = await read_held(request, cap, limits.max_body, limits.body_timeout)
        except RequestBodyError as err:
            if err.kind == "body_timeout":
                _skip_lingering(request)
            meaning = KINDS[err.kind]
            return self._reject(meaning.status, meaning.name, ex.request_id, route=ex.route, close=meaning.close)
        return None

    def _notify_start(
        self,
        request: web.BaseRequest,
        config: Config,
        mirror: Mirror | None,
        fwd_headers: list[tuple[str, str]],
        ex: Exchange,
    ) -> list[ExchangeObserver] | tuple[()]:
        """Tell the listeners that want this request (a mirroring route) before the primary is sent."""
        listeners = wanting(self._state.hooks, ex.route, ex.side, request.method)
        if not listeners:  # the snapshots are built only for listeners that use them
            return _NO_OBSERVERS
        return notify_start(listeners, exchange_start(request, config, mirror, fwd_headers, ex))

    def _fall_back(
        self, request: web.BaseRequest, config: Config, exc: FallbackAvailable, ex: Exchange
    ) -> tuple[Upstream, list[tuple[str, str]]]:
        """The new side failed before answering a fallback route: record the failure and move the request to
        legacy (`ex` then names it); its upstream and headers."""
        route = ex.route
        assert route is not None  # fallback is only allowed on a matched route
        kind = exc.error.kind
        self._record(ex.upstream_name, kind, 0, self._loop.time())
        self._state.metrics.fallbacks.inc((route.id, kind))
        ex.side, ex.upstream_name = "legacy", route.legacy
        upstream = config.upstreams[route.legacy]
        return upstream, _upstream_headers(request, config, upstream, ex.peer_ip, ex.request_id)

    def _finish(
        self,
        request: web.BaseRequest,
        result: ForwardResult,
        observers: list[ExchangeObserver] | tuple[()],
        ex: Exchange,
    ) -> None:
        """Feed the breaker and the metrics, and tell the listeners the primary is done."""
        state = self._state
        if result.error == "body_timeout":
            _skip_lingering(request)
        now = self._loop.time()
        upstream_name = ex.upstream_name
        self._record(upstream_name, result.error, result.upstream_status, now)
        metrics = state.metrics
        label = (ex.route_id or UNMATCHED, upstream_name)
        metrics.requests.inc((*label, _CLASS_OF.get(result.status // 100, "0xx")))  # _status_class, inlined
        metrics.latency.observe(label, duration_clock() - ex.began)
        if observers:
            notify_done(observers, ex.side, upstream_name, result)
        hooks = state.hooks
        if hooks.listeners:
            status = result.upstream_status
            failed = result.error is not None or status >= 500
            notify_served(
                hooks, ex.route, ex.chosen_side, request.method, ex.canon.path, status, failed, result.latency
            )

    def _notify_gone(
        self, request: web.BaseRequest, observers: list[ExchangeObserver] | tuple[()], ex: Exchange
    ) -> None:
        """The client went away (or the task was cancelled): listeners still hear that the primary ended."""
        if observers:
            notify_done(observers, ex.side, ex.upstream_name, _CLIENT_GONE)
        hooks = self._state.hooks
        if hooks.listeners:
            notify_served(hooks, ex.route, ex.chosen_side, request.method, ex.canon.path, 0, True, 0.0)

    async def _forward(
        self,
        request: web.BaseRequest,
        config: Config,
        upstream: Upstream,
        fwd_headers: list[tuple[str, str]],
        capture: int,
        allow_fallback: bool,
        keep_headers: bool,
        ex: Exchange,
    ) -> tuple[web.StreamResponse, ForwardResult]:
        slot = self._state.pools[upstream.name]
        route = ex.route
        timeouts = route.timeouts if route is not None else config.defaults.timeouts
        extra = _via_header(config.via)
        route_id = ex.route_id
        if config.debug_headers:
            extra = (*extra, ("X-Strangler-Route", route_id or UNMATCHED), ("X-Strangler-Upstream", upstream.name))
        query_string = ex.query_string
        target_path = ex.canon.path + "?" + query_string if query_string else ex.canon.path
        target = new_tuple(ForwardTarget, (upstream, slot.pool, base_path(upstream) + target_path, timeouts))
        body = ex.body
        slot.users += 1
        try:
            return await forward(
                request,
                target,
                headers=fwd_headers,
                body=body,
                max_body=config.limits.max_body,
                capture=capture,
                allow_fallback=allow_fallback and body is not None,
                response_headers=extra,
                route_id=route_id,
                request_id=ex.request_id,
                body_timeout=config.limits.body_timeout,
                keep_headers=keep_headers,
            )
        finally:
            slot.users -= 1

    def _record(self, upstream_name: str, error: ErrorKind | None, upstream_status: int, now: float) -> None:
        """Feed the upstream's breaker and error counters from one forward's outcome (`proxy.errors.KINDS` says
        which kinds are the upstream's fault; a full pool is strangler's own refusal)."""
        state = self._state
        if error in UPSTREAM_FAULTS:
            state.metrics.upstream_errors.inc((upstream_name, error))
        elif error == "pool_timeout":
            state.metrics.rejected.inc((error,))
        breaker = state.breakers.get(upstream_name)
        if breaker is not None and breaker.record(error, answered=upstream_status != 0, now=now):
            state.breaker_changed(upstream_name, breaker)

    def _reject(
        self,
        status: int,
        error: str,
        request_id: str,
        *,
        route: Route | None = None,
        reason: str | None = None,
        close: bool = False,
    ) -> web.Response:
        """A strangler-generated refusal: counted, never sent to any back end."""
        self._state.metrics.rejected.inc((reason or error,))
        resp = error_response(status, error, route.id if route is not None else None, request_id)
        if close:
            resp.force_close()
        return resp

    async def _websocket(self, request: web.BaseRequest, config: Config, ex: Exchange) -> web.StreamResponse:
        state = self._state
        upstream = config.upstreams[ex.upstream_name]
        session = state.ws_session
        route, route_id = ex.route, ex.route_id
        if session is None:
            return error_response(503, "websocket_unavailable", route_id, ex.request_id)
        query_string = ex.query_string
        target_path = ex.canon.path + "?" + query_string if query_string else ex.canon.path
        resp = await forward_websocket(
            request,
            upstream=upstream,
            session=session,
            target=base_path(upstream) + target_path,
            headers=_upstream_headers(request, config, upstream, ex.peer_ip, ex.request_id),
            timeouts=route.timeouts if route is not None else config.defaults.timeouts,
            route_id=route_id,
            request_id=ex.request_id,
            ssl_context=state.pools[upstream.name].ssl_context,
        )
        state.metrics.requests.inc((route_id or UNMATCHED, ex.upstream_name, _status_class(resp.status)))
        return resp


def _upstream_headers(
    request: web.BaseRequest, config: Config, upstream: Upstream, peer_ip: str, request_id: str
) -> list[tuple[str, str]]:
    return upstream_request_headers(
        request.raw_headers,
        upstream=upstream,
        client_host=request.headers.get("Host", ""),
        peer_ip=peer_ip,
        scheme=request.scheme,
        trusted_proxies=config.trusted_proxies,
        request_id=request_id,
        via=config.via,
        http_version=(request.version.major, request.version.minor),
    )


def _skip_lingering(request: web.BaseRequest) -> None:
    skip = getattr(request.protocol, "skip_lingering", None)  # both listeners' protocols have it; tests' may not
    if skip is not None:
        skip()
