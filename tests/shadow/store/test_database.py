"""The SQLite store: schema, writes and rollups, retention, the writer thread, and reads across files."""

from __future__ import annotations

import math
import multiprocessing
import random
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import sqlite_utils

from proxy.config.model import Retention
from shadow.store.database import Store, StoreError
from shadow.store.migrations import MIGRATIONS, SCHEMA_VERSION, _field_rollup_kind
from shadow.store.types import Percentiles
from shadow.store.writer import StoreWriter
from shadow.values import (
    LATENCY_BOUNDS_MS,
    Difference,
    DiffKind,
    ExchangeRecord,
    FlipRecord,
    StoredBody,
    TrafficCount,
    field_diffs,
)

NOW = 1_700_000_000.0  # 800 s into an hour, so "since" windows exercise the partial-hour path
HOUR = 3600.0
ROOT = Path(__file__).resolve().parents[3]


def make_record(**changes: object) -> ExchangeRecord:
    base = ExchangeRecord(
        time=NOW,
        route_id="orders",
        mode="shadow",
        pair="candidate",
        method="GET",
        template="/orders/{id}",
        path="/orders/1",
        query="",
        request_id="req-1",
        served_by="legacy",
        outcome="match",
        reason=None,
        legacy_status=200,
        legacy_latency_ms=12.5,
        legacy_size=100,
        new_status=200,
        new_latency_ms=14.0,
        new_size=100,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def count_rows(path: Path, table: str = "exchanges") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "strangler.db"


def test_round_trip_keeps_everything_and_compresses_bodies(db_path: Path) -> None:
    """A record written with headers, bodies and differences reads back equal, and bodies are compressed on disk."""
    body = b'{"note": "' + b"plaintext-marker " * 400 + b'"}'
    record = make_record(
        outcome="mismatch",
        query="page=2",
        compare_ms=0.4,
        request_headers=(("accept", "application/json"), ("x-dup", "1"), ("x-dup", "2")),
        legacy_headers=(("content-type", "application/json"),),
        new_headers=(("content-type", "text/plain"),),
        request_body=StoredBody(b"", 0, False),
        legacy_body=StoredBody(body, len(body), False),
        new_body=StoredBody(body[:100], 5000, True),
        differences=(
            Difference("$.items[0].qty", "$.items[*].qty", "changed", "1", "2"),
            Difference("$.items[1].qty", "$.items[*].qty", "changed", "3", "4"),
            Difference("header.content-type", "header.content-type", "changed", '"a"', '"b"'),
            Difference("$.gone", "$.gone", "removed", "true", None),
        ),
        note="body compared as text: not valid JSON",
    )
    with Store.open(db_path) as store:
        store.write_batch([record, make_record()])
        rows = store.list_exchanges()
        detail = store.get_exchange(rows[-1].id)
        assert store.get_exchange(9999) is None
    assert detail is not None
    assert detail.record == record
    assert rows[-1].difference_count == 4
    on_disk = b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.name.startswith(db_path.name))
    assert b"plaintext-marker plaintext-marker" not in on_disk


def test_none_and_bytes_bind_as_null_and_blob_with_the_stores_adapters(db_path: Path) -> None:
    """The identity adapters the store registers for None and bytes (sqlite3's adapter lookup is slow for both)
    bind exactly what was given: NULL and the same BLOB, in the store and in any other connection."""
    store = Store.open(db_path)
    store.close()
    conn = sqlite3.connect(":memory:")
    row = conn.execute("SELECT typeof(?), typeof(?), ?, ?", (None, b"\x00ab", None, b"\x00ab")).fetchone()
    assert row == ("null", "blob", None, b"\x00ab")


