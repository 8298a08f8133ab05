"""Progress over time (pure): periods filled across the window, shares per route and overall, sparklines, the SVG."""

from __future__ import annotations

from reports.export_html import progress_svg
from reports.progress import build_progress, progress_document, sparkline
from shadow.store.types import ServedCount
from shadow.values import FlipRecord

DAY = 86400
T0 = 20_000 * DAY  # a UTC midnight


def _flip(t: float, route: str = "orders", to: str = "new") -> FlipRecord:
    return FlipRecord(t, "ana", route, "shadow", to, None, None, "ready", False, "{}")


COUNTS = [
    ServedCount(T0, "orders", "legacy", 80),
    ServedCount(T0, "", "legacy", 20),
    ServedCount(T0 + 2 * DAY, "orders", "legacy", 10),
    ServedCount(T0 + 2 * DAY, "orders", "new", 70),
    ServedCount(T0 + 2 * DAY, "", "legacy", 20),
]


def test_overall_share_counts_unrouted_requests_and_empty_days_have_none() -> None:
    """Overall is of every request (unrouted served by legacy); a day without requests has share None."""
    progress = build_progress(COUNTS, [_flip(T0 + DAY + 5)], since=T0 + 10, now=T0 + 2 * DAY + 100, by="day")
    assert [(p.start, p.requests, p.new_share) for p in progress.periods] == [
        (T0, 100, 0.0),
        (T0 + DAY, 0, None),
        (T0 + 2 * DAY, 100, 0.7),
    ]
    assert [(p.requests, p.new_share) for p in progress.routes["orders"]] == [(80, 0.0), (0, None), (80, 70 / 80)]
    assert list(progress.routes) == ["orders"]
    assert len(progress.flips) == 1


def test_flips_before_the_window_are_left_out() -> None:
    """Only flips at or after `since` are listed."""
    progress = build_progress(COUNTS, [_flip(T0 - 5), _flip(T0 + 5)], since=T0, now=T0 + DAY, by="day")
    assert [f.time for f in progress.flips] == [T0 + 5]


def test_json_document_shape() -> None:
    """periods/routes rows carry start (ISO UTC), requests and new_share; flips carry time, route and modes."""
    progress = build_progress(COUNTS, [_flip(T0 + 5)], since=T0, now=T0 + 2 * DAY, by="day")
    doc = progress_document(progress)
    assert doc["periods"][2] == {"start": "2024-10-06T00:00:00+00:00", "requests": 100, "new_share": 0.7}
    assert doc["routes"]["orders"][1] == {"start": "2024-10-05T00:00:00+00:00", "requests": 0, "new_share": None}
    assert doc["flips"][0]["route"] == "orders"
    assert doc["flips"][0]["to_mode"] == "new"


def test_sparkline_maps_shares_to_blocks() -> None:
    """0% is the lowest block, 100% the highest, no traffic a dot."""
    progress = build_progress(COUNTS, [], since=T0, now=T0 + 2 * DAY, by="day")
    assert sparkline(progress.routes["orders"]) == "▁·▇"


def test_svg_has_a_line_per_route_and_marks_flips() -> None:
    """The chart has the overall line, one per route, and a dashed mark labelled with each flip; no external refs."""
    progress = build_progress(COUNTS, [_flip(T0 + DAY)], since=T0, now=T0 + 2 * DAY, by="day")
    svg = progress_svg(progress)
    assert svg.startswith('<svg id="progress-chart"')
    assert svg.count('class="series"') == 2
    assert 'class="flip"' in svg
    assert "orders → new" in svg
    assert "http" not in svg
