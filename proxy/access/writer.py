"""The access log's writer: lines are appended to a bounded in-memory buffer on the event loop and written by one
thread, so a slow disk or a stalled pipe never blocks the loop.

Past `max_pending` buffered lines, new lines are dropped and counted (strangler_access_log_dropped_total). Each
write appends whole lines to a descriptor opened with O_APPEND, so several worker processes can share one file;
writes to a pipe (stdout under a container runtime) are cut at PIPE_BUF so lines from several processes never
interleave. `reopen()` (SIGUSR1, after logrotate renamed the file) makes the thread write what it holds and then
open the path afresh; `close()` writes everything buffered, then closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from typing import Final

from proxy.metrics import Counter

log = logging.getLogger("strangler.proxy")

STDOUT: Final = "-"
MAX_PENDING: Final = 50_000  # buffered lines; past it lines are dropped and counted
FLUSH_INTERVAL: Final = 0.2  # seconds between writes when few lines arrive
FLUSH_LINES: Final = 512  # lines that wake the writer at once
_FILE_WRITE: Final = 64 * 1024  # bytes per write() to a regular file
_PIPE_WRITE: Final = 4096  # POSIX PIPE_BUF on Linux: writes up to it are atomic on a pipe
CLOSE_TIMEOUT: Final = 5.0  # seconds `close()` waits for the last write (a stalled pipe must not hang shutdown)


def open_log(path: str) -> int:
    """A descriptor appending to `path` (created 0644 when missing), or standard output for "-". Raises OSError
    naming the path."""
    if path == STDOUT:
        return 1
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OSError(exc.errno, f"access_log.path: cannot open {path}: {exc.strerror}") from exc


def _chunk_size(fd: int) -> int:
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            return _PIPE_WRITE
    return _FILE_WRITE


def write_lines(fd: int, lines: list[bytes], limit: int) -> None:
    """Write `lines` in as few write() calls as fit `limit` bytes each, every call holding whole lines only
    (a line longer than `limit` goes alone)."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if batch and size + len(line) > limit:
            _write_all(fd, b"".join(batch))
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        _write_all(fd, b"".join(batch))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LineSink:
    """The buffer and its writer thread, for one path. `put` runs on the event loop; everything else may too."""

    __slots__ = (
        "_chunk",
        "_closing",
        "_fd",
        "_lock",
        "_pending",
        "_reopen",
        "_thread",
        "_wake",
        "dropped",
        "max_pending",
        "path",
    )

    def __init__(self, path: str, dropped: Counter, *, max_pending: int = MAX_PENDING) -> None:
        self.path = path
        self.dropped = dropped
        self.max_pending = max_pending
        self._fd = open_log(path)
        self._chunk = _chunk_size(self._fd)
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._reopen = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"access-log {path}", daemon=True)
        self._thread.start()

    def put(self, line: bytes) -> None:
        """Buffer one line (never blocks on I/O); dropped and counted when the buffer is full."""
        with self._lock:
            pending = self._pending
            if len(pending) >= self.max_pending:
                self.dropped.inc()
                return
            pending.append(line)
            count = len(pending)
        if count == FLUSH_LINES:
            self._wake.set()

    def reopen(self) -> None:
        """Write what is buffered to the current file, then open the path again (after logrotate moved it)."""
        self._reopen = True
        self._wake.set()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write everything buffered and close the file; waits up to `timeout` seconds (blocking: call it from a
        thread, or with timeout 0 to let the writer finish on its own)."""
        self._closing = True
        self._wake.set()
        if timeout > 0:
            self._thread.join(timeout)

    def _take(self) -> list[bytes]:
        with self._lock:
            lines, self._pending = self._pending, []
        return lines

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            closing = self._closing
            self._flush()
            if self._reopen:
                self._reopen = False
                self._swap_file()
            if closing:
                self._flush()  # lines put between the flag and the first flush
                if self._fd != 1:
                    os.close(self._fd)
                return

    def _flush(self) -> None:
        lines = self._take()
        if not lines:
            return
        try:
            write_lines(self._fd, lines, self._chunk)
        except OSError as exc:
            with self._lock:  # the loop thread counts its drops under the same lock
                self.dropped.inc(amount=float(len(lines)))  # counted as dropped: they never reached the log
            log.error("access log %s: write failed, %d lines lost: %s", self.path, len(lines), exc)

    def _swap_file(self) -> None:
        if self._fd == 1:
            return  # standard output is not reopened
        try:
            fd = open_log(self.path)
        except OSError as exc:
            log.error("access log: reopen failed, still writing to the old file: %s", exc)
            return
        os.close(self._fd)
        self._fd = fd
        self._chunk = _chunk_size(fd)
