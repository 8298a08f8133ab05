"""Merge replicas' store snapshots into one store file (`strangler store pull`), so reports read one file.

Each snapshot is checked (an SQLite file with a strangler `meta.schema_version` no newer than ours, not itself a
merged file), migrated like any store, then merged in one transaction:
- `exchanges`, `bodies`, `differences` are copied with new ids (an offset past the merged file's highest), kept
  together by replica: each replica's rows hold one id range, recorded in `merge_sources`;
- `traffic` and the rollups are summed over replicas: each replica's rows are kept in `merge_part_<table>` and the
  table is rebuilt as their sum;
- `flips` (an audit trail some replicas may share) are added unless an identical change (same time, route, action,
  modes, weights, user) is there already, with `reverts` pointing at the merged ids.
A replica is known by its `meta.store_id`: merging it again replaces its earlier rows, so nothing counts twice.

Stored values were redacted on each replica with its own key (keyed tokens, not encryption): the merged file needs
no key to be read, and no key leaves a replica. Tokens of the same secret differ between replicas unless every
replica gets the same STRANGLER_REDACT_KEY.

Errors: `MergeError` (the snapshot is not a usable store, or `into` is not a merged file) with a message naming the
file; `sqlite3.Error` on I/O failures.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from shadow.store.database import Store, StoreError
from shadow.store.migrations import SCHEMA_VERSION

# Tables by how they merge; every table a store has is in exactly one (tests check it, so a new table gets a rule).
SUMMED = ("traffic", "route_rollup", "latency_rollup", "field_rollup", "path_rollup")
REKEYED = ("exchanges", "bodies", "differences")
OWN = ("flips", "meta")  # flips: added unless present; meta: the merged file's own
MERGED_MARK = "merged_from_replicas"  # meta key marking a file made by `store pull`
_FLIP_IDENTITY = ("time", "route_id", "action", "from_mode", "to_mode", "from_weight", "to_weight", "user")


class MergeError(Exception):
    """A snapshot cannot be merged, or the target is not a merged file; the message names the file."""


@dataclass(frozen=True, slots=True)
class Contribution:
    """What merging one replica's snapshot did."""

    store_id: str
    exchanges: int
    flips_added: int
    replaced: bool  # an earlier pull of the same store was replaced


def _meta(conn: sqlite3.Connection, schema: str = "main") -> dict[str, str]:
    has_meta = conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if has_meta is None:
        return {}
    return {str(k): str(v) for k, v in conn.execute(f"SELECT key, value FROM {schema}.meta")}


def check_snapshot(path: Path) -> dict[str, str]:
    """The snapshot's meta before any migration; MergeError when it is not a strangler store we can read."""
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(path)
        try:
            meta = _meta(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise MergeError(f"{path}: not a strangler store ({exc})") from None
    if "schema_version" not in meta:
        raise MergeError(f"{path}: not a strangler store (no meta.schema_version)")
    if int(meta["schema_version"]) > SCHEMA_VERSION:
        raise MergeError(
            f"{path}: store schema version {meta['schema_version']} is newer than this strangler's ({SCHEMA_VERSION});"
            " upgrade strangler here first"
        )
    if MERGED_MARK in meta:
        raise MergeError(f"{path}: is itself a merged file; pull from the replicas instead")
    return meta


def _open_into(into: Path) -> None:
    """Create `into` as a merged file, or check that an existing one is one (never merge into a replica's store)."""
    existed = into.exists()
    try:
        Store.open(into, create=True).close()
    except StoreError as exc:
        raise MergeError(str(exc)) from None
    conn = sqlite3.connect(into, isolation_level=None)
    try:
        if existed and MERGED_MARK not in _meta(conn):
            raise MergeError(f"{into}: not a file made by 'strangler store pull'; give a new file to merge into")
        if not existed:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (MERGED_MARK,))
            conn.execute("DELETE FROM meta WHERE key = 'path_rollup_since'")  # set from the replicas' own
    finally:
        conn.close()


def merge_snapshot(into: Path, snapshot: Path, source: str) -> Contribution:
    """Merge one replica's snapshot (a file we may migrate in place) into `into`, replacing that replica's earlier
    contribution; `source` (the admin URL) is recorded with it. Raises MergeError or sqlite3.Error."""
    before = check_snapshot(snapshot)
    try:
        Store.open(snapshot, create=False).close()  # migrates an older schema to ours
    except StoreError as exc:
        raise MergeError(str(exc)) from None
    # A store that had no id yet (older than the store_id step) is known by where it came from instead.
    store_id = before.get("store_id") or f"source:{source}"
    _open_into(into)
    conn = sqlite3.connect(into, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(snapshot),))
        conn.execute("BEGIN IMMEDIATE")
        try:
            contribution = _merge(conn, store_id, source)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return contribution


