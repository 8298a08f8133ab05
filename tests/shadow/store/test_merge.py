"""Merging replicas' stores: rows re-keyed, sums summed, flips once, a replica pulled again replacing itself."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shadow.store.database import Store
from shadow.store.merge import OWN, REKEYED, SUMMED, MergeError, check_snapshot, merge_snapshot
from shadow.store.migrations import SCHEMA_VERSION
from shadow.values import FlipRecord
from tests.pipeline import fill_store
from tests.reports.report_fixtures import REPORT_CONFIG


@dataclass(frozen=True, slots=True)
class Replicas:
    a: Path
    b: Path


def _flip(t: float, route: str, to_mode: str, user: str = "ops") -> FlipRecord:
    return FlipRecord(t, user, route, "shadow", to_mode, None, None, "test", False, "{}", "flip")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Replicas:
    """Two replicas' stores filled by the real pipeline with different traffic, with one shared and one own flip."""
    dbs: list[Path] = []
    for name, seed in (("a", 1), ("b", 2)):
        directory = tmp_path_factory.mktemp(f"replica-{name}")
        _, db = asyncio.run(fill_store(directory, requests=150, config_text=REPORT_CONFIG, plan_seed=seed))
        with Store.open(db, create=False) as store:
            store.record_flip(_flip(1000.0, "customers", "canary"))  # the same change, recorded on both
            store.record_flip(_flip(2000.0 if name == "a" else 1500.0, f"only-{name}", "new"))
        dbs.append(db)
    return Replicas(*dbs)


def copy(path: Path, tmp_path: Path, name: str) -> Path:
    """A copy of a store file, as a snapshot (merging migrates it in place)."""
    target = tmp_path / name
    shutil.copy2(path, target)
    return target


def counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in (*REKEYED, *SUMMED, "flips")}
    finally:
        conn.close()


