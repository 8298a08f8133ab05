"""shadow.records: the exchange record of a compared pair holds each value under its own field name.

`compared_record` builds the record positionally (`new_tuple`, to skip the NamedTuple's Python-level __new__), so a
value put in the wrong place would still make a record; these tests give every field a distinct value and read each
one back by name.
"""

from __future__ import annotations

from pathlib import Path

from proxy.config.loader import load_config
from proxy.config.model import Redact
from proxy.events import ResponseSnapshot, Side
from shadow.records import compared_record
from shadow.redact import Redactor
from shadow.values import Comparison, Difference, ExchangeRecord, FieldDiff, StoredBody
from tests.shadow.shadow_fixtures import write_config

ROUTES = """
- id: orders
  match: {path: "/api/orders/{id}"}
  mode: shadow
"""


def _snapshot(side: Side, status: int, body: bytes, latency: float, header: str) -> ResponseSnapshot:
    return ResponseSnapshot(side, side, status, (("content-type", "application/json"), ("x-side", header)), body,
                            True, latency)  # fmt: skip


def _record(tmp_path: Path, *, keep_bodies: bool, comparison: Comparison | None) -> ExchangeRecord:
    """A record of a fixed pair; the outcome is the comparison's, or a candidate error without one."""
    config = load_config(write_config(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", ROUTES))
    return compared_record(
        time=1234.5,
        route=config.routes[0],
        pair="candidate",
        method="PATCH",
        path="/api/orders/7",
        query="a=1",
        request_id="req-1",
        served_by="legacy",
        request_headers=(("accept", "*/*"),),
        request_body=StoredBody(b"{}", 2, False),
        legacy=_snapshot("legacy", 200, b'{"a": 1}', 0.002, "L"),
        new=_snapshot("new", 201, b'{"a": 22}', 0.003, "N"),
        outcome=comparison.outcome if comparison is not None else "candidate_error",
        reason=None if comparison is not None else "status_500",
        comparison=comparison,
        redactor=Redactor(b"k" * 32, Redact()),
        cap=1024,
        keep_bodies=keep_bodies,
    )


def test_compared_record_puts_every_value_under_its_field(tmp_path: Path) -> None:
    """Each of the record's fields holds the value given (or derived) for it, not a neighbour's."""
    diff = Difference("$.a", "$.a", "changed", "1", "22")
    comparison = Comparison("mismatch", (diff,), 0.004, "a note", (FieldDiff("$.a", "changed", 1),), 1)
    record = _record(tmp_path, keep_bodies=True, comparison=comparison)
    assert len(record) == len(ExchangeRecord._fields)
    assert record._asdict() == {
        "time": 1234.5,
        "route_id": "orders",
        "mode": "shadow",
        "pair": "candidate",
        "method": "PATCH",
        "template": "/api/orders/{id}",
        "path": "/api/orders/7",
        "query": "a=1",
        "request_id": "req-1",
        "served_by": "legacy",
        "outcome": "mismatch",
        "reason": None,
        "legacy_status": 200,
        "legacy_latency_ms": 2.0,
        "legacy_size": 8,
        "new_status": 201,
        "new_latency_ms": 3.0,
        "new_size": 9,
        "compare_ms": 4.0,
        "request_headers": (("accept", "*/*"),),
        "legacy_headers": (("content-type", "application/json"), ("x-side", "L")),
        "new_headers": (("content-type", "application/json"), ("x-side", "N")),
        "request_body": StoredBody(b"{}", 2, False),
        "legacy_body": StoredBody(b'{"a": 1}', 8, False),
        "new_body": StoredBody(b'{"a": 22}', 9, False),
        "differences": (diff,),
        "note": "a note",
        "fields": (FieldDiff("$.a", "changed", 1),),
        "replay_of": None,
    }


def test_an_unsampled_match_keeps_neither_bodies_nor_response_headers(tmp_path: Path) -> None:
    """Without bodies kept, a match's record has no response headers or bodies; sizes and timings stay."""
    record = _record(tmp_path, keep_bodies=False, comparison=Comparison("match", (), 0.001))
    assert (record.legacy_headers, record.new_headers, record.legacy_body, record.new_body) == ((), (), None, None)
    assert (record.legacy_size, record.new_size, record.compare_ms, record.differences) == (8, 9, 1.0, ())


def test_a_candidate_error_without_comparison_has_no_compare_time(tmp_path: Path) -> None:
    """No comparison: no compare time, differences, note or fields; the reason is kept."""
    record = _record(tmp_path, keep_bodies=False, comparison=None)
    assert (record.outcome, record.reason) == ("candidate_error", "status_500")
    assert (record.compare_ms, record.differences, record.note, record.fields) == (None, (), None, ())
    assert record.legacy_headers != ()  # not a match: response headers are kept