def test_file_is_private_and_in_wal_mode(db_path: Path) -> None:
    """The store file and its WAL companions are created with mode 0600, and the journal mode is WAL."""
    with Store.open(db_path) as store:
        store.write_batch([make_record()])
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        assert len(files) >= 2
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_version_recorded_and_reopen_is_idempotent(db_path: Path) -> None:
    """Opening twice migrates once: schema_version is stored, data survives, and a newer schema is refused."""
    with Store.open(db_path) as store:
        store.write_batch([make_record()])
    with Store.open(db_path) as store:
        assert len(store.list_exchanges()) == 1
    with sqlite3.connect(db_path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer"):
        Store.open(db_path)


def first_schema_store(path: Path, rows: list[dict[str, object]]) -> None:
    """A store file as the first release wrote it (only the first migration), holding `rows` of exchanges."""
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    base = {"time": NOW, "route_id": "orders", "mode": "shadow", "pair": "candidate", "method": "GET",
            "path": "/orders/1", "outcome": "match", "request_id": "old"}  # fmt: skip
    db.table("exchanges").insert_all([{**base, **row} for row in rows])
    db.close()


def test_a_version_1_store_gains_the_note_column_and_keeps_its_rows(db_path: Path) -> None:
    """A store written by the first schema (no exchanges.note) is migrated on open: its rows read back with no
    note, and new rows keep theirs."""
    first_schema_store(db_path, [{"request_id": "old"}])
    with Store.open(db_path) as store:
        store.write_batch([make_record(request_id="new", outcome="mismatch", note="3 more differences not listed")])
        details = [store.get_exchange(row.id) for row in store.list_exchanges()]
    notes = {d.record.request_id: d.record.note for d in details if d is not None}
    assert notes == {"old": None, "new": "3 more differences not listed"}
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_a_store_from_before_field_kinds_reads_old_field_counts_with_unknown_kind(db_path: Path) -> None:
    """field_rollup rows written before kinds were stored survive the migration with kind '' (unknown): counted,
    but with no kind; rows written after carry theirs, and the field's kind is merged from the known ones."""
    step = MIGRATIONS.index(_field_rollup_kind)
    db = sqlite_utils.Database(db_path)  # the schema just before the kind step, whatever steps come after it
    for migration in MIGRATIONS[:step]:
        migration(db)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(step),))
    hour = int(NOW // HOUR * HOUR)
    db.execute(
        "INSERT INTO field_rollup (hour, route_id, pair, grp, count) VALUES (?, 'orders', 'candidate', '$.a', 4)",
        (hour,),
    )
    db.conn.commit()
    db.close()
    removed = Difference("$.a", "$.a", "removed", "1", None)
    with Store.open(db_path) as store:
        store.write_batch([make_record(outcome="mismatch", differences=(removed,)) for _ in range(3)])
        [field] = store.field_stats()
    assert (field.group, field.count, field.kinds, field.kind) == ("$.a", 7, (("removed", 3),), "removed")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert conn.execute("SELECT kind FROM field_rollup ORDER BY kind").fetchall() == [("",), ("removed",)]


def test_field_kinds_per_exchange_from_rollups_and_the_partial_hour(db_path: Path) -> None:
    """field_stats gives each group the kind of each exchange's differences in it (mixed when several in one
    exchange), the same from the rollups and from the raw rows of a partial first hour."""

    def diff(group: str, kind: DiffKind) -> Difference:
        return Difference(group, group, kind, None if kind == "added" else "1", None if kind == "removed" else "2")

    shapes: list[tuple[Difference, ...]] = [
        (diff("$.gone", "removed"), diff("$.x", "changed")),
        (diff("$.gone", "removed"), diff("$.x", "type_changed")),
        (diff("$.gone", "changed"), diff("$.x", "changed")),
        (diff("$.x", "changed"), replace(diff("$.x", "removed"), path="$.y")),  # two kinds in one exchange
    ]
    records = [
        make_record(time=NOW - 2 * HOUR + i * 60, outcome="mismatch", differences=shapes[i % len(shapes)])
        for i in range(80)
    ]
    since = NOW - HOUR - 600.5
    with Store.open(db_path) as store:
        store.write_batch(records)
        for window in (None, since):
            stats = {f.group: f for f in store.field_stats(since=window)}
            chosen = [r for r in records if window is None or r.time >= window]
            expected: dict[str, dict[str, int]] = {}
            for r in chosen:
                for f in field_diffs(r.differences):
                    expected.setdefault(f.group, {})[f.kind] = expected.setdefault(f.group, {}).get(f.kind, 0) + 1
            assert {g: dict(s.kinds) for g, s in stats.items()} == expected
            assert {g: s.count for g, s in stats.items()} == {g: sum(k.values()) for g, k in expected.items()}
            assert stats["$.gone"].kind == "mixed"
            assert stats["$.x"].kinds[0][0] == "changed"


def test_an_old_store_gains_microsecond_latencies_from_its_millisecond_ones(db_path: Path) -> None:
    """Rows written before latencies were stored in µs are filled from the ms columns on open, so old files read
    exactly as before and their percentiles are exact."""
    first_schema_store(
        db_path,
        [{"legacy_latency_ms": 12.3456, "new_latency_ms": 20.0004}, {"legacy_latency_ms": None, "outcome": "skipped"}],
    )
    with Store.open(db_path) as store:
        [row] = [r for r in store.list_exchanges() if r.outcome == "match"]
        assert (row.legacy_latency_ms, row.new_latency_ms) == (12.346, 20.0)
        assert store.latency_percentiles()[("orders", "legacy")] == Percentiles(12.346, 12.346, 12.346, count=1)
    with sqlite3.connect(db_path) as conn:
        stored = conn.execute("SELECT legacy_latency_us, new_latency_us FROM exchanges ORDER BY id").fetchall()
    assert stored == [(12346, 20000), (None, None)]


def test_open_without_create_refuses_missing_file(tmp_path: Path) -> None:
    """create=False and open_readers never create a file; they raise StoreError naming it."""
    with pytest.raises(StoreError, match=r"missing\.db"):
        Store.open(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match=r"missing\.db"):
        Store.open_readers([tmp_path / "missing.db"])
    assert not (tmp_path / "missing.db").exists()


def test_rollups_match_raw_counts(db_path: Path) -> None:
    """route_stats and field_stats from rollups equal counts over the raw rows, also for a mid-hour `since`."""
    rng = random.Random(7)
    outcomes = ["match", "mismatch", "candidate_error", "skipped", "dropped"]
    records = []
    for i in range(600):
        outcome = rng.choice(outcomes)
        diffs: tuple[Difference, ...] = ()
        if outcome == "mismatch":
            groups = rng.sample(["$.a", "$.b[*].c", "status"], rng.randint(1, 3))
            diffs = tuple(Difference(g.replace("*", str(k)), g, "changed", "1", "2") for g in groups for k in range(2))
        records.append(
            make_record(
                time=NOW - 5 * HOUR + i * 30,
                route_id=rng.choice(["orders", "users"]),
                pair=rng.choice(["candidate", "candidate", "noise"]),
                outcome=outcome,
                reason=rng.choice(["timeout", "reset"])
                if outcome in ("candidate_error", "skipped", "dropped")
                else None,
                differences=diffs,
            )
        )
    with Store.open(db_path) as store:
        for start in range(0, len(records), 100):
            store.write_batch(records[start : start + 100])
        for since in (None, NOW - 3 * HOUR - 1234.5):
            stats = {s.route_id: s for s in store.route_stats(since=since)}
            fields = {(f.route_id, f.group): f.count for f in store.field_stats(since=since)}
            window = [r for r in records if since is None or r.time >= since]
            for route_id, s in stats.items():
                mine = [r for r in window if r.route_id == route_id]
                cand = [r for r in mine if r.pair == "candidate"]
                assert s.total == len(mine)
                assert s.mismatch == sum(r.outcome == "mismatch" for r in cand)
                assert s.compared == sum(r.outcome in ("match", "mismatch") for r in cand)
                assert s.noise_compared == sum(r.outcome in ("match", "mismatch") for r in mine if r.pair == "noise")
                assert sum(n for _, n in s.dropped_by_reason) == s.dropped == sum(r.outcome == "dropped" for r in cand)
            expected: dict[tuple[str, str], int] = {}
            for r in window:
                if r.pair == "candidate":
                    for g in {d.group for d in r.differences}:
                        expected[(r.route_id, g)] = expected.get((r.route_id, g), 0) + 1
            assert fields == expected
        only = store.route_stats(route_id="users")
        assert [s.route_id for s in only] == ["users"]


def test_latency_percentiles_are_exact_nearest_rank_over_stored_rows(db_path: Path) -> None:
    """p50/p95/p99 are the nearest-rank values of the stored latencies, exact to the µs; noise pairs left out."""
    rng = random.Random(3)
    legacy = [rng.lognormvariate(3.0, 1.0) for _ in range(3000)]
    new = [rng.lognormvariate(3.5, 0.7) for _ in range(3000)]
    records = [make_record(legacy_latency_ms=a, new_latency_ms=b) for a, b in zip(legacy, new, strict=True)]
    records.append(make_record(pair="noise", legacy_latency_ms=99999.0, new_latency_ms=99999.0))
    with Store.open(db_path) as store:
        store.write_batch(records)
        result = store.latency_percentiles()
    assert set(result) == {("orders", "legacy"), ("orders", "new")}
    for side, values in (("legacy", legacy), ("new", new)):
        ordered = sorted(round(v * 1000) for v in values)
        got = result[("orders", side)]
        assert (got.exact, got.count) == (True, 3000)
        for q, value in ((0.50, got.p50), (0.95, got.p95), (0.99, got.p99)):
            assert value == ordered[math.ceil(q * len(ordered)) - 1] / 1000, (side, q)


def test_latency_percentiles_fall_back_to_the_histogram_past_retention(db_path: Path) -> None:
    """When retention has deleted some of the window's rows, percentiles come from the rollup, within one bucket
    of the exact value, and are marked inexact."""
    rng = random.Random(3)
    legacy = [rng.lognormvariate(3.0, 1.0) for _ in range(3000)]
    records = [make_record(legacy_latency_ms=a, new_latency_ms=None) for a in legacy]
    width = LATENCY_BOUNDS_MS[1] / LATENCY_BOUNDS_MS[0]
    with Store.open(db_path) as store:
        store.write_batch(records)
        store.enforce_retention(max_age=10 * 86400, max_exchanges=100, now=NOW)
        got = store.latency_percentiles()[("orders", "legacy")]
    assert (got.exact, got.count) == (False, 3000)
    ordered = sorted(legacy)
    for q, estimate in ((0.50, got.p50), (0.95, got.p95), (0.99, got.p99)):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert exact / width <= estimate <= exact * width, (q, exact, estimate)


def test_traffic_upserts_add_and_unrouted_is_busiest_first(db_path: Path) -> None:
    """Traffic counts with the same key add up; unrouted paths are listed busiest first."""
    minute = int(NOW // 60) * 60

    def traffic(route_id: str, path: str, count: int, mode: str = "legacy") -> TrafficCount:
        return TrafficCount(minute, route_id, mode, "legacy", "GET", path, count, 1, 10.0 * count)

    with Store.open(db_path) as store:
        store.write_batch([], [traffic("", "/a", 2), traffic("", "/b", 5), traffic("orders", "/orders/{id}", 3)])
        store.write_batch([], [traffic("", "/a", 4), traffic("", "/c", 1), traffic("orders", "/orders/{id}", 3)])
        busiest = store.unrouted(since=NOW - 60, limit=2)
        modes = store.traffic_by_mode()
        assert store.unrouted(since=NOW + 120) == []
    assert [(u.path, u.count) for u in busiest] == [("/a", 6), ("/b", 5)]
    orders = next(t for t in modes if t.route_id == "orders")
    assert (orders.count, orders.errors, orders.latency_ms_sum) == (6, 2, 60.0)


def test_retention_by_age_and_by_count(db_path: Path) -> None:
    """Retention deletes exchanges older than max_age (with bodies, differences, old rollups) and keeps the newest N."""
    body = StoredBody(b"x", 1, False)
    diff = (Difference("$.a", "$.a", "changed", "1", "2"),)
    old = [make_record(time=NOW - 10 * 86400 + i, legacy_body=body, differences=diff) for i in range(30)]
    recent = [make_record(time=NOW - 100 + i, request_id=f"r{i}", legacy_body=body) for i in range(50)]
    with Store.open(db_path) as store:
        store.write_batch(old)
        store.write_batch(recent)
        assert store.enforce_retention(max_age=86400, max_exchanges=1000, now=NOW) == 30
        assert count_rows(db_path, "differences") == 0
        assert count_rows(db_path, "bodies") == 50
        assert store.route_stats()[0].total == 50  # the old hours' rollups went too
        assert store.enforce_retention(max_age=86400, max_exchanges=20, now=NOW) == 30
        kept = store.list_exchanges(limit=100)
        assert sorted(r.request_id for r in kept) == sorted(f"r{i}" for i in range(30, 50))
        assert count_rows(db_path, "bodies") == 20
        assert store.route_stats()[0].total == 50  # count-based retention keeps the rollups


def test_flips_round_trip(db_path: Path) -> None:
    """Flips come back in order per route, and last_flip is the newest of that route."""
    first = FlipRecord(NOW, "ana", "orders", "legacy", "shadow", None, None, "start", False, "{}")
    second = FlipRecord(NOW + 5, "bo", "orders", "shadow", "canary", 0.0, 5.0, "go", True, '{"compared": 9}', "promote")
    other = FlipRecord(NOW + 1, "ana", "users", "legacy", "new", None, None, "", False, "{}")
    with Store.open(db_path) as store:
        ids = [store.record_flip(f) for f in (first, other, second)]
        assert ids == sorted(ids)
        assert store.flips("orders") == [first, second]
        assert store.flips() == [first, other, second]
        assert store.last_flip("orders") == second
        assert store.last_flip("nope") is None


def test_flips_keep_route_texts_and_what_they_revert(db_path: Path) -> None:
    """A flip's route texts and a revert's `reverts` id are stored and read back with the flip's id."""
    flip = FlipRecord(
        NOW, "ana", "orders", "canary", "new", 30.0, None, "", True, "{}", before_text="a\r\n", after_text="b"
    )
    with Store.open(db_path) as store:
        fid = store.record_flip(flip)
        store.record_flip(
            replace(flip, time=NOW + 1, action="revert", before_text="b", after_text="a\r\n", reverts=fid)
        )
        first, revert = store.flips("orders")
    assert (first.id, first.before_text, first.after_text, first.reverts) == (fid, "a\r\n", "b", None)
    assert (revert.action, revert.reverts, revert.after_text) == ("revert", fid, "a\r\n")


def test_a_store_without_flip_texts_gains_them_and_keeps_its_flips(db_path: Path) -> None:
    """A store from before the route-text migration is migrated on open; its flips read back with no texts."""
    step = next(i for i, m in enumerate(MIGRATIONS) if m.__name__ == "_migration_flip_route_texts")
    with Store.open(db_path) as store:
        store.record_flip(FlipRecord(NOW, "ana", "orders", "legacy", "shadow", None, None, "", False, "{}"))
    with sqlite3.connect(db_path) as conn:  # back to the schema before that migration
        for column in ("before_text", "after_text", "reverts"):
            conn.execute(f"ALTER TABLE flips DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(step),))
    with Store.open(db_path) as store:
        [old] = store.flips("orders")
        store.record_flip(replace(old, time=NOW + 1, before_text="x", after_text="y"))
        texts = [(f.before_text, f.after_text) for f in store.flips("orders")]
    assert texts == [(None, None), ("x", "y")]


def test_filters_samples_and_replay(db_path: Path) -> None:
    """list_exchanges filters by route/outcome/group/pair; replay keeps only requests that can be resent exactly."""
    diff = (Difference("$.items[0].qty", "$.items[*].qty", "changed", "1", "2"),)
    records = [
        make_record(time=NOW, outcome="mismatch", differences=diff, request_id="get-mismatch"),
        make_record(time=NOW + 1, method="POST", request_id="post-no-body"),
        make_record(time=NOW + 2, method="POST", request_id="post-body", request_body=StoredBody(b"{}", 2, False)),
        make_record(time=NOW + 3, method="POST", request_id="post-cut", request_body=StoredBody(b"{", 9, True)),
        make_record(time=NOW + 4, route_id="users", pair="noise", request_id="noise"),
    ]
    with Store.open(db_path) as store:
        store.write_batch(records)
        by_group = store.list_exchanges(field_group="$.items[*].qty")
        assert [r.request_id for r in by_group] == ["get-mismatch"]
        assert [r.request_id for r in store.list_exchanges(route_id="orders", outcome="match", limit=2)] == [
            "post-cut",
            "post-body",
        ]
        assert [r.request_id for r in store.list_exchanges(pair="noise")] == ["noise"]
        assert store.field_samples("orders", "$.items[*].qty") == [("1", "2")]
        replay = store.exchanges_for_replay(route_id="orders")
    assert [(item.method, item.body) for item in replay] == [("POST", b"{}"), ("GET", None)]


def test_writer_writes_every_submitted_record(db_path: Path) -> None:
    """2000 records submitted from another thread are all written once close() returns."""
    writer = StoreWriter(db_path, batch_size=300)

    def produce() -> None:
        for i in range(2000):
            writer.submit(make_record(request_id=str(i)))
        writer.count([TrafficCount(int(NOW // 60) * 60, "", "legacy", "legacy", "GET", "/x", 1, 0, 1.0)] * 3)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    writer.close(timeout=30)
    assert (writer.written, writer.dropped, writer.lost) == (2000, 0, 0)
    assert count_rows(db_path) == 2000
    with Store.open(db_path) as store:
        assert store.unrouted()[0].count == 3


def test_writer_drops_when_full_instead_of_blocking(db_path: Path) -> None:
    """Past max_queue, submit returns at once and counts the record as dropped; the queued ones are still written."""
    writer = StoreWriter(db_path, max_queue=10, start=False)
    for i in range(15):
        writer.submit(make_record(request_id=str(i)))
    assert (writer.depth(), writer.dropped) == (10, 5)
    writer.start()
    writer.close(timeout=30)
    writer.submit(make_record())  # after close: dropped, not an error
    assert writer.dropped == 6
    assert count_rows(db_path) == 10


def test_writer_survives_a_failing_batch(db_path: Path) -> None:
    """A batch that cannot be written is retried once, then counted as lost; later records are still written."""
    writer = StoreWriter(db_path)
    # A str of the declared type that sqlite3 still cannot bind: a lone surrogate has no UTF-8 form.
    writer.submit(make_record(query="q=\ud800"))
    deadline = time.monotonic() + 10
    while writer.lost == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.submit(make_record())
    writer.close(timeout=30)
    assert (writer.lost, writer.written) == (1, 1)
    assert count_rows(db_path) == 1


def test_writer_applies_retention(db_path: Path) -> None:
    """The writer thread enforces retention by itself."""
    with Store.open(db_path) as store:
        store.write_batch([make_record(time=time.time() - 30 * 86400)])
    writer = StoreWriter(db_path, retention=Retention(max_age=86400, max_exchanges=100))
    writer.submit(make_record(time=time.time()))
    writer.close(timeout=30)
    assert count_rows(db_path) == 1


def test_writer_flushes_when_the_program_ends_without_close(db_path: Path) -> None:
    """A process that exits without calling close() still writes what it queued, and does exit."""
    program = (
        "import sys; from tests.shadow.store.test_database import make_record\n"
        "from shadow.store.writer import StoreWriter\n"
        "writer = StoreWriter(sys.argv[1])\n"
        "for i in range(5): writer.submit(make_record(request_id=str(i)))\n"
    )
    subprocess.run([sys.executable, "-c", program, str(db_path)], check=True, timeout=30, cwd=ROOT)
    assert count_rows(db_path) == 5


def test_two_connections_share_one_file(db_path: Path) -> None:
    """Two Store connections on one file interleave batches without losing rows or failing with a lock error."""
    with Store.open(db_path) as a, Store.open(db_path) as b:
        errors: list[BaseException] = []

        def write(store: Store, tag: str) -> None:
            try:
                for i in range(40):
                    store.write_batch([make_record(request_id=f"{tag}{i}-{k}") for k in range(25)])
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=write, args=(s, t)) for s, t in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len({r.id for r in a.list_exchanges(limit=5000)}) == 2000
        assert a.route_stats()[0].total == 2000


def write_from_process(path: str, tag: str) -> None:
    """Runs in a child process: writes 1000 records through its own StoreWriter."""
    writer = StoreWriter(path, batch_size=50)
    for i in range(1000):
        writer.submit(make_record(request_id=f"{tag}-{i}"))
    writer.close(timeout=60)
    if (writer.written, writer.lost, writer.dropped) != (1000, 0, 0):
        raise SystemExit(1)


def test_two_processes_write_one_file(db_path: Path) -> None:
    """Two OS processes writing the same file concurrently lose nothing."""
    Store.open(db_path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_from_process, args=(str(db_path), tag)) for tag in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=50)
    assert [p.exitcode for p in procs] == [0, 0]
    assert count_rows(db_path) == 2000
    with Store.open(db_path) as store:
        assert store.route_stats()[0].total == 2000


def open_at_once(path: str, start: threading.Barrier) -> None:
    """Runs in a child process: opens (creating) the store the moment its sibling does."""
    start.wait()
    try:
        Store.open(path).close()
    except StoreError as e:
        print(e, file=sys.stderr)  # noqa: T201 - the child's reason, shown by pytest
        raise SystemExit(1) from e


def test_two_processes_creating_one_new_file_at_once_both_open_it(tmp_path: Path) -> None:
    """Two proxy workers starting together both create, switch to WAL and migrate the same new file: neither
    fails with "database is locked" (switching to WAL does not wait on the busy timeout by itself)."""
    ctx = multiprocessing.get_context("fork")  # fork: the two must start within microseconds of each other
    for round_ in range(12):
        path = str(tmp_path / f"new-{round_}.db")
        start = ctx.Barrier(2)
        procs = [ctx.Process(target=open_at_once, args=(path, start)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0, 0], f"round {round_}"


def test_readers_merge_several_files(tmp_path: Path) -> None:
    """open_readers reads one file per replica as one: counts add up and each row names its source file."""
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    for n, path in enumerate(paths):
        with Store.open(path) as store:
            store.write_batch([make_record(time=NOW + n * 10 + i, request_id=f"{n}-{i}") for i in range(3 + n)])
            store.write_batch([], [TrafficCount(int(NOW // 60) * 60, "", "legacy", "legacy", "GET", "/u", 2, 0, 1.0)])
    with Store.open_readers(paths) as readers:
        assert readers.route_stats()[0].match == 7
        assert readers.unrouted()[0].count == 4
        assert set(readers.latency_percentiles()) == {("orders", "legacy"), ("orders", "new")}
        rows = readers.list_exchanges(limit=4)
        assert [r.request_id for r in rows] == ["1-3", "1-2", "1-1", "1-0"]
        detail = readers.get_exchange(rows[0].id, rows[0].source)
        assert detail is not None
        assert detail.record.request_id == "1-3"
        with pytest.raises(StoreError):
            readers.write_batch([make_record()])


def test_replays_stored_by_an_older_version_move_to_their_own_pair_with_their_counts(db_path: Path) -> None:
    """Replays an older strangler stored as candidate pairs ("replay-" request ids) become pair "replay" when the
    file is opened: the route's figures, latencies and fields count only live pairs again; the rows stay."""
    diff = (Difference("$.b", "$.b", "removed", "1", None),)
    live = [make_record(request_id=f"r{i}", legacy_latency_ms=10.0 + i) for i in range(3)]
    old_replays = [
        make_record(request_id="replay-r0", outcome="mismatch", differences=diff, legacy_latency_ms=500.0),
        make_record(request_id="replay-r1", legacy_latency_ms=600.0),
    ]
    with Store.open(db_path) as store:
        store.write_batch([*live, *old_replays])  # as the older version did: pair "candidate"
        assert store.route_stats()[0].compared == 5
    step = [m.__name__ for m in MIGRATIONS].index("_migration_replays_apart")
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE differences SET pair = 'candidate'")
        # An older version's file reaches this step with field kinds unknown ('': see _field_rollup_kind).
        conn.execute("UPDATE field_rollup SET kind = ''")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(step),))
    with Store.open(db_path) as store:
        [stats] = store.route_stats()
        assert (stats.total, stats.compared, stats.mismatch) == (3, 3, 0)
        legacy = store.latency_percentiles()[("orders", "legacy")]
        assert (legacy.count, legacy.p99) == (3, 12.0)
        assert store.field_stats() == []
        assert [(f.group, f.count) for f in store.field_stats(pair="replay")] == [("$.b", 1)]
        assert [(p.before, p.after, p.after_groups) for p in store.replay_pairs()] == [
            (None, "mismatch", frozenset({"$.b"})),
            (None, "match", frozenset()),
        ]
        assert len(store.list_exchanges(pair="replay")) == 2
    with sqlite3.connect(db_path) as conn:
        assert (
            conn.execute("SELECT SUM(count) FROM latency_rollup WHERE pair = 'replay'").fetchone()[0] == 4
        )  # 2 x 2 sides
        assert conn.execute("SELECT MIN(count) FROM route_rollup").fetchone()[0] > 0
