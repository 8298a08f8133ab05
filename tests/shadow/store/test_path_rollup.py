"""path_rollup: every traffic count summed per hour by status and latency bucket, read back by `path_traffic`."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from shadow.records import TrafficTally
from shadow.store.database import Store
from shadow.values import TrafficCount, latency_bucket
from shadow.worker.wire import FrameReader, frame, read_traffic, traffic_message

HOUR = int(time.time()) // 3600 * 3600


def test_tally_counts_reach_path_traffic_with_statuses_and_latency(tmp_path: Path) -> None:
    """Requests tallied with their status and latency come back per path with a status mix and legacy buckets."""
    tally = TrafficTally()
    for status, seconds in ((200, 0.010), (200, 0.010), (404, 0.002)):
        tally.add(None, "legacy", "GET", "/users/1", status >= 500, seconds, status)
    tally.add(None, "new", "GET", "/users/1", False, 0.5, 200)
    with Store.open(tmp_path / "s.db") as store:
        store.write_batch([], tally.drain())
        (row,) = store.path_traffic()
    assert (row.route_id, row.method, row.path, row.requests) == ("", "GET", "/users/1", 4)
    assert dict(row.statuses) == {200: 3, 404: 1}
    assert dict(row.legacy_buckets) == {latency_bucket(10.0): 2, latency_bucket(2.0): 1}


def test_counts_without_a_histogram_still_count_requests(tmp_path: Path) -> None:
    """A traffic count written without a histogram adds its requests, with no status or latency."""
    with Store.open(tmp_path / "s.db") as store:
        minute = int(time.time()) // 60 * 60
        store.write_batch([], [TrafficCount(minute, "", "legacy", "legacy", "GET", "/x", 3, 0, 3.0)])
        (row,) = store.path_traffic()
    assert (row.requests, row.statuses, row.legacy_buckets) == (3, (), ())


def test_traffic_counted_before_the_table_existed_is_read_from_traffic(tmp_path: Path) -> None:
    """Minutes before `path_rollup_since` come from `traffic` (no double counting after it); --since applies."""
    path = tmp_path / "s.db"
    with Store.open(path) as store:
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'path_rollup_since'", (str(HOUR),))
        conn.execute("INSERT INTO traffic VALUES (?, '', 'legacy', 'legacy', 'GET', '/old', 5, 0, 5.0)", (HOUR - 7200,))
    with Store.open(path) as store:
        hist = ((200, 3, 2),)
        store.write_batch([], [TrafficCount(HOUR + 60, "", "legacy", "legacy", "GET", "/old", 2, 0, 2.0, hist)])
        assert [(r.path, r.requests) for r in store.path_traffic()] == [("/old", 7)]
        assert [(r.path, r.requests) for r in store.path_traffic(since=HOUR - 3600)] == [("/old", 2)]


def test_histograms_cross_the_worker_wire_unchanged() -> None:
    """Traffic counts with their histograms survive the frame a proxy process sends its shadow worker."""
    tally = TrafficTally()
    tally.add(None, "legacy", "GET", "/a", False, 0.01, 200)
    tally.add(None, "legacy", "GET", "/a", True, 0.02, 502)
    counts = tally.drain()
    (message,) = FrameReader().feed(frame(traffic_message(counts)))
    assert read_traffic(message) == counts
    assert sorted(s for s, _, _ in counts[0].histogram) == [200, 502]


def test_retention_deletes_old_path_rollup_hours(tmp_path: Path) -> None:
    """Hours older than max_age leave path_rollup with the other rollups; newer ones stay."""
    now = time.time()
    hist = ((200, 3, 1),)
    old, new = int(now - 10 * 86400) // 60 * 60, int(now) // 60 * 60
    with Store.open(tmp_path / "s.db") as store:
        store.write_batch([], [TrafficCount(m, "", "legacy", "legacy", "GET", p, 1, 0, 1.0, hist)
                               for m, p in ((old, "/old"), (new, "/new"))])  # fmt: skip
        store.enforce_retention(7 * 86400, 1000, now)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert [r[0] for r in conn.execute("SELECT path FROM path_rollup")] == ["/new"]
