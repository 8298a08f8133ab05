"""The store file's schema migrations: each step (`MIGRATIONS`, applied in order) and `migrate`, which runs the pending
ones when `shadow.store.database` opens a file and records `meta.schema_version` (`SCHEMA_VERSION` is how many
steps there are). Steps use sqlite-utils, like `shadow.store.database`; docs/store.md describes the tables they make.
Never edit a released step: append a new one.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable

import sqlite_utils

from shadow.values import latency_bucket


class SchemaTooNewError(Exception):
    """The file's schema version is newer than this strangler's; `shadow.store.database` raises it as a `StoreError`."""


def _migration_1(db: sqlite_utils.Database) -> None:
    """The first schema; docs/store.md describes every table and column."""
    exchanges = db.table("exchanges")
    exchanges.create(
        {
            "id": int, "time": float, "route_id": str, "mode": str, "pair": str, "method": str, "template": str,
            "path": str, "query": str, "request_id": str, "served_by": str, "outcome": str, "reason": str,
            "legacy_status": int, "legacy_latency_ms": float, "legacy_size": int,
            "new_status": int, "new_latency_ms": float, "new_size": int, "compare_ms": float,
            "request_headers": str, "legacy_headers": str, "new_headers": str,
        },
        pk="id",
        not_null=("time", "route_id", "mode", "pair", "method", "path", "outcome"),
    )  # fmt: skip
    for columns in (["route_id", "time"], ["outcome", "time"], ["time"]):
        exchanges.create_index(columns)
    db.table("bodies").create(
        {"exchange_id": int, "which": str, "data": bytes, "length": int, "truncated": int},
        pk=("exchange_id", "which"),
        not_null=("data", "length", "truncated"),
    )
    differences = db.table("differences")
    differences.create(
        {
            "id": int, "exchange_id": int, "route_id": str, "time": float, "pair": str, "path": str, "grp": str,
            "kind": str, "legacy_value": str, "new_value": str,
        },
        pk="id",
        not_null=("exchange_id", "route_id", "time", "pair", "path", "grp", "kind"),
    )  # fmt: skip
    differences.create_index(["route_id", "grp"])
    differences.create_index(["exchange_id"])
    traffic_key = {"minute": int, "route_id": str, "mode": str, "served_by": str, "method": str, "path": str}
    db.table("traffic").create(
        {**traffic_key, "count": int, "errors": int, "latency_ms_sum": float}, pk=tuple(traffic_key)
    )
    rollups: dict[str, dict[str, type]] = {
        "route_rollup": {"outcome": str, "reason": str},
        "latency_rollup": {"side": str, "bucket": int},
        "field_rollup": {"grp": str},
    }
    for name, extra_key in rollups.items():
        key = {"hour": int, "route_id": str, "pair": str, **extra_key}
        db.table(name).create({**key, "count": int}, pk=tuple(key))
    db.table("flips").create(
        {
            "id": int, "time": float, "user": str, "route_id": str, "action": str, "from_mode": str, "to_mode": str,
            "from_weight": float, "to_weight": float, "reason": str, "forced": int, "gate": str,
        },
        pk="id",
        not_null=("time", "route_id", "action", "from_mode", "to_mode", "forced"),
    )  # fmt: skip
    db.table("flips").create_index(["route_id", "time"])


def _migration_2(db: sqlite_utils.Database) -> None:
    """exchanges.note: how a pair was compared when it matters ("body compared as text: not valid JSON", "120 more
    differences not listed"); NULL for older rows and most pairs."""
    db.table("exchanges").add_column("note", str)


def _field_rollup_kind(db: sqlite_utils.Database) -> None:
    """field_rollup.kind joins the key: (hour, route_id, pair, grp, kind), the kind a pair's differences in `grp`
    had (`shadow.values.FieldKind`), so a report merges them into one kind per field. Rows written before this step
    keep kind '' (unknown): counted, but with no kind."""
    conn = db.conn
    conn.execute(
        "CREATE TABLE field_rollup_kind (hour INTEGER, route_id TEXT, pair TEXT, grp TEXT,"
        " kind TEXT NOT NULL DEFAULT '', count INTEGER, PRIMARY KEY (hour, route_id, pair, grp, kind))"
    )
    conn.execute(
        "INSERT INTO field_rollup_kind (hour, route_id, pair, grp, kind, count)"
        " SELECT hour, route_id, pair, grp, '', count FROM field_rollup"
    )
    conn.execute("DROP TABLE field_rollup")
    conn.execute("ALTER TABLE field_rollup_kind RENAME TO field_rollup")


def _migration_flip_route_texts(db: sqlite_utils.Database) -> None:
    """flips.before_text / after_text: the route's entry in routes.yaml before and after the change, so a revert
    restores it byte for byte; flips.reverts: on a revert, the id of the change it undid. NULL on older rows."""
    _add_missing_columns(db, "flips", {"before_text": str, "after_text": str, "reverts": int})


def _add_missing_columns(db: sqlite_utils.Database, table: str, columns: dict[str, type]) -> None:
    """Add the columns a table lacks: safe on a file whose schema version was set back by hand."""
    present = set(db.table(table).columns_dict)
    for column, kind in columns.items():
        if column not in present:
            db.table(table).add_column(column, kind)


def _migration_latency_us(db: sqlite_utils.Database) -> None:
    """exchanges.legacy_latency_us / new_latency_us: exact durations in integer microseconds (the report's
    percentiles are read from them); older rows are filled from the millisecond columns, which are still written."""
    _add_missing_columns(db, "exchanges", {"legacy_latency_us": int, "new_latency_us": int})
    db.execute(
        "UPDATE exchanges SET legacy_latency_us = CAST(ROUND(legacy_latency_ms * 1000) AS INTEGER),"
        " new_latency_us = CAST(ROUND(new_latency_ms * 1000) AS INTEGER)"
        " WHERE legacy_latency_ms IS NOT NULL OR new_latency_ms IS NOT NULL"
    )


def _migration_replay_of(db: sqlite_utils.Database) -> None:
    """exchanges.replay_of: for pair "replay" (made by `strangler replay`), the id of the exchange sent again."""
    _add_missing_columns(db, "exchanges", {"replay_of": int})


def _migration_replays_apart(db: sqlite_utils.Database) -> None:
    """Replays written before pair "replay" existed (candidate pairs whose request id starts with "replay-") move
    to pair "replay", their rollup counts with them, so they stop counting toward readiness. Their originals are
    not linked (`replay_of` stays NULL: the report counts them as replayed, with no before)."""
    conn = db.conn
    moved = "pair = 'candidate' AND substr(request_id, 1, 7) = 'replay-'"
    if conn.execute(f"SELECT 1 FROM exchanges WHERE {moved} LIMIT 1").fetchone() is None:
        return
    db.register_function(latency_bucket, name="latency_bucket", deterministic=True)
    hour = "CAST(time / 3600 AS INTEGER) * 3600"
    upsert = " ON CONFLICT DO UPDATE SET count = count + excluded.count"
    selects = {
        "route_rollup (hour, route_id, pair, outcome, reason, count)": (
            f"SELECT {hour}, route_id, {{pair}}, outcome, COALESCE(reason, ''), {{sign}} COUNT(*) FROM exchanges"
            f" WHERE {moved} GROUP BY 1, 2, 4, 5"
        ),
        "latency_rollup (hour, route_id, pair, side, bucket, count)": " UNION ALL ".join(
            f"SELECT {hour}, route_id, {{pair}}, '{side}', latency_bucket({side}_latency_ms), {{sign}} COUNT(*)"
            f" FROM exchanges WHERE {moved} AND {side}_latency_ms IS NOT NULL GROUP BY 1, 2, 5"
            for side in ("legacy", "new")
        ),
        "field_rollup (hour, route_id, pair, grp, count)": (
            f"SELECT {hour}, route_id, {{pair}}, grp, {{sign}} COUNT(DISTINCT exchange_id) FROM differences"
            f" WHERE exchange_id IN (SELECT id FROM exchanges WHERE {moved}) GROUP BY 1, 2, 4"
        ),
    }
    for into, select in selects.items():
        for pair, sign in (("'replay'", ""), ("'candidate'", "-")):
            # "WHERE true": SQLite's rule for an upsert fed by a SELECT (so ON is not read as a join's).
            sql = f"INSERT INTO {into} SELECT * FROM ({select.format(pair=pair, sign=sign)}) WHERE true{upsert}"
            conn.execute(sql)
        conn.execute(f"DELETE FROM {into.split()[0]} WHERE count <= 0")
    conn.execute(
        f"UPDATE differences SET pair = 'replay' WHERE exchange_id IN (SELECT id FROM exchanges WHERE {moved})"
    )
    conn.execute(f"UPDATE exchanges SET pair = 'replay' WHERE {moved}")


def _migration_path_rollup(db: sqlite_utils.Database) -> None:
    """path_rollup: requests per (hour, route_id, served_by, method, path, status, latency bucket), written with
    the traffic counts (path as in `traffic`: the template when routed, the canonical path when not; status 0 when
    no response came; status and bucket -1 for counts written without a histogram), so `strangler inventory` has
    each path's status mix and latency percentiles. Traffic counted before this step (meta `path_rollup_since`) has
    no rows here: the inventory reads its requests from `traffic`."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS path_rollup (hour INTEGER, route_id TEXT, served_by TEXT, method TEXT,"
        " path TEXT, status INTEGER, bucket INTEGER, count INTEGER,"
        " PRIMARY KEY (hour, route_id, served_by, method, path, status, bucket))"
    )
    # From this minute on, every traffic count is in path_rollup too: the inventory reads `traffic` only before it.
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('path_rollup_since', ?)", (str(int(time.time()) // 60 * 60),)
    )


def _migration_store_id(db: sqlite_utils.Database) -> None:
    """meta.store_id: a random id naming this store file, made once, so `strangler store pull` knows a replica's
    snapshot again and replaces its earlier contribution to a merged file instead of counting it twice."""
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))


# Applied in order at open, all pending ones in one transaction; never edit a released step, append a new one.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _migration_1,
    _migration_2,
    _field_rollup_kind,
    _migration_flip_route_texts,
    _migration_latency_us,
    _migration_replay_of,
    _migration_replays_apart,
    _migration_path_rollup,
    _migration_store_id,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(conn: sqlite3.Connection) -> int:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite_utils.Database) -> None:
    """Run the pending migrations in one `BEGIN IMMEDIATE` transaction (none when the file is up to date)."""
    conn = db.conn
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    # IMMEDIATE: two processes opening a new file at once queue here; the second then finds nothing left to do.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(f"schema version {version} is newer than this strangler ({SCHEMA_VERSION})")
        for step in MIGRATIONS[version:]:
            step(db)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
