"""The admin store snapshot: token rules, a consistent copy, and a writer that keeps committing during the copy."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.admin_store import copy_store, remove_stale_snapshots
from proxy.app import RunningProxy
from tests.proxy.app_fixtures import TOKEN_ENV, admin_url, running_proxy, write_config

TOKEN = "replica-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_store(path: Path, rows: int = 200, blob: int = 4000) -> Path:
    """A WAL-mode SQLite file with `rows` rows of `blob` random bytes each (stands in for a busy store)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (data) VALUES (randomblob(?))", [(blob,)] * rows)
    conn.execute("COMMIT")
    conn.close()
    return path


class Writer:
    """A thread committing one row per transaction (as the store writer does) until stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        self.committed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        try:
            while not self._stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (data) VALUES (randomblob(100))")
                conn.execute("COMMIT")
                self.commits += 1
                self.committed.set()
        finally:
            conn.close()

    def __enter__(self) -> Writer:
        self._thread.start()
        assert self.committed.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def rows_in(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def test_copy_is_one_snapshot_while_the_writer_commits(tmp_path: Path) -> None:
    """Between every two copy steps the writer commits, and the copy still finishes, holding one snapshot."""
    source = make_store(tmp_path / "store.db")
    with Writer(source) as writer:
        steps: list[bool] = []

        def let_writer_commit() -> None:
            # A blocked writer would make this wait fail; a copy restarted by each commit would never end.
            assert len(steps) < 1000, "the copy restarts after every commit"
            writer.committed.clear()
            steps.append(writer.committed.wait(5))

        conn = sqlite3.connect(source)
        before = conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]
        conn.close()
        copy_store(source, tmp_path / "copy.db", pages=8, pause=0, on_step=let_writer_commit)
    assert len(steps) > 20
    assert all(steps)
    copied = rows_in(tmp_path / "copy.db")
    # What the first step saw: at least `before`, and not the commits made between the steps.
    assert before <= copied < before + len(steps)
    assert not Path(f"{tmp_path / 'copy.db'}-wal").exists()


def test_copy_of_a_missing_store_is_refused(tmp_path: Path) -> None:
    """Asking for a copy of a file that does not exist raises and never creates it."""
    with pytest.raises(FileNotFoundError):
        copy_store(tmp_path / "absent.db", tmp_path / "copy.db")
    assert not (tmp_path / "absent.db").exists()


ROOT = Path(__file__).resolve().parents[2]
# A snapshot that copies 4 pages per step with a pause: slow enough to be killed half-way.
_SLOW_SNAPSHOT = (
    "import functools, sys; from pathlib import Path; from proxy import admin_store as a; "
    "a.copy_store = functools.partial(a.copy_store, pages=4, pause=0.05); a.snapshot_file(Path(sys.argv[1]))"
)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(done.stdout)


def test_a_copy_left_by_a_process_killed_mid_snapshot_is_removed(tmp_path: Path) -> None:
    """A process SIGKILLed in the middle of a snapshot leaves its copy of the store beside it; the next tidy-up
    deletes it, and leaves a copy of a process still alive."""
    source = make_store(tmp_path / "replica.db", rows=2000)
    child = subprocess.Popen([sys.executable, "-c", _SLOW_SNAPSHOT, str(source)], cwd=ROOT)
    try:
        end = time.monotonic() + 20
        while not list(tmp_path.glob(".replica.db.snapshot-*")) and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.2)  # a few steps in
    finally:
        child.kill()
        child.wait()
    left = list(tmp_path.glob(".replica.db.snapshot-*"))
    assert left, "the killed snapshot left no copy"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".replica.db.snapshot-{sleeper.pid}-abcd1234"
        live.write_bytes(b"in progress")
        assert sorted(remove_stale_snapshots(source)) == sorted(left)
        assert not any(p.exists() for p in left)
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_the_admin_api_removes_a_dead_processs_snapshot_when_it_starts(
    legacy: TestServer, tmp_path: Path
) -> None:
    """A copy a dead process left beside the store is gone once the proxy (its admin API) has started."""
    store = make_store(tmp_path / "replica.db", rows=10)
    stale = tmp_path / f".replica.db.snapshot-{_dead_pid()}-x1y2z3w4"
    stale.write_bytes(b"a whole copy of the store")
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    async with running_proxy(path, watch=False, db=str(store)):
        assert not stale.exists()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "replica.db", rows=2000)


@pytest.fixture
async def proxy(
    legacy: TestServer, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningProxy]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    async with running_proxy(path, watch=False, db=str(store)) as running:
        yield running


async def test_snapshot_refused_without_a_configured_token(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """With no admin token configured the snapshot answers 403 and says which variable enables it."""
    async with client.get(admin_url(proxy, "/store/snapshot"), headers=AUTH) as resp:
        assert resp.status == 403
        data = await resp.json()
    assert data["error"] == "store snapshots disabled"
    assert TOKEN_ENV in data["hint"]


async def test_snapshot_needs_the_right_token(
    proxy: RunningProxy, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing, wrong or non-bearer token answers 401."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        async with client.get(admin_url(proxy, "/store/snapshot"), headers=headers) as resp:
            assert resp.status == 401


@pytest.fixture
def writer(store: Path) -> Iterator[Writer]:
    with Writer(store) as running:
        yield running


async def test_snapshot_streams_a_consistent_copy_while_rows_are_written(
    proxy: RunningProxy,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    writer: Writer,
    store: Path,
    tmp_path: Path,
) -> None:
    """With the token, the snapshot is the store's bytes (an intact SQLite file) while a writer keeps committing."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    before = writer.commits
    copy = tmp_path / "pulled.db"
    async with client.get(admin_url(proxy, "/store/snapshot"), headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/vnd.sqlite3"
        size = int(resp.headers["Content-Length"])
        with copy.open("wb") as f:
            async for chunk in resp.content.iter_chunked(65536):
                f.write(chunk)
    during = writer.commits - before
    assert copy.stat().st_size == size
    assert rows_in(copy) >= 2000
    assert during > 0
    assert not list(store.parent.glob("*.snapshot-*"))  # the temporary copy is gone


async def test_snapshot_of_a_replica_with_no_store_yet_is_404(
    legacy: TestServer, tmp_path: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose store file does not exist yet answers 404 naming the file."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    async with (
        running_proxy(path, watch=False, db=str(tmp_path / "none.db")) as running,
        client.get(admin_url(running, "/store/snapshot"), headers=AUTH) as resp,
    ):
        assert resp.status == 404
        assert "none.db" in (await resp.json())["error"]