def rows(path: Path, sql: str) -> list[Any]:
    """The rows a query returns from the SQLite file at `path`."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def sums(path: Path, table: str, column: str = "count") -> int:
    return int(rows(path, f"SELECT COALESCE(SUM({column}), 0) FROM {table}")[0][0])


def merged(replicas: Replicas, tmp_path: Path, *order: str) -> Path:
    into = tmp_path / "merged.db"
    for i, name in enumerate(order):
        merge_snapshot(into, copy(getattr(replicas, name), tmp_path, f"snap-{i}.db"), f"http://{name}:8081")
    return into


def test_every_store_table_has_a_merge_rule(tmp_path: Path) -> None:
    """Each table of a fresh store is re-keyed, summed or kept as the merged file's own: a new table needs a rule."""
    Store.open(tmp_path / "s.db").close()
    tables = {row[0] for row in rows(tmp_path / "s.db", "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {*REKEYED, *SUMMED, *OWN}


def test_merge_adds_rows_and_sums(replicas: Replicas, tmp_path: Path) -> None:
    """The merged file holds both replicas' exchanges, bodies and differences, and the sums of their counts."""
    into = merged(replicas, tmp_path, "a", "b")
    a, b, m = counts(replicas.a), counts(replicas.b), counts(into)
    for table in REKEYED:
        assert m[table] == a[table] + b[table] > 0, table
    for table in SUMMED:
        assert sums(into, table) == sums(replicas.a, table) + sums(replicas.b, table) > 0, table
    assert sums(into, "traffic", "errors") == sums(replicas.a, "traffic", "errors") + sums(
        replicas.b, "traffic", "errors"
    )
    orphans = rows(
        into,
        "SELECT (SELECT COUNT(*) FROM bodies WHERE exchange_id NOT IN (SELECT id FROM exchanges)),"
        " (SELECT COUNT(*) FROM differences WHERE exchange_id NOT IN (SELECT id FROM exchanges))",
    )[0]
    assert orphans == (0, 0)


def test_pulling_a_replica_again_replaces_it(replicas: Replicas, tmp_path: Path) -> None:
    """Merging a, b, then a and b again gives exactly the counts of merging each once."""
    (tmp_path / "once").mkdir()
    once = counts(merged(replicas, tmp_path / "once", "a", "b"))
    twice_dir = tmp_path / "twice"
    twice_dir.mkdir()
    twice = merged(replicas, twice_dir, "a", "b", "a", "b", "a")
    assert counts(twice) == once
    for table in SUMMED:
        assert sums(twice, table) == sums(replicas.a, table) + sums(replicas.b, table)


def test_flips_merge_by_time_once(replicas: Replicas, tmp_path: Path) -> None:
    """A change both replicas recorded is kept once; all flips read back oldest first."""
    into = merged(replicas, tmp_path, "a", "b")
    with Store.open_readers([into]) as store:
        flips = store.flips()
    assert [(f.time, f.route_id) for f in flips] == [(1000.0, "customers"), (1500.0, "only-b"), (2000.0, "only-a")]


def test_snapshot_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    """A file that is not SQLite, or SQLite without strangler's meta, is named and refused."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"<html>not a database</html>" * 100)
    with pytest.raises(MergeError, match="not a strangler store"):
        check_snapshot(junk)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(MergeError, match=r"not a strangler store \(no meta.schema_version\)"):
        merge_snapshot(tmp_path / "m.db", other, "http://x")
    assert not (tmp_path / "m.db").exists()


def test_snapshot_newer_than_us_is_refused(tmp_path: Path) -> None:
    """A store from a newer strangler (a higher schema version) is refused with both versions named."""
    path = tmp_path / "new.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(MergeError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        check_snapshot(path)


def test_older_snapshot_without_store_id_is_migrated_and_known_by_source(replicas: Replicas, tmp_path: Path) -> None:
    """A store from before store ids is migrated and keyed by its URL, so pulling it again still replaces it."""
    old = copy(replicas.a, tmp_path, "old.db")
    conn = sqlite3.connect(old)
    conn.execute("DELETE FROM meta WHERE key = 'store_id'")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION - 1),))
    conn.commit()
    conn.close()
    into = tmp_path / "merged.db"
    first = merge_snapshot(into, copy(old, tmp_path, "s1.db"), "http://old:8081")
    second = merge_snapshot(into, copy(old, tmp_path, "s2.db"), "http://old:8081")
    assert first.store_id == second.store_id == "source:http://old:8081"
    assert second.replaced
    assert counts(into)["exchanges"] == counts(replicas.a)["exchanges"]


def test_merging_into_a_replica_store_is_refused(replicas: Replicas, tmp_path: Path) -> None:
    """--into must be a new file or one a pull made: a replica's own store is never merged into."""
    own = copy(replicas.b, tmp_path, "own.db")
    with pytest.raises(MergeError, match="not a file made by 'strangler store pull'"):
        merge_snapshot(own, copy(replicas.a, tmp_path, "snap.db"), "http://a:8081")
    assert counts(own) == counts(replicas.b)


def test_a_merged_file_is_not_a_snapshot(replicas: Replicas, tmp_path: Path) -> None:
    """Merging a merged file would count its replicas twice: refused."""
    into = merged(replicas, tmp_path, "a")
    with pytest.raises(MergeError, match="is itself a merged file"):
        merge_snapshot(tmp_path / "other.db", copy(into, tmp_path, "m2.db"), "http://m:8081")


def test_inventory_of_replicas_migrated_at_different_times(replicas: Replicas, tmp_path: Path) -> None:
    """A replica whose path rollup began after its traffic: the merged inventory equals reading both files."""
    late = copy(replicas.b, tmp_path, "late.db")
    conn = sqlite3.connect(late)
    top = conn.execute("SELECT MAX(minute) FROM traffic").fetchone()[0]
    conn.execute("UPDATE meta SET value = ? WHERE key = 'path_rollup_since'", (str(top + 60),))
    conn.execute("DELETE FROM path_rollup")
    conn.commit()
    conn.close()
    into = tmp_path / "merged.db"
    merge_snapshot(into, copy(replicas.a, tmp_path, "sa.db"), "http://a:8081")
    merge_snapshot(into, copy(late, tmp_path, "sb.db"), "http://b:8081")
    with Store.open_readers([replicas.a, late]) as both, Store.open_readers([into]) as one:
        expected = {(p.route_id, p.method, p.path): p.requests for p in both.path_traffic()}
        got = {(p.route_id, p.method, p.path): p.requests for p in one.path_traffic()}
    assert got == expected


def test_replay_links_stay_within_their_replica(replicas: Replicas, tmp_path: Path) -> None:
    """A replay keeps its link to its original after the merge; one whose original retention deleted keeps none,
    never one into another replica's rows."""
    snap = copy(replicas.a, tmp_path, "a.db")
    conn = sqlite3.connect(snap)
    first, second = (row[0] for row in conn.execute("SELECT id FROM exchanges ORDER BY id LIMIT 2"))
    original = conn.execute("SELECT request_id, time FROM exchanges WHERE id = ?", (first,)).fetchone()
    conn.execute("UPDATE exchanges SET replay_of = ? WHERE id = ?", (first - 3, first))  # deleted original
    conn.execute("UPDATE exchanges SET replay_of = ? WHERE id = ?", (first, second))
    conn.commit()
    conn.close()
    into = tmp_path / "merged.db"
    merge_snapshot(into, copy(replicas.b, tmp_path, "b.db"), "http://b:8081")
    merge_snapshot(into, snap, "http://a:8081")
    links = rows(
        into,
        "SELECT o.request_id, o.time FROM exchanges r LEFT JOIN exchanges o ON o.id = r.replay_of"
        " WHERE r.replay_of IS NOT NULL",
    )
    assert links == [original]
