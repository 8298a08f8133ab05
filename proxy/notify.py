"""Telling the exchange listeners (`proxy.events`) about one request: who wants it, the snapshots they are given,
and the calls, each guarded so a failing listener never breaks the request it hears about."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.config.model import Mirror, Route
from proxy.events import (
    ExchangeListener,
    ExchangeObserver,
    ExchangeStart,
    ListenerHooks,
    RequestSnapshot,
    ResponseSnapshot,
    Side,
)
from proxy.forwarding import ForwardResult

log = logging.getLogger("strangler.proxy")
_new_tuple = tuple.__new__  # a NamedTuple from its fields' tuple, without its Python-level __new__


def request_snapshot(
    request: web.BaseRequest,
    path: str,
    query_string: str,
    fwd_headers: list[tuple[str, str]],
    body: bytes | None,
    mirror: Mirror | None,
    request_id: str,
    peer_ip: str,
) -> RequestSnapshot:
    """The request as listeners see it: its body kept only when it is mirrored and within the mirror's cap."""
    kept: bytes | None
    note: str | None
    if mirror is None:
        kept, note = None, "not_mirrored"
    elif body is None or len(body) > mirror.max_body:
        kept, note = None, "too_large"
    else:
        kept, note = body, None
    # (method, path, query_string, headers, body, body_note, request_id, client_ip, host): built by tuple.__new__,
    # not RequestSnapshot(...), whose __new__ is a Python function (a frame per mirrored request).
    fields = (
        request.method, path, query_string, tuple(fwd_headers), kept, note, request_id, peer_ip,
        request.headers.get("Host", ""),
    )  # fmt: skip
    return _new_tuple(RequestSnapshot, fields)


def response_snapshot(side: Side, upstream_name: str, result: ForwardResult) -> ResponseSnapshot:
    """What the client got from the primary, as listeners see it."""
    # (side, upstream, status, headers, body, body_complete, latency, error), built as above.
    fields = (
        side, upstream_name, result.upstream_status, result.response_headers, result.body, result.body_complete,
        result.latency, result.error,
    )  # fmt: skip
    return _new_tuple(ResponseSnapshot, fields)


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


def notify_done(observers: list[ExchangeObserver], primary: ResponseSnapshot) -> None:
    for observer in observers:
        try:
            observer.primary_done(primary)
        except Exception:
            log.exception("exchange observer %r failed in primary_done", observer)
