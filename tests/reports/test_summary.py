"""reports.summary and reports.render on a store filled by the real proxy pipeline, plus hand-written edge cases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from proxy.config.loader import load_config, parse_config
from reports.render import render_exchange, render_report
from reports.summary import Report, RouteSummary, UnknownRouteError, build_report
from shadow.store.database import Store
from shadow.values import Difference, ExchangeRecord, StoredBody
from tests.reports.report_fixtures import Filled, fill


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return fill(tmp_path_factory, "summary")


@pytest.fixture(scope="module")
def report(filled: Filled) -> Report:
    with Store.open_readers([filled.db]) as store:
        return build_report(store, load_config(filled.config), sources=[str(filled.db)])


def _route(report: Report, route_id: str) -> RouteSummary:
    return next(r for r in report.routes if r.id == route_id)


def _rendered(renderable: object) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_routes_follow_config_order(report: Report) -> None:
    """Every configured route is reported, in routes.yaml order, with its current mode."""
    assert [r.id for r in report.routes] == [
        "orders-read", "orders-list", "orders-write", "customers", "catalog", "search", "reports",
    ]  # fmt: skip
    assert _route(report, "reports").mode == "new"


def test_renamed_field_is_a_real_difference(report: Report) -> None:
    """customers: $.phone removed and $.phone_number added are real fields, so the route is diverging."""
    customers = _route(report, "customers")
    fields = {f.path: f for f in customers.fields}
    assert fields["$.phone"].real
    assert fields["$.phone_number"].real
    assert customers.mismatched == customers.compared > 0
    assert customers.noise_only == 0
    assert customers.verdict == "diverging"
    assert fields["$.phone"].rate == pytest.approx(1.0)


def test_volatile_timestamp_is_noise(report: Report) -> None:
    """orders-list: $.meta.generated_at differs legacy↔legacy too, so it is noise, volatile and suggested."""
    orders = _route(report, "orders-list")
    field = next(f for f in orders.fields if f.path == "$.meta.generated_at")
    assert field.noise
    assert field.volatile
    assert field.suggested_ignore
    assert field.noise_share > 0.5
    assert orders.noise_compared > 0
    assert orders.mismatched == 0
    assert orders.noise_only == orders.compared > 0
    assert orders.verdict == "ready"
    assert orders.suggested_ignores == ("$.meta.generated_at",)


def test_candidate_errors_verdict(report: Report) -> None:
    """search: the new side's 500 every 17th call makes candidate errors, which win over divergence."""
    search = _route(report, "search")
    assert search.candidate_errors > 0
    assert search.errors_by_reason
    assert search.verdict == "candidate errors"


def test_routes_whose_config_mirrors_nothing_are_not_mirrored(report: Report) -> None:
    """A legacy-only route and a new route without verify can never compare anything: `not mirrored`, with the
    reason and the fix (not `needs samples`, which would wait forever), and no latency."""
    fixes = {"orders-write": "flip it to shadow", "reports": "add verify: {}"}
    for route_id, fix in fixes.items():
        route = _route(report, route_id)
        assert route.compared == 0
        assert route.verdict == "not mirrored"
        assert fix in route.verdict_reason
        assert route.latency.legacy is None
        assert route.latency.new is None
    assert _route(report, "reports").served_new > 0
    assert _route(report, "orders-write").served_legacy > 0


def test_header_traffic_and_unrouted(report: Report) -> None:
    """The header counts requests per mode and routes per mode, and lists /health as unrouted."""
    modes = {m.mode: m for m in report.modes}
    assert modes["shadow"].routes == 5
    assert modes["new"].routes == 1
    assert modes["legacy"].routes == 1
    assert modes["shadow"].requests > 0
    assert sum(m.requests for m in report.modes) + report.unrouted_requests == report.total_requests
    assert [(u.method, u.path) for u in report.unrouted] == [("GET", "/health")]
    assert report.unrouted_requests == report.unrouted[0].count > 0


def test_latency_of_shadowed_routes(report: Report) -> None:
    """Shadowed routes have p50 ≤ p95 ≤ p99 on both sides and a ratio."""
    lat = _route(report, "orders-read").latency
    assert lat.legacy is not None
    assert lat.new is not None
    assert lat.legacy.p50 <= lat.legacy.p95 <= lat.legacy.p99
    assert lat.ratio("p99") is not None


