"""The proxy ↔ shadow worker messages: typed on both ends, and nested tuples in their types' field order."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from proxy.config.model import Config, Match, Mirror, Route
from proxy.events import ExchangeStart, RequestSnapshot, ResponseSnapshot
from shadow.plan import CANDIDATE, MirrorPlan
from shadow.worker.wire import (
    FrameReader,
    WireError,
    drop_record,
    frame,
    primary_message,
    read_primary,
    read_start,
    start_drop,
    start_message,
    start_route,
)

pytestmark = pytest.mark.unit

ROUTE = Route("r1", 0, Match(path="/r"), "shadow", "legacy", "new", shadow=Mirror())
REQUEST = RequestSnapshot("GET", "/r", "a=1", (("Accept", "*/*"),), b"body", None, "req-1", "10.0.0.1", "h.example")


def _start() -> ExchangeStart:
    return ExchangeStart(
        Config(Path("routes.yaml"), routes=(ROUTE,)), ROUTE, "legacy", "legacy", ROUTE.shadow, REQUEST, time.time(), 0.0
    )


def _through_the_wire(message: tuple[object, ...]) -> tuple[object, ...]:
    (out,) = FrameReader().feed(frame(message))
    return out


@pytest.mark.parametrize("plan", [CANDIDATE, MirrorPlan(skip="request_too_large", noise=True), MirrorPlan(noise=True)])
def test_start_frame_carries_the_plan_and_the_request_unchanged(plan: MirrorPlan) -> None:
    """A start message read on the worker side gives back the proxy's plan and request snapshot, field for field."""
    start = _start()
    f = read_start(_through_the_wire(start_message(9, plan, start)))
    assert (f.seq, f.plan, f.route_id, f.served_by, f.primary_upstream) == (9, plan, "r1", "legacy", "legacy")
    assert f.request == REQUEST
    assert (f.started_at, f.drop) == (start.started_at, None)


def test_a_dropped_copy_crosses_without_its_body_or_plan() -> None:
    """With `drop`, the body stays in the proxy, the note says why, and the worker gets no plan to carry out."""
    f = read_start(_through_the_wire(start_message(0, CANDIDATE, _start(), "worker_busy")))
    assert f.drop == "worker_busy"
    assert f.request.body is None
    assert f.request.body_note == "worker_busy"
    assert f.plan == MirrorPlan()


@pytest.mark.parametrize("reason", ["worker_lost", "worker_busy"])
def test_drop_record_of_a_sent_start_is_the_dropped_copys_message(reason: str) -> None:
    """The row-only record the bridge makes from a start it sent (when the worker that had it died) is the same
    message as a start made as a drop with that reason: no body, no plan, the reason as the body note."""
    start = _start()
    sent = start_message(4, CANDIDATE, start)
    assert start_drop(sent) is None
    record = drop_record(sent, reason)
    assert record == start_message(4, CANDIDATE, start, reason)
    assert (start_drop(record), start_route(record)) == (reason, "r1")
    f = read_start(_through_the_wire(record))
    assert (f.drop, f.request.body, f.request.body_note, f.plan) == (reason, None, reason, MirrorPlan())


def test_primary_frame_is_the_response_snapshot() -> None:
    """A primary message gives back the same ResponseSnapshot."""
    snap = ResponseSnapshot("legacy", "legacy", 200, (("Content-Type", "text/plain"),), b"ok", True, 0.012, None)
    assert read_primary(_through_the_wire(primary_message(3, snap))) == (3, snap)


def test_primary_sent_with_undecoded_headers_is_read_decoded() -> None:
    """The proxy sends a primary's headers as the upstream sent them (bytes); the worker reads them decoded, bytes
    that are not UTF-8 kept as surrogate escapes, the same snapshot as one built decoded."""
    raw = ((b"Content-Type", b"text/plain"), (b"X-Name", b"caf\xe9"))
    sent = ResponseSnapshot("legacy", "legacy", 200, (), b"ok", True, 0.012, None, raw)
    seq, read = read_primary(_through_the_wire(primary_message(5, sent)))
    decoded = (("Content-Type", "text/plain"), ("X-Name", "caf\udce9"))
    assert (seq, read) == (5, ResponseSnapshot("legacy", "legacy", 200, decoded, b"ok", True, 0.012, None))
    assert read.raw_headers == ()


def test_snapshot_field_orders_are_what_the_wire_writes() -> None:
    """The wire writes snapshots positionally: a reordered snapshot type must fail here, not corrupt frames."""
    assert list(RequestSnapshot._fields) == [
        "method", "path", "query_string", "headers", "body", "body_note", "request_id", "client_ip", "host",
    ]  # fmt: skip
    assert list(ResponseSnapshot._fields) == [
        "side", "upstream", "status", "headers", "body", "body_complete", "latency", "error", "raw_headers",
    ]  # fmt: skip


def test_a_snapshot_with_the_wrong_number_of_fields_is_a_wire_error() -> None:
    """Snapshots are rebuilt from the fields that crossed without the NamedTuple's own argument check, so a start or
    primary whose snapshot lacks a field (or has one more) is refused as a stream no strangler process wrote."""
    start = start_message(1, CANDIDATE, _start())
    short_request = (*start[:6], start[6][:-1], *start[7:])
    with pytest.raises(WireError, match="8 fields"):
        read_start(_through_the_wire(short_request))
    snap = ResponseSnapshot("legacy", "legacy", 200, (), b"ok", True, 0.012, None)
    long_primary = ("primary", 3, (*snap, "extra"))
    with pytest.raises(WireError, match="10 fields"):
        read_primary(_through_the_wire(long_primary))
