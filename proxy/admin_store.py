"""The admin API's store snapshot (`GET /store/snapshot`): a consistent copy of this replica's SQLite store file,
streamed to `strangler store pull`.

The copy is made with SQLite's online backup API in a worker thread, a few pages per step with a short pause between
steps, while the copying connection holds one read transaction from the first step to the last. In WAL mode (the
store's mode) a reader never blocks the writer, so the shadow writer's transactions go on committing during the copy,
and the held read transaction gives every step the same snapshot: without it, SQLite restarts a stepped backup each
time another connection writes, and a busy store would never finish copying. The copy lands in a temporary file
(mode 0600) beside the store, which is on a volume with room for it, and is deleted once sent. Its name carries the
process id (`.<store>.snapshot-<pid>-<random>`): a copy left by a process that died mid-snapshot (a whole copy of the
store, request data included) is deleted when the admin API starts and before each new snapshot.

Only the file's bytes go over the wire: the redaction key (`<store>.key`) stays on the replica. Stored values are
already redacted (keyed tokens, not encrypted data), so a merged file is readable without any key.

Needs the admin bearer token; refused with 403 when no token is configured (a store holds request data, so it is
never served unauthenticated, even on loopback) and 401 for a missing or wrong token. Uses the standard library's
sqlite3 only: `proxy` never imports sqlite-utils.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from proxy.leftovers import pid_prefix, remove_dead
from proxy.state import RuntimeState

log = logging.getLogger("strangler.admin")

Authorize = Callable[[web.Request], web.Response | None]

SNAPSHOT_PATH = "/store/snapshot"
SNAPSHOT_CONTENT_TYPE = "application/vnd.sqlite3"
STEP_PAGES = 256  # pages copied per backup step (1 MiB at the 4 KiB page size)
STEP_PAUSE = 0.002  # seconds slept between steps, so the writer thread gets the GIL and the disk
CHUNK_BYTES = 256 * 1024  # bytes per streamed chunk
BUSY_TIMEOUT_S = 5.0


def store_path(state: RuntimeState) -> Path:
    """The store file this replica writes: `--db` when given, else the config's store.path (as the shadow side)."""
    return Path(state.db_path) if state.db_path else state.config.store.path


def copy_store(
    source: Path,
    target: Path,
    *,
    pages: int = STEP_PAGES,
    pause: float = STEP_PAUSE,
    on_step: Callable[[], None] | None = None,
) -> int:
    """Copy the store at `source` into the new file `target` with the online backup API; returns the copy's size.

    Blocking: run it in a thread; `on_step` is called after each step. Raises FileNotFoundError when `source` is
    missing, sqlite3.Error when it cannot be read. The copy is one self-contained file (rollback journal, no -wal).
    """
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such store file")
    # mode=rw: never create the store by asking for a copy of it.
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=rw", uri=True, isolation_level=None,
                          timeout=BUSY_TIMEOUT_S, check_same_thread=False)  # fmt: skip
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            # One read transaction across every step: one consistent snapshot, and no restart when others write.
            src.execute("BEGIN")
            src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()

            def step(_status: int, _remaining: int, _total: int) -> None:
                if on_step is not None:
                    on_step()
                time.sleep(pause)

            try:
                src.backup(dst, pages=pages, progress=step)
            finally:
                src.execute("COMMIT")
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    return target.stat().st_size


def snapshot_file(source: Path) -> tuple[Path, int]:
    """A consistent copy of the store at `source` in a new temporary file (mode 0600) beside it, and its size; the
    caller deletes it. Blocking, like `copy_store`, and raises as it does."""
    remove_stale_snapshots(source)
    fd, name = tempfile.mkstemp(prefix=pid_prefix(_snapshot_prefix(source)), dir=source.parent)
    os.close(fd)
    target = Path(name)
    try:
        return target, copy_store(source, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def remove_stale_snapshots(source: Path) -> list[Path]:
    """Delete the snapshot copies beside `source` whose process is gone (it died mid-snapshot: nothing else deletes
    them); returns them. A copy of a live process, this one's included, is left alone (it may be being sent)."""
    return remove_dead(source.parent, _snapshot_prefix(source), "a store snapshot")


def _snapshot_prefix(source: Path) -> str:
    return f".{source.name}.snapshot-"


def _read_chunk(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(CHUNK_BYTES)


def add_store_routes(app: web.Application, state: RuntimeState, authorize: Authorize) -> None:
    """Serve `GET /store/snapshot` on the admin app; `authorize` is the admin API's bearer-token check. Copies left
    beside the store by a process that died mid-snapshot are deleted now."""
    remove_stale_snapshots(store_path(state))
    one_at_a_time = asyncio.Lock()  # each copy needs the store's size again on disk: never two at once

    async def store_snapshot(request: web.Request) -> web.StreamResponse:
        refusal = authorize(request)
        if refusal is not None:
            return refusal
        source = store_path(state)
        async with one_at_a_time:
            started = time.monotonic()
            try:
                target, size = await asyncio.to_thread(snapshot_file, source)
            except FileNotFoundError:
                return web.json_response({"error": f"no store file at {source} (nothing recorded yet?)"}, status=404)
            except (OSError, sqlite3.Error) as exc:
                log.error("store snapshot of %s failed: %s", source, exc)
                return web.json_response({"error": f"snapshot of {source} failed: {exc}"}, status=500)
            log.info("store snapshot of %s: %d bytes in %.2fs", source, size, time.monotonic() - started)
            try:
                return await _stream(request, target, size, source.name)
            finally:
                await asyncio.to_thread(target.unlink, missing_ok=True)

    app.router.add_get(SNAPSHOT_PATH, store_snapshot)


async def _stream(request: web.Request, path: Path, size: int, filename: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": SNAPSHOT_CONTENT_TYPE,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }
    )
    response.content_length = size
    await response.prepare(request)
    offset = 0
    while offset < size:
        chunk = await asyncio.to_thread(_read_chunk, path, offset)
        if not chunk:
            break
        await response.write(chunk)
        offset += len(chunk)
    await response.write_eof()
    return response
