"""Store faults are survivable and counted: the writer keeps a bounded backlog, retries with backoff and reopens
the store (issue 10, item 7)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadow.store.database import Store
from shadow.store.writer import StoreWriter
from shadow.values import StoredBody
from tests.faults.store import allow_writes, count_rows, refuse_writes
from tests.shadow.store.test_database import ROOT, make_record


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "shadow.db"
    Store.open(path).close()
    return path


def _wait(condition: object, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)
    assert condition(), "condition not met in time"  # type: ignore[operator]


def test_a_short_store_fault_loses_nothing(db_path: Path) -> None:
    """150 records written while the store refuses every write are all stored once it takes writes again."""
    writer = StoreWriter(db_path, flush_interval=0.05)
    refuse_writes(db_path)
    try:
        for i in range(150):
            writer.submit(make_record(request_id=f"r{i}"))
        _wait(lambda: writer.write_errors >= 3)  # retried, not given up after two attempts
        assert count_rows(db_path) == 0
        was_failing = writer.failing
    finally:
        allow_writes(db_path)
    _wait(lambda: writer.written == 150)
    writer.close(timeout=30)
    assert (writer.written, writer.rows_lost) == (150, 0)
    assert (was_failing, writer.failing) == (True, False)
    assert count_rows(db_path) == 150


def test_the_backlog_is_bounded_and_every_record_is_counted(db_path: Path) -> None:
    """While the store refuses writes, the queue holds at most max_queue_bytes; the rest is dropped and counted,
    and stored + lost equals submitted."""
    body = StoredBody(data=os.urandom(16384), length=16384, truncated=False)
    writer = StoreWriter(db_path, flush_interval=0.05, max_queue_bytes=200_000, track_ids=True)
    refuse_writes(db_path)
    try:
        for i in range(100):
            writer.submit(make_record(request_id=f"r{i}")._replace(legacy_body=body))
        assert writer.dropped > 0
    finally:
        allow_writes(db_path)
    writer.close(timeout=30)
    assert count_rows(db_path) + writer.rows_lost == 100
    assert sorted(row[0] for row in writer.drain_settled()) == sorted(f"r{i}" for i in range(100))


def test_a_store_fault_at_close_is_counted_lost(db_path: Path) -> None:
    """A store that still refuses writes when the writer closes: the queued records are counted lost, not hung on."""
    writer = StoreWriter(db_path, flush_interval=0.05, close_retry=0.5)
    refuse_writes(db_path)
    try:
        for i in range(10):
            writer.submit(make_record(request_id=f"r{i}"))
        writer.close(timeout=30)
    finally:
        allow_writes(db_path)
    assert (writer.written, writer.rows_lost) == (0, 10)


READ_ONLY_PROGRAM = """
import os, sys, time
from shadow.store.writer import StoreWriter
from tests.shadow.store.test_database import make_record

path = sys.argv[1]
writer = StoreWriter(path, flush_interval=0.05)  # the file is read-only now: opened all the same, read-only
for i in range(5):
    writer.submit(make_record(request_id=f"r{i}"))
deadline = time.monotonic() + 20
while writer.write_errors < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
errors_before = writer.write_errors
os.chmod(path, 0o644)  # permissions return
while writer.written < 5 and time.monotonic() < deadline:
    time.sleep(0.02)
writer.close(timeout=10)
print(errors_before, writer.written, writer.rows_lost)
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may write (pytest's tmp_path is private to its user)."""
    work = Path(tempfile.mkdtemp(prefix="strangler-ro-"))
    work.chmod(0o777)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_writer_started_on_a_read_only_store_writes_once_permissions_return(open_dir: Path) -> None:
    """A writer that opened the store while the file was read-only reopens it read-write when it can: its rows are
    written once permissions return (run as an unprivileged user, since root ignores file modes)."""
    path = open_dir / "shadow.db"
    Store.open(path).close()
    path.chmod(0o444)
    command = [sys.executable, "-c", READ_ONLY_PROGRAM, str(path)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop privileges to make a file read-only")
        os.chown(path, 65534, 65534)  # nobody: may chmod its own file back
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    errors_before, written, lost = map(int, done.stdout.split())
    assert errors_before >= 2
    assert (written, lost) == (5, 0)
    assert count_rows(path) == 5
