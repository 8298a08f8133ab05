"""The messages between the proxy process and its shadow worker: framing and encoding, pure functions.

A frame is a 4-byte big-endian length and a `marshal`-encoded message: a tuple whose first item names it, or a list
of such tuples (`batch_frame`: what the proxy writes once per loop iteration, one `marshal.dumps` for every message of
the iteration, so strings shared between messages — header names, route ids — are written once, by reference).
marshal is the fastest stdlib codec for tuples of str/bytes/numbers, which is all these are, and it is safe here: the
stream is a socketpair between a process and the child it started, never anything a client can reach. Configs
cross as pickles (they are nested frozen dataclasses), once per reload.

proxy → worker:
  ("config", pickled Config)            before the first start that uses it
  ("start", seq, plan, route id, served_by, primary upstream, request, started_at, drop)
                                        a request on a mirroring route and the proxy's decision for it (`plan`:
                                        the `MirrorPlan` fields; the worker never decides again); with `drop` set,
                                        only the record of a copy the proxy had to drop
  ("primary", seq, snapshot)            the primary response of a started request that has copies under way
Nested tuples (`plan`, `request`, `snapshot`) hold their type's fields in declaration order (the snapshots are
NamedTuples: `tuple(snapshot)`), so reading one is `Type(*fields)`, never an index into a flat tuple;
tests/shadow/worker/test_wire.py checks the orders.
  ("traffic", counts)                   traffic counts, about once a second
  ("close",)                            finish what is under way, flush the store, report and exit
worker → proxy:
  ("ready",)                            the store is open: copies can be taken
  ("metrics", changes)                  metric changes since the last report (`metric_changes`), every 0.25 s
                                        even when empty: the proxy restarts a worker that stops reporting
  ("settled", seqs)                     the starts whose every row is now written to the store (or counted lost):
                                        the proxy forgets them; those it still holds when a worker dies were lost
                                        with it, and go to the next worker as drop records (`worker_lost`)
"""

from __future__ import annotations

import dataclasses
import marshal
import pickle
import struct
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from proxy.config.model import Config
from proxy.events import ExchangeStart, RequestSnapshot, ResponseSnapshot, Side
from proxy.metrics import Counter, Gauge, Histogram, Metric, Metrics
from proxy.tuples import new_tuple
from shadow.plan import CANDIDATE, MirrorPlan
from shadow.values import TrafficCount

Message = tuple[Any, ...]

_LEN = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a request body (≤ max_body) and a response (≤ its cap) fit with room to spare


class WireError(Exception):
    """The stream is not what the other side writes: the peer is not a strangler process of this version."""


def frame(message: Message) -> bytes:
    payload = marshal.dumps(message)
    return _LEN.pack(len(payload)) + payload


def batch_frame(messages: list[Message]) -> bytes:
    """Several messages in one frame, read back as those messages in order (`FrameReader`)."""
    payload = marshal.dumps(messages)
    return _LEN.pack(len(payload)) + payload


def _is_message(message: object) -> bool:
    return type(message) is tuple and bool(message) and type(message[0]) is str


