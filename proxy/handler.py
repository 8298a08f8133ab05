"""The per-request coroutine: canonical path → route → side (legacy/new) → forward, with fallback and events.

One pass, in order: request id; canonical path (a bad path is a 400 that never reaches a back end); route match
(unmatched requests go to the default legacy upstream); side by mode (canary: sticky bucket); breaker and fallback
for routes that allow it; listeners told before the primary is sent and again when it is done. The hot path does
no logging, no regex and builds each header list once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.config import Config, Limits, Mirror, Route, Timeouts, Upstream
from proxy.events import (
    ExchangeListener,
    ExchangeObserver,
    ExchangeStart,
    Headers,
    ListenerHooks,
    RequestSnapshot,
    ResponseSnapshot,
    Side,
)
from proxy.forwarding import FallbackAvailable, ForwardResult, ForwardTarget, error_response, forward
from proxy.headers import (
    new_request_id,
    unsupported_transfer_coding,
    upstream_request_headers,
    valid_host,
    valid_request_id,
)
from proxy.modes import mirror_for, serving_side, side_upstream, split_key
from proxy.paths import PathError, canonical_path
from proxy.server import GuardedRequestHandler, UnsupportedVersionRequest
from proxy.state import RuntimeState
from proxy.websocket import forward_websocket, is_websocket_upgrade

log = logging.getLogger("strangler.proxy")

UNMATCHED: Final = "unmatched"  # route label for requests no route matched (metrics, debug header)
# Bodies up to this size are read before sending to a new service with fallback, so legacy can get them again.
FALLBACK_BODY: Final = 1024 * 1024
# When mirrored, the primary response body is captured up to this many times the mirror's request-body cap.
CAPTURE_FACTOR: Final = 4

_TRANSPORT_ERRORS = frozenset({"connect", "timeout", "reset"})
_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
_EMPTY: Mapping[str, str] = MappingProxyType({})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _BodyTooLarge(Exception):
    """A chunked body passed limits.max_body while the handler was reading it."""


_BASE_PATHS: dict[int, tuple[Upstream, str]] = {}


def _base_path(upstream: Upstream) -> str:
    """The upstream URL's base path without a trailing slash ("" for none): prefixed to every forwarded path.

    Cached by identity: hashing the frozen dataclass (and its URL) for an lru_cache costs more than the lookup
    saves. The entry holds the upstream, so its id cannot be reused while cached."""
    hit = _BASE_PATHS.get(id(upstream))
    if hit is not None and hit[0] is upstream:
        return hit[1]
    if len(_BASE_PATHS) >= 256:
        _BASE_PATHS.clear()  # configs reloaded many times: start over rather than grow
    path = upstream.url.raw_path.rstrip("/")
    _BASE_PATHS[id(upstream)] = (upstream, path)
    return path


@lru_cache(maxsize=64)
def _via_header(via: str) -> Headers:
    """The Via entry this hop adds to responses: the same tuple every time, so proxy.headers caches its bytes."""
    return (("Via", "1.1 " + via),)


def _status_class(status: int) -> str:
    index = status // 100
    return _CLASSES[index] if 0 <= index < len(_CLASSES) else "0xx"


def head_size(raw_headers: tuple[tuple[bytes, bytes], ...]) -> int:
    """Bytes of the header lines as received (name, ': ', value, CRLF), for limits.max_header_size."""
    return sum(len(name) + len(value) + 4 for name, value in raw_headers)


class ProxyHandler:
    """The `web.Server` request handler. Reads `state.snapshot` once per request and keeps it to the end."""

    __slots__ = ("_state",)

    def __init__(self, state: RuntimeState) -> None:
        self._state = state

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self._state
        snap = state.snapshot
        config = snap.config
        started = asyncio.get_running_loop().time()
        incoming_id = request.headers.get("X-Request-Id")
        request_id = incoming_id if incoming_id is not None and valid_request_id(incoming_id) else new_request_id()

        if type(request) is UnsupportedVersionRequest:
            return self._reject(505, "http_version_not_supported", request_id, close=True)
        if head_size(request.raw_headers) > config.limits.max_header_size:
            return self._reject(431, "headers_too_large", request_id)
        host = request.headers.get("Host")
        if host is not None and not valid_host(host):
            return self._reject(400, "bad_host", request_id)
        coding = request.headers.get("Transfer-Encoding")
        if coding is not None and unsupported_transfer_coding(coding):
            return self._reject(501, "unsupported_transfer_coding", request_id, close=True)
        raw_path, _, query_string = request.raw_path.partition("?")
        try:
            canon = canonical_path(raw_path)
        except PathError as exc:
            return self._reject(400, "bad_path", request_id, reason=exc.reason)

        method = request.method
        headers = request.headers
        found = snap.table.match(method, canon.segments, headers, request.query if query_string else _EMPTY)
        route = found.route if found is not None else None
        if canon.has_encoded_slash and (route is None or not route.match.allow_encoded_slash):
            return self._reject(400, "encoded_slash", request_id, route=route)

        peer_ip = request.remote or ""
        side, upstream_name = _choose(config, route, request, peer_ip)
        fallback = route is not None and route.fallback and side == "new"
        if fallback and route is not None:
            breaker = state.breakers[upstream_name]
            before = breaker.state
            allowed = breaker.allow(started)
            if breaker.state != before:
                state.breaker_changed(upstream_name, breaker)
            if not allowed:
                state.metrics.fallbacks.inc((route.id, "breaker_open"))
                side, upstream_name, fallback = "legacy", route.legacy, False
        target_path = canon.path + "?" + query_string if query_string else canon.path
        route_id = route.id if route is not None else None

        if is_websocket_upgrade(request):
            return await self._websocket(request, config, route, upstream_name, target_path, peer_ip, request_id)

        hooks = state.hooks
        mirror = mirror_for(route, side, method) if hooks else None
        cap = mirror.max_body if mirror is not None else 0
        if fallback:
            cap = max(cap, FALLBACK_BODY)
        body: bytes | None = None
        if request.body_exists:
            await _expect_continue(request, config.limits)
        if cap:
            try:
                body = await _read_body(request, cap, config.limits)
            except _BodyTooLarge:
                return self._reject(413, "request_too_large", request_id, route=route, close=True)
            except TimeoutError:
                _skip_lingering(request)
                return self._reject(408, "request_body_timeout", request_id, route=route, close=True)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The client went away mid-body; nobody will read this answer, but the connection must not be reused.
                return self._reject(400, "client_gone", request_id, route=route, close=True)
            except (web.RequestPayloadError, HttpProcessingError):
                # The body's chunked framing broke mid-way (see proxy.server): the stream position is lost.
                return self._reject(400, "bad_body", request_id, route=route, close=True)

        upstream = config.upstreams[upstream_name]
        fwd_headers = _upstream_headers(request, config, upstream, peer_ip, request_id)
        observers: list[ExchangeObserver] = []
        started_side = side  # traffic is counted by the side chosen at the start, whatever fallback did
        if hooks:
            wanting = _wanting(hooks, route, side, method)
            if wanting:  # the snapshots are built only for listeners that use them (a mirroring route)
                snapshot = _request_snapshot(
                    request, canon.path, query_string, fwd_headers, body, mirror, request_id, peer_ip
                )
                start = ExchangeStart(config, route, side, upstream_name, mirror, snapshot, time.time(), started)
                observers = _notify_start(wanting, start)
        capture = mirror.max_body * CAPTURE_FACTOR if mirror is not None and observers else 0
        timeouts = route.timeouts if route is not None else config.defaults.timeouts

        try:
            try:
                resp, result = await self._forward(
                    request, config, upstream, target_path, timeouts, fwd_headers, body, capture,
                    fallback, route_id, request_id,
                )  # fmt: skip
            except FallbackAvailable as exc:
                assert route is not None  # fallback is only allowed on a matched route
                self._record(upstream_name, exc.error.kind, 0, asyncio.get_running_loop().time())
                state.metrics.fallbacks.inc((route.id, exc.error.kind))
                side, upstream_name = "legacy", route.legacy
                upstream = config.upstreams[upstream_name]
                fwd_headers = _upstream_headers(request, config, upstream, peer_ip, request_id)
                resp, result = await self._forward(
                    request, config, upstream, target_path, timeouts, fwd_headers, body, capture,
                    False, route_id, request_id,
                )  # fmt: skip
        except BaseException:
            # The client went away (or the task was cancelled): observers still hear that the primary ended.
            if observers:
                gone = ResponseSnapshot(side, upstream_name, 0, (), None, False, 0.0, "client_gone")
                _notify_done(observers, gone)
            if hooks:
                _notify_served(hooks, route, started_side, method, canon.path, 0, True, 0.0)
            raise

        if result.error == "body_timeout":
            _skip_lingering(request)
        now = asyncio.get_running_loop().time()
        self._record(upstream_name, result.error, result.upstream_status, now)
        metrics = state.metrics
        label = (route_id or UNMATCHED, upstream_name)
        metrics.requests.inc((*label, _status_class(result.status)))
        metrics.latency.observe(label, now - started)
        if observers:
            _notify_done(observers, _response_snapshot(side, upstream_name, result))
        if hooks:
            status = result.upstream_status
            failed = result.error is not None or status >= 500
            _notify_served(hooks, route, started_side, method, canon.path, status, failed, result.latency)
        return resp

    async def _forward(
        self,
        request: web.BaseRequest,
        config: Config,
        upstream: Upstream,
        target_path: str,
        timeouts: Timeouts,
        fwd_headers: list[tuple[str, str]],
        body: bytes | None,
        capture: int,
        allow_fallback: bool,
        route_id: str | None,
        request_id: str,
    ) -> tuple[web.StreamResponse, ForwardResult]:
        slot = self._state.pools[upstream.name]
        extra = _via_header(config.via)
        if config.debug_headers:
            extra = (*extra, ("X-Strangler-Route", route_id or UNMATCHED), ("X-Strangler-Upstream", upstream.name))
        target = ForwardTarget(upstream, slot.pool, _base_path(upstream) + target_path, timeouts)
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
                request_id=request_id,
                body_timeout=config.limits.body_timeout,
            )
        finally:
            slot.users -= 1

    def _record(self, upstream_name: str, error: str | None, upstream_status: int, now: float) -> None:
        """Feed the upstream's breaker and error counter from one forward's outcome."""
        state = self._state
        breaker = state.breakers.get(upstream_name)
        if error in _TRANSPORT_ERRORS:
            state.metrics.upstream_errors.inc((upstream_name, error))
            if breaker is not None and breaker.record_failure(now):
                state.breaker_changed(upstream_name, breaker)
        elif upstream_status and breaker is not None and breaker.record_success(now):
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

    async def _websocket(
        self,
        request: web.BaseRequest,
        config: Config,
        route: Route | None,
        upstream_name: str,
        target_path: str,
        peer_ip: str,
        request_id: str,
    ) -> web.StreamResponse:
        state = self._state
        upstream = config.upstreams[upstream_name]
        session = state.ws_session
        route_id = route.id if route is not None else None
        if session is None:
            return error_response(503, "websocket_unavailable", route_id, request_id)
        resp = await forward_websocket(
            request,
            upstream=upstream,
            session=session,
            target=_base_path(upstream) + target_path,
            headers=_upstream_headers(request, config, upstream, peer_ip, request_id),
            timeouts=route.timeouts if route is not None else config.defaults.timeouts,
            route_id=route_id,
            request_id=request_id,
        )
        state.metrics.requests.inc((route_id or UNMATCHED, upstream_name, _status_class(resp.status)))
        return resp


def _choose(config: Config, route: Route | None, request: web.BaseRequest, peer_ip: str) -> tuple[Side, str]:
    """Which side serves the request by the route's mode (`proxy.modes`), and that side's upstream name."""
    key = None
    if route is not None and route.mode == "canary" and route.canary is not None and route.canary.sticky is not None:
        cookies = request.cookies if route.canary.sticky.kind == "cookie" else _EMPTY
        key = split_key(route, request.headers, cookies, peer_ip)
    side = serving_side(route, key)
    return side, side_upstream(route, side, config.defaults.legacy)


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
    protocol = request.protocol
    if isinstance(protocol, GuardedRequestHandler):
        protocol.skip_lingering()


async def _expect_continue(request: web.BaseRequest, limits: Limits) -> None:
    """Answer `Expect: 100-continue` (the client waits for it before sending the body) unless the declared body
    is over the limit: then the 413 comes without the client ever sending it."""
    expect = request.headers.get("Expect")
    if expect is None or expect.lower() != "100-continue":
        return
    length = request.content_length
    if length is None or length <= limits.max_body:
        await request.writer.write(_CONTINUE)


async def _read_body(request: web.BaseRequest, cap: int, limits: Limits) -> bytes | None:
    """The request body as bytes when it can be held, else None (forward() streams it).

    A declared length up to `cap` is read; a larger one streams. A chunked body has no declared length, and once
    reading has started the bytes cannot be given back to a stream, so it is read whole (up to limits.max_body).
    """
    if not request.body_exists:
        return b""
    length = request.content_length
    idle = limits.body_timeout  # TimeoutError past it: the caller answers 408
    if length is not None:
        if length > cap or length > limits.max_body:
            return None
        if not length:
            return b""
        async with asyncio.timeout(idle):
            return await request.content.readexactly(length)
    chunks: list[bytes] = []
    total = 0
    while True:
        async with asyncio.timeout(idle):
            chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limits.max_body:
            raise _BodyTooLarge
        chunks.append(chunk)


def _request_snapshot(
    request: web.BaseRequest,
    path: str,
    query_string: str,
    fwd_headers: list[tuple[str, str]],
    body: bytes | None,
    mirror: Mirror | None,
    request_id: str,
    peer_ip: str,
) -> RequestSnapshot:
    kept: bytes | None
    note: str | None
    if mirror is None:
        kept, note = None, "not_mirrored"
    elif body is None or len(body) > mirror.max_body:
        kept, note = None, "too_large"
    else:
        kept, note = body, None
    return RequestSnapshot(
        method=request.method,
        path=path,
        query_string=query_string,
        headers=tuple(fwd_headers),
        body=kept,
        body_note=note,
        request_id=request_id,
        client_ip=peer_ip,
        host=request.headers.get("Host", ""),
    )


def _response_snapshot(side: Side, upstream_name: str, result: ForwardResult) -> ResponseSnapshot:
    return ResponseSnapshot(
        side=side,
        upstream=upstream_name,
        status=result.upstream_status,
        headers=result.response_headers,
        body=result.body,
        body_complete=result.body_complete,
        latency=result.latency,
        error=result.error,
    )


def _wanting(hooks: ListenerHooks, route: Route | None, side: Side, method: str) -> list[ExchangeListener]:
    """The listeners to tell about this request: those without `wants_exchange`, and those whose says yes."""
    out: list[ExchangeListener] = []
    for listener, wants in hooks.gated:
        try:
            if wants is None or wants(route, side, method):
                out.append(listener)
        except Exception:
            log.exception("exchange listener %r failed in wants_exchange", listener)
    return out


def _notify_served(
    hooks: ListenerHooks,
    route: Route | None,
    side: Side,
    method: str,
    path: str,
    status: int,
    failed: bool,
    latency: float,
) -> None:
    for listener, served in hooks.served:
        try:
            served(route, side, method, path, status, failed, latency)
        except Exception:
            log.exception("exchange listener %r failed in request_served", listener)


def _notify_start(listeners: list[ExchangeListener], start: ExchangeStart) -> list[ExchangeObserver]:
    observers: list[ExchangeObserver] = []
    for listener in listeners:
        try:
            observer = listener.request_received(start)
        except Exception:
            log.exception("exchange listener %r failed in request_received", listener)
            continue
        if observer is not None:
            observers.append(observer)
    return observers


def _notify_done(observers: list[ExchangeObserver], primary: ResponseSnapshot) -> None:
    for observer in observers:
        try:
            observer.primary_done(primary)
        except Exception:
            log.exception("exchange observer %r failed in primary_done", observer)