def _columns(conn: sqlite3.Connection, table: str, schema: str = "main") -> list[tuple[str, bool]]:
    """(name, part of the primary key) of each column."""
    return [(row[1], row[5] > 0) for row in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def _ensure_bookkeeping(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS merge_sources (store_id TEXT PRIMARY KEY, source TEXT NOT NULL,"
        " pulled_at REAL NOT NULL, exchange_lo INTEGER, exchange_hi INTEGER, difference_lo INTEGER,"
        " difference_hi INTEGER, path_rollup_since INTEGER, exchanges INTEGER NOT NULL)"
    )
    for table in SUMMED:
        names = ", ".join(f'"{name}"' for name, _ in _columns(conn, table))
        conn.execute(f"CREATE TABLE IF NOT EXISTS merge_part_{table} (store_id TEXT NOT NULL, {names})")
        conn.execute(f"CREATE INDEX IF NOT EXISTS merge_part_{table}_store ON merge_part_{table} (store_id)")


def _merge(conn: sqlite3.Connection, store_id: str, source: str) -> Contribution:
    _ensure_bookkeeping(conn)
    replaced = _drop_contribution(conn, store_id)
    (exchange_lo, exchange_hi), (difference_lo, difference_hi), exchanges = _copy_rekeyed(conn)
    for table in SUMMED:
        names = ", ".join(f'"{name}"' for name, _ in _columns(conn, table))
        conn.execute(f"INSERT INTO merge_part_{table} SELECT ?, {names} FROM src.{table}", (store_id,))
    since = _meta(conn, "src").get("path_rollup_since")
    conn.execute(
        "INSERT INTO merge_sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (store_id, source, time.time(), exchange_lo, exchange_hi, difference_lo, difference_hi,
         int(since) if since else None, exchanges),
    )  # fmt: skip
    _rebuild_sums(conn)
    flips_added = _add_flips(conn)
    return Contribution(store_id, exchanges, flips_added, replaced)


def _drop_contribution(conn: sqlite3.Connection, store_id: str) -> bool:
    row = conn.execute(
        "SELECT exchange_lo, exchange_hi, difference_lo, difference_hi FROM merge_sources WHERE store_id = ?",
        (store_id,),
    ).fetchone()
    if row is None:
        return False
    exchange_lo, exchange_hi, difference_lo, difference_hi = row
    if exchange_lo is not None:
        conn.execute("DELETE FROM bodies WHERE exchange_id BETWEEN ? AND ?", (exchange_lo, exchange_hi))
        conn.execute("DELETE FROM exchanges WHERE id BETWEEN ? AND ?", (exchange_lo, exchange_hi))
    if difference_lo is not None:
        conn.execute("DELETE FROM differences WHERE id BETWEEN ? AND ?", (difference_lo, difference_hi))
    for table in SUMMED:
        conn.execute(f"DELETE FROM merge_part_{table} WHERE store_id = ?", (store_id,))
    conn.execute("DELETE FROM merge_sources WHERE store_id = ?", (store_id,))
    return True


def _offset(conn: sqlite3.Connection, table: str) -> tuple[int, int | None, int | None]:
    """The id offset putting the snapshot's `table` rows past the merged file's, and their new lowest and highest
    ids (None when the snapshot has none)."""
    top = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM main.{table}").fetchone()[0]
    low, high = conn.execute(f"SELECT MIN(id), MAX(id) FROM src.{table}").fetchone()
    if low is None:
        return 0, None, None
    offset = int(top) - int(low) + 1
    return offset, int(low) + offset, int(high) + offset


def _copy_rows(conn: sqlite3.Connection, table: str, moved: dict[str, str], offsets: dict[str, int]) -> None:
    """Copy every row of the snapshot's `table`, the columns in `moved` computed (ids shifted by `offsets`)."""
    names = [name for name, _ in _columns(conn, table)]
    select = ", ".join(moved.get(name, f'"{name}"') for name in names)
    quoted = ", ".join(f'"{name}"' for name in names)
    conn.execute(f"INSERT INTO main.{table} ({quoted}) SELECT {select} FROM src.{table}", offsets)


def _copy_rekeyed(conn: sqlite3.Connection) -> tuple[tuple[int | None, int | None], tuple[int | None, int | None], int]:
    """Copy exchanges, bodies and differences with new ids; returns the exchanges' and differences' new id ranges
    and how many exchanges were copied."""
    exchange_offset, exchange_lo, exchange_hi = _offset(conn, "exchanges")
    difference_offset, difference_lo, difference_hi = _offset(conn, "differences")
    if exchange_lo is None or exchange_hi is None:
        return (None, None), (None, None), 0
    # The snapshot's own id range: a replay of an original retention deleted links to nothing, never to a row
    # another replica gave.
    offsets = {"e": exchange_offset, "d": difference_offset, "lo": exchange_lo - exchange_offset,
               "hi": exchange_hi - exchange_offset}  # fmt: skip
    replay_of = "CASE WHEN replay_of BETWEEN :lo AND :hi THEN replay_of + :e END"
    _copy_rows(conn, "exchanges", {"id": "id + :e", "replay_of": replay_of}, offsets)
    _copy_rows(conn, "bodies", {"exchange_id": "exchange_id + :e"}, offsets)
    _copy_rows(conn, "differences", {"id": "id + :d", "exchange_id": "exchange_id + :e"}, offsets)
    count = int(conn.execute("SELECT COUNT(*) FROM src.exchanges").fetchone()[0])
    return (exchange_lo, exchange_hi), (difference_lo, difference_hi), count


def _rebuild_sums(conn: sqlite3.Connection) -> None:
    """Each summed table becomes the sum of every replica's part; `path_rollup_since` the earliest replica's, with
    the traffic a later-migrated replica counted before its own (which its path_rollup lacks) added to path_rollup
    as counts without a histogram (status and bucket -1), so path_rollup still sums to traffic from then on."""
    for table in SUMMED:
        columns = _columns(conn, table)
        keys = ", ".join(f'"{name}"' for name, is_key in columns if is_key)
        names = ", ".join(f'"{name}"' for name, _ in columns)
        select = ", ".join(f'"{name}"' if is_key else f'SUM("{name}")' for name, is_key in columns)
        conn.execute(f"DELETE FROM main.{table}")
        conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {select} FROM merge_part_{table} GROUP BY {keys}")
    earliest = conn.execute("SELECT MIN(path_rollup_since) FROM merge_sources").fetchone()[0]
    if earliest is None:
        conn.execute("DELETE FROM meta WHERE key = 'path_rollup_since'")
        return
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('path_rollup_since', ?)", (str(earliest),))
    conn.execute(
        "INSERT INTO main.path_rollup (hour, route_id, served_by, method, path, status, bucket, count)"
        " SELECT minute / 3600 * 3600, t.route_id, t.served_by, t.method, t.path, -1, -1, SUM(t.count)"
        " FROM merge_part_traffic t JOIN merge_sources s USING (store_id)"
        " WHERE t.minute >= :earliest AND t.minute < s.path_rollup_since GROUP BY 1, 2, 3, 4, 5"
        " ON CONFLICT DO UPDATE SET count = count + excluded.count",
        {"earliest": earliest},
    )


def _add_flips(conn: sqlite3.Connection) -> int:
    """Add the snapshot's flips, oldest first, unless an identical one is there; returns how many were added."""
    names = [name for name, _ in _columns(conn, "flips") if name != "id"]
    quoted = ", ".join(f'"{name}"' for name in names)
    match = " AND ".join(f'"{name}" IS ?' for name in _FLIP_IDENTITY)
    ids: dict[int, int] = {}
    added = 0
    rows = conn.execute(f"SELECT id, {quoted} FROM src.flips ORDER BY time, id").fetchall()
    for fid, *values in rows:
        record = dict(zip(names, values, strict=True))
        found = conn.execute(
            f"SELECT id FROM main.flips WHERE {match}", [record[name] for name in _FLIP_IDENTITY]
        ).fetchone()
        if found is not None:
            ids[fid] = int(found[0])
            continue
        if record.get("reverts") is not None:
            record["reverts"] = ids.get(record["reverts"])
        marks = ", ".join("?" * len(names))
        cursor = conn.execute(f"INSERT INTO main.flips ({quoted}) VALUES ({marks})", [record[n] for n in names])
        ids[fid] = int(cursor.lastrowid or 0)
        added += 1
    return added