class FrameReader:
    """Splits a byte stream into messages; feed it what the socket gives."""

    __slots__ = ("_have", "_need", "_parts")

    def __init__(self) -> None:
        # The start of a frame whose end has not arrived yet, in the pieces it came in: joined once complete, so a
        # multi-megabyte frame arriving in socket-sized reads is copied once, not once per read.
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0  # bytes the parts must reach before parsing is worth trying again

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by `data`, in order. Raises WireError on a stream no strangler process wrote."""
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            src = b"".join(self._parts)
            self._parts.clear()
        else:
            src = data  # usually whole frames arrive: no copy then
        out: list[Message] = []
        at, end = 0, len(src)
        need = 4
        with memoryview(src) as view:
            while end - at >= 4:
                (size,) = _LEN.unpack_from(src, at)
                if size > MAX_FRAME:
                    raise WireError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
                if end - at - 4 < size:
                    need = 4 + size
                    break
                try:
                    message = marshal.loads(view[at + 4 : at + 4 + size])
                except (ValueError, EOFError, TypeError) as exc:
                    raise WireError(f"undecodable frame: {exc}") from exc
                if type(message) is list and all(_is_message(m) for m in message):
                    out.extend(message)
                elif _is_message(message):
                    out.append(message)
                else:
                    raise WireError("a frame that is not a message tuple")
                at += 4 + size
        if at < end:
            self._parts.append(src[at:])
            self._have = end - at
            self._need = need
        return out


# --- proxy → worker --------------------------------------------------------------------------------------------


def config_message(config: Config) -> Message:
    # MappingProxyType does not pickle: the upstreams cross as a plain dict and are wrapped again on arrival.
    plain = dataclasses.replace(config, upstreams=dict(config.upstreams))
    return ("config", pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL))


def read_config(message: Message) -> Config:
    config = pickle.loads(message[1])  # written by our own parent process (see the module docstring)
    if not isinstance(config, Config):
        raise WireError("a config message without a Config")
    return dataclasses.replace(config, upstreams=MappingProxyType(dict(config.upstreams)))


class StartFrame(NamedTuple):
    """A "start" message as the worker reads it (a NamedTuple: one per mirrored request)."""

    seq: int
    plan: MirrorPlan  # decided in the proxy (`shadow.plan.plan_mirror`); carried out as it is
    route_id: str
    served_by: Side
    primary_upstream: str
    request: RequestSnapshot
    started_at: float
    drop: str | None  # set: the proxy dropped the copy (counted there); only its row is to be written


_NO_PLAN = MirrorPlan()


_NO_WIRE_PLAN: tuple[str | None, bool, bool] = (None, False, False)
_CANDIDATE_WIRE_PLAN: tuple[str | None, bool, bool] = (None, True, False)


def start_message(seq: int, plan: MirrorPlan, start: ExchangeStart, drop: str | None = None) -> Message:
    """A request and its plan; with `drop`, only the record of a copy the proxy dropped (no body crosses)."""
    route = start.route
    assert route is not None
    r = start.request
    request: tuple[object, ...]
    if drop is not None:
        request = (*r[:4], None, drop, *r[6:])  # RequestSnapshot's fields: body None, body_note the reason
        wire_plan = _NO_WIRE_PLAN
    else:
        request = tuple(r)  # the snapshot's fields (marshal writes exact tuples only)
        wire_plan = _CANDIDATE_WIRE_PLAN if plan is CANDIDATE else (plan.skip, plan.candidate, plan.noise)
    return ("start", seq, wire_plan, route.id, start.served_by, start.primary_upstream, request, start.started_at, drop)


def drop_record(start: Message, reason: str) -> Message:
    """The row-only record of a start message's request (no body, no plan): what the next worker writes, with
    `reason`, when the worker that had the request died before storing it. The same as `start_message` with
    `drop=reason` would have made, built only when a worker is lost rather than for every request."""
    _, seq, _, route_id, served_by, primary_upstream, r, started_at, _ = start
    request = (r[0], r[1], r[2], r[3], None, reason, r[6], r[7], r[8])
    return ("start", seq, _NO_WIRE_PLAN, route_id, served_by, primary_upstream, request, started_at, reason)


def start_route(start: Message) -> str:
    """The route id of a start message."""
    route_id: str = start[3]
    return route_id


def start_drop(start: Message) -> str | None:
    """The drop reason of a start message: None for a copy to make, else the reason its row is written for."""
    drop: str | None = start[8]
    return drop


def read_start(m: Message) -> StartFrame:
    _, seq, (skip, candidate, noise), route_id, served_by, primary_upstream, request, started_at, drop = m
    plan = CANDIDATE if candidate and not noise and skip is None else MirrorPlan(skip, candidate, noise)
    if drop is not None:
        plan = _NO_PLAN
    snapshot: RequestSnapshot = new_tuple(RequestSnapshot, _fields(request, _REQUEST_FIELDS))
    return new_tuple(StartFrame, (seq, plan, route_id, served_by, primary_upstream, snapshot, started_at, drop))


_REQUEST_FIELDS = len(RequestSnapshot._fields)
_RESPONSE_FIELDS = len(ResponseSnapshot._fields)


def _fields(fields: object, count: int) -> tuple[Any, ...]:
    """A snapshot's fields as they crossed (every field, in order: `tuple(snapshot)`), checked for their number: the
    snapshot is then built by `new_tuple`, which, unlike calling the NamedTuple, would take any number."""
    if type(fields) is not tuple or len(fields) != count:
        raise WireError(f"a snapshot of {len(fields) if type(fields) is tuple else type(fields).__name__} fields")
    return fields


def primary_message(seq: int, p: ResponseSnapshot) -> Message:
    return ("primary", seq, tuple(p))  # its fields in order (marshal writes exact tuples only)


def settled_message(seqs: Sequence[int]) -> Message:
    return ("settled", tuple(seqs))


def read_settled(m: Message) -> tuple[int, ...]:
    return tuple(m[1])


def read_primary(m: Message) -> tuple[int, ResponseSnapshot]:
    _, seq, fields = m
    snapshot: ResponseSnapshot = new_tuple(ResponseSnapshot, _fields(fields, _RESPONSE_FIELDS))
    return seq, snapshot.decoded()  # headers the proxy sent undecoded are decoded here


def traffic_message(counts: Sequence[TrafficCount]) -> Message:
    return ("traffic", tuple(dataclasses.astuple(c) for c in counts))


def read_traffic(m: Message) -> list[TrafficCount]:
    return [TrafficCount(*row) for row in m[1]]


# --- worker → proxy: metrics ----------------------------------------------------------------------------------
# The worker keeps its own registry; the proxy's /metrics shows the sum. Counters and histograms travel as
# increments (so they keep counting across a worker restart), gauges as their current values.

MetricState = dict[str, dict[tuple[str, ...], Any]]


def metric_changes(metrics: Metrics, last: MetricState, *, shadow: Counter | None = None) -> Message | None:
    """The changes since `last` (updated in place) as a message; None when nothing changed. `shadow`: reported
    instead of `metrics.shadow` (the worker reports outcomes once their rows are written, see
    `shadow.worker.process`)."""
    changes: list[tuple[Any, ...]] = []
    for metric in (shadow or metrics.shadow, metrics.shadow_queue, metrics.compare_time, *metrics.extra):
        seen = last.setdefault(metric.name, {})
        if isinstance(metric, Histogram):
            rows = []
            for labels, row in metric.series.items():
                before = seen.get(labels)
                if before != row:
                    delta = row if before is None else [a - b for a, b in zip(row, before, strict=True)]
                    rows.append((labels, tuple(delta)))
                    seen[labels] = list(row)
            if rows:
                changes.append(("histogram", metric.name, metric.help, metric.labelnames, metric.buckets, rows))
            continue
        kind = "gauge" if isinstance(metric, Gauge) else "counter"
        values = []
        for labels, value in metric.values.items():
            before = seen.get(labels)
            if before != value:
                values.append((labels, value if kind == "gauge" or before is None else value - before))
                seen[labels] = value
        if values:
            changes.append((kind, metric.name, metric.help, metric.labelnames, values))
    return ("metrics", tuple(changes)) if changes else None


def apply_metric_changes(metrics: Metrics, message: Message) -> None:
    """Add a worker's changes to this process's registry (metrics it does not know yet are created)."""
    by_name: dict[str, Metric] = {m.name: m for m in metrics.all()}
    for change in message[1]:
        kind, name, help_text, labelnames = change[0], change[1], change[2], tuple(change[3])
        metric = by_name.get(name)
        if kind == "histogram":
            if not isinstance(metric, Histogram):
                metric = Histogram(name, help_text, labelnames, tuple(change[4]))
                metrics.extra.append(metric)
                by_name[name] = metric
            for labels, delta in change[5]:
                row = metric.series.setdefault(tuple(labels), [0.0] * (len(metric.buckets) + 2))
                for i, d in enumerate(delta):
                    row[i] += d
            continue
        if metric is None or isinstance(metric, Histogram):
            metric = Gauge(name, help_text, labelnames) if kind == "gauge" else Counter(name, help_text, labelnames)
            metrics.extra.append(metric)
            by_name[name] = metric
        for labels, value in change[4]:
            if kind == "gauge" and isinstance(metric, Gauge):
                metric.set(tuple(labels), value)
            else:
                metric.inc(tuple(labels), value)
