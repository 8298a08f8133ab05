"""Store faults on a real file, injected from outside the writing process: a trigger that makes every insert into
`exchanges` fail with `sqlite3.OperationalError`, as a full disk or a read-only file does. (As root, file modes do
not stop writes, and no small filesystem is available to fill; the writer classifies both the same way.)"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

_TRIGGER = "strangler_test_store_refuses"


def refuse_writes(path: Path) -> None:
    """From now on, every write of an exchange row to the store at `path` fails (any connection, any process)."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {_TRIGGER} BEFORE INSERT ON exchanges "
            "BEGIN INSERT INTO store_is_full_disk_full VALUES (1); END"
        )
        conn.commit()


def allow_writes(path: Path) -> None:
    """Undo `refuse_writes`: the store takes writes again."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute(f"DROP TRIGGER IF EXISTS {_TRIGGER}")
        conn.commit()


@contextlib.contextmanager
def store_refusing_writes(path: Path) -> Iterator[None]:
    refuse_writes(path)
    try:
        yield
    finally:
        allow_writes(path)


def count_rows(path: Path, table: str = "exchanges") -> int:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
