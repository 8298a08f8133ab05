"""Telling the exchange listeners (`proxy.events`) about one request: who wants it, the snapshots they are given,
and the calls, each guarded so a failing listener never breaks the request it hears about."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from proxy.config.model import Config, Mirror, Route
from proxy.events import (
    ExchangeListener,
    ExchangeObserver,
    ExchangeStart,
    ListenerHooks,
    RequestSnapshot,
    ResponseSnapshot,
    Side,
)
from proxy.exchange import Exchange
from proxy.forwarding import ForwardResult
from proxy.tuples import new_tuple

log = logging.getLogger("strangler.proxy")


def exchange_start(
    request: web.BaseRequest, config: Config, mirror: Mirror | None, fwd_headers: list[tuple[str, str]], ex: Exchange
) -> ExchangeStart:
    """What listeners are told before the primary is sent: where the request goes, and the request as forwarded,
    its body kept only when it is mirrored and within the mirror's cap."""
    body = ex.body
    kept: bytes | None
    note: str | None
    if mirror is None:
        kept, note = None, "not_mirrored"
    elif body is None or len(body) > mirror.max_body:
        kept, note = None, "too_large"
    else:
        kept, note = body, None
    # Both built by tuple.__new__ from their fields in order, not by calling the NamedTuple, whose __new__ is a
    # Python function (a frame each, per mirrored request).
    snapshot = new_tuple(
        RequestSnapshot,
        (
            request.method, ex.canon.path, ex.query_string, tuple(fwd_headers), kept, note, ex.request_id, ex.peer_ip,
            request.headers.get("Host", ""),
        ),
    )  # fmt: skip
    return new_tuple(
        ExchangeStart, (config, ex.route, ex.side, ex.upstream_name, mirror, snapshot, time.time(), ex.started)
    )


def wanting(hooks: ListenerHooks, route: Route | None, side: Side, method: str) -> list[ExchangeListener]:
    """The listeners to tell about this request: those without `wants_exchange`, and those whose says yes."""
    out: list[ExchangeListener] = []
    for listener, wants in hooks.gated:
        try:
            if wants is None or wants(route, side, method):
                out.append(listener)
        except Exception:
            log.exception("exchange listener %r failed in wants_exchange", listener)
    return out


def notify_served(
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


def notify_start(listeners: list[ExchangeListener], start: ExchangeStart) -> list[ExchangeObserver]:
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


def notify_done(observers: list[ExchangeObserver], side: Side, upstream_name: str, result: ForwardResult) -> None:
    """Tell the observers what the client got from the primary (`result`), as one ResponseSnapshot; headers the
    forwarder kept undecoded go on undecoded (`raw_headers`: observers read `ResponseSnapshot.decoded()`)."""
    primary = new_tuple(
        ResponseSnapshot,
        (
            side, upstream_name, result.upstream_status, result.response_headers, result.body, result.body_complete,
            result.latency, result.error, result.raw_response_headers,
        ),
    )  # fmt: skip
    for observer in observers:
        try:
            observer.primary_done(primary)
        except Exception:
            log.exception("exchange observer %r failed in primary_done", observer)
