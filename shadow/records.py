"""Turn what the shadow listener saw into rows for the store: redacted `ExchangeRecord`s and per-minute traffic.

Pure apart from `TrafficTally`'s own counts; `shadow.judging` calls `exchange_record` from its compare thread
and the rest on the event loop. Everything secret goes through a `Redactor` here, before a record exists at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

from proxy.config.model import Route
from proxy.events import ExchangeStart, Headers, ResponseSnapshot, Side
from proxy.tuples import new_tuple
from shadow.judge.normalize import UndecodableBody, decode_body, header_value
from shadow.redact import Redactor
from shadow.values import Comparison, ExchangeRecord, Outcome, Pair, StoredBody, TrafficCount, latency_bucket


def stored_body(headers: Headers, data: bytes | None, redactor: Redactor, cap: int) -> StoredBody | None:
    """A body as the store keeps it: decoded (redaction must see plain text; reports read either form), redacted,
    capped. None when there is no body, or it cannot be decoded and so cannot be redacted."""
    if data is None:
        return None
    try:
        plain = decode_body(headers, data)
    except UndecodableBody:
        return None
    clean = redactor.body(header_value(headers, "content-type"), plain)
    return StoredBody(clean[:cap], len(plain), len(clean) > cap)


def exchange_record(
    start: ExchangeStart,
    pair: Pair,
    legacy: ResponseSnapshot,
    new: ResponseSnapshot,
    outcome: Outcome,
    reason: str | None,
    comparison: Comparison | None,
    redactor: Redactor,
    *,
    keep_bodies: bool,
) -> ExchangeRecord:
    """The record of a compared (or candidate-failed) pair, legacy and new already oriented."""
    route, req, cap = start.route, start.request, start.config.store.body_cap
    assert route is not None
    return compared_record(
        time=start.started_at,
        route=route,
        pair=pair,
        method=req.method,
        path=req.path,
        query=redactor.query(req.query_string),
        request_id=req.request_id,
        served_by=start.served_by,
        request_headers=redactor.headers(req.headers),
        request_body=stored_body(req.headers, req.body, redactor, cap) if keep_bodies else None,
        legacy=legacy,
        new=new,
        outcome=outcome,
        reason=reason,
        comparison=comparison,
        redactor=redactor,
        cap=cap,
        keep_bodies=keep_bodies,
    )


def compared_record(
    *,
    time: float,
    route: Route,
    pair: Pair,
    method: str,
    path: str,
    query: str,
    request_id: str,
    served_by: Side,
    request_headers: Headers,
    request_body: StoredBody | None,
    legacy: ResponseSnapshot,
    new: ResponseSnapshot,
    outcome: Outcome,
    reason: str | None,
    comparison: Comparison | None,
    redactor: Redactor,
    cap: int,
    keep_bodies: bool,
) -> ExchangeRecord:
    """A record of both sides of a pair; the request fields must already be redacted (live traffic and replay)."""

    # Response headers go with the bodies: kept for every exchange but an unsampled match, whose compared headers
    # were equal anyway (they were most of such a row's bytes, and most of its cost to write).
    keep_headers = keep_bodies or outcome != "match"

    # Built by `new_tuple` from every field in order (proxy.tuples): one per compared pair, where calling the
    # NamedTuple with 28 keywords runs its Python-level __new__ (about 0.7 µs more). tests/shadow/test_records.py
    # checks each field by name.
    record: ExchangeRecord = new_tuple(
        ExchangeRecord,
        (
            time,
            route.id,  # route_id
            route.mode,  # mode
            pair,
            method,
            route.match.path,  # template
            path,
            query,
            request_id,
            served_by,
            outcome,
            reason,
            legacy.status or None,  # legacy_status
            legacy.latency * 1000,  # legacy_latency_ms
            len(legacy.body) if legacy.body is not None else None,  # legacy_size
            new.status or None,  # new_status
            new.latency * 1000,  # new_latency_ms
            len(new.body) if new.body is not None else None,  # new_size
            comparison.seconds * 1000 if comparison else None,  # compare_ms
            request_headers,
            redactor.headers(legacy.headers) if keep_headers else (),  # legacy_headers
            redactor.headers(new.headers) if keep_headers else (),  # new_headers
            request_body,
            stored_body(legacy.headers, legacy.body, redactor, cap) if keep_bodies else None,  # legacy_body
            stored_body(new.headers, new.body, redactor, cap) if keep_bodies else None,  # new_body
            tuple(redactor.redact_difference(d) for d in comparison.differences) if comparison else (),  # differences
            comparison.note if comparison else None,  # note
            redactor.fields(comparison.fields) if comparison else (),  # fields
            None,  # replay_of
        ),
    )
    return record


def unpaired_record(
    start: ExchangeStart, pair: Pair, outcome: Outcome, reason: str, redactor: Redactor
) -> ExchangeRecord:
    """The record of an exchange that was not compared: skipped or dropped, with the reason."""
    route, req = start.route, start.request
    assert route is not None
    return ExchangeRecord(
        time=start.started_at,
        route_id=route.id,
        mode=route.mode,
        pair=pair,
        method=req.method,
        template=route.match.path,
        path=req.path,
        query=redactor.query(req.query_string),
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


_TrafficKey = tuple[str, str, str, str, str]
_CountKey = tuple[str, str, str, str, str, int, int]  # the traffic key, then status and latency bucket


@dataclass(slots=True)
class TrafficTally:
    """Per-minute request counts by route and side (and by status and latency bucket, for `path_rollup`), summed
    in memory and drained to the store in batches.

    Called for every request the proxy serves, so `add` is one clock read, a bisect and one dict update; the
    counts of the minute in progress sit in `counts`, earlier minutes in `done` until the next drain."""

    counts: dict[_CountKey, list[float]] = field(default_factory=dict)
    minute: int = 0
    done: list[TrafficCount] = field(default_factory=list)

    def add(
        self,
        route: Route | None,
        served_by: Side,
        method: str,
        path: str,
        failed: bool,
        latency: float,
        status: int = 0,
    ) -> None:
        """One served request: unrouted ones by concrete path, routed ones by the route's path template."""
        now = time.time()
        if now - self.minute >= 60:
            self._roll(int(now) // 60 * 60)
        ms = latency * 1000
        if route is None:
            key = ("", "legacy", served_by, method, path, status, latency_bucket(ms))
        else:
            key = (route.id, route.mode, served_by, method, route.match.path, status, latency_bucket(ms))
        row = self.counts.get(key)
        if row is None:
            self.counts[key] = [1.0, float(failed), ms]
        else:
            row[0] += 1
            row[1] += failed
            row[2] += ms

    def _roll(self, minute: int) -> None:
        self.done.extend(self._counts())
        self.counts = {}
        self.minute = minute

    def _counts(self) -> list[TrafficCount]:
        """The minute's counts summed per traffic key, each with its (status, bucket, requests) histogram."""
        summed: dict[_TrafficKey, list[float]] = {}
        histograms: dict[_TrafficKey, list[tuple[int, int, int]]] = {}
        for (route_id, mode, side, method, path, status, bucket), (c, e, lat) in self.counts.items():
            key = (route_id, mode, side, method, path)
            into = summed.get(key)
            if into is None:
                summed[key] = [c, e, lat]
                histograms[key] = [(status, bucket, int(c))]
            else:
                into[0] += c
                into[1] += e
                into[2] += lat
                histograms[key].append((status, bucket, int(c)))
        minute = self.minute
        return [
            TrafficCount(
                minute, route_id, mode, cast(Side, side), method, path, int(c), int(e), lat,
                tuple(histograms[(route_id, mode, side, method, path)]),
            )
            for (route_id, mode, side, method, path), (c, e, lat) in summed.items()
        ]  # fmt: skip

    def drain(self) -> list[TrafficCount]:
        out = self.done + self._counts()
        self.done, self.counts = [], {}
        return out