def test_route_filter_and_unknown_route(filled: Filled) -> None:
    """--route keeps one route; an unknown id is an error naming the known ones."""
    config = load_config(filled.config)
    with Store.open_readers([filled.db]) as store:
        one = build_report(store, config, route_id="customers")
        assert [r.id for r in one.routes] == ["customers"]
        with pytest.raises(UnknownRouteError, match="orders-read"):
            build_report(store, config, route_id="nope")


def test_since_in_the_future_is_empty(filled: Filled) -> None:
    """A window that starts after the traffic counts nothing."""
    with Store.open_readers([filled.db]) as store:
        later = build_report(store, load_config(filled.config), since=time.time() + 7200)
    assert all(r.compared == 0 and r.requests == 0 for r in later.routes)
    assert later.total_requests == 0


def test_rendered_report_at_120_columns(report: Report) -> None:
    """The terminal report names routes, verdicts and the key fields with their class."""
    text = _rendered(render_report(report))
    for needle in ("orders-list", "customers", "ready", "diverging", "candidate errors", "needs samples",
                   "$.phone_number", "$.meta.generated_at", "GET", "/health", "Traffic by mode"):  # fmt: skip
        assert needle in text, needle
    line = next(ln for ln in text.splitlines() if "$.meta.generated_at" in ln)
    assert "noise" in line
    assert "ignore" in line
    line = next(ln for ln in text.splitlines() if "$.phone_number" in ln)
    assert "real" in line


def test_rendered_exchange_highlights_differing_paths(filled: Filled) -> None:
    """diffs show's view of a customers mismatch shows the removed and added field as -/+ lines."""
    with Store.open_readers([filled.db]) as store:
        row = store.list_exchanges(route_id="customers", outcome="mismatch", limit=1)[0]
        detail = store.get_exchange(row.id)
    assert detail is not None
    text = _rendered(render_exchange(detail))
    assert '- "phone":' in text.replace("  ", " ").replace("-   ", "- ") or '-   "phone":' in text
    assert '"phone_number":' in text
    assert "GET /api/customers/" in text


# --- hand-written edge cases ------------------------------------------------------------------------------------

EDGE_CONFIG = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}
  new: {url: "http://127.0.0.1:9002"}
defaults:
  readiness: {min_compared: 1}
routes:
  - id: r
    match: {path: /r}
    mode: shadow
    noise: {sample: 1.0}
"""


def _record(now: float, pair: str, outcome: str, *groups: str) -> ExchangeRecord:
    diffs = tuple(Difference(g, g, "changed", '"a"', '"b"') for g in groups)
    body = StoredBody(b'{"a": 1}', 8, False)
    return ExchangeRecord(
        time=now, route_id="r", mode="shadow", pair=pair, method="GET", template="/r", path="/r", query="",  # type: ignore[arg-type]
        request_id="x", served_by="legacy", outcome=outcome, reason=None, legacy_status=200,  # type: ignore[arg-type]
        legacy_latency_ms=1.0, legacy_size=8, new_status=200, new_latency_ms=2.0, new_size=8,
        legacy_body=body, new_body=body, differences=diffs,
    )  # fmt: skip


def test_mixed_exchange_counts_as_real(tmp_path: Path) -> None:
    """An exchange with one noise field and one real field is a real mismatch; noise-only ones are not."""
    now = time.time()
    db = tmp_path / "edge.db"
    records = [_record(now, "noise", "mismatch", "$.stamp") for _ in range(10)]
    records += [_record(now, "candidate", "mismatch", "$.stamp") for _ in range(7)]
    records += [_record(now, "candidate", "mismatch", "$.stamp", "$.price") for _ in range(2)]
    records += [_record(now, "candidate", "match") for _ in range(1)]
    with Store.open(db) as store:
        store.write_batch(records)
    config = parse_config(EDGE_CONFIG, tmp_path / "routes.yaml")
    with Store.open_readers([db]) as store:
        route = build_report(store, config).routes[0]
    fields = {f.path: f for f in route.fields}
    assert fields["$.stamp"].noise
    assert fields["$.price"].real
    assert (route.compared, route.mismatched, route.noise_only, route.matched) == (10, 2, 7, 8)
    assert route.verdict == "diverging"
