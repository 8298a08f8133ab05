"""The access log writer: whole lines per write, appends shared by several writers, drops counted, flush on close."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.access.writer import LineSink, write_lines
from proxy.metrics import Counter


def _counter() -> Counter:
    return Counter("dropped", "test")


def test_write_lines_cuts_writes_at_line_boundaries(tmp_path: Path) -> None:
    """Writing in chunks of at most `limit` bytes of whole lines (a longer line alone) loses and reorders nothing."""
    lines = [b"a" * 30 + b"\n", b"b" * 30 + b"\n", b"c" * 100 + b"\n", b"d\n"]
    read, write = os.pipe()
    try:
        write_lines(write, lines, limit=64)
        os.close(write)
        chunks = []
        while chunk := os.read(read, 4096):
            chunks.append(chunk)
    finally:
        os.close(read)
    assert b"".join(chunks) == b"".join(lines)


def test_several_writers_appending_to_one_file_never_interleave_lines(tmp_path: Path) -> None:
    """Two writers (as two worker processes would) append to one path at once: every line arrives whole."""
    path = tmp_path / "access.log"
    sinks = [LineSink(str(path), _counter()) for _ in range(2)]

    def fill(sink: LineSink, tag: bytes) -> None:
        for i in range(3000):
            sink.put(b"%s %05d " % (tag, i) + b"x" * 200 + b"\n")

    threads = [threading.Thread(target=fill, args=(sink, tag)) for sink, tag in zip(sinks, (b"A", b"B"), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sink in sinks:
        sink.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 6000
    assert all(len(line) == 208 and line.endswith(b"x" * 200) for line in lines)
    assert [line for line in lines if line.startswith(b"A")] == [b"A %05d " % i + b"x" * 200 for i in range(3000)]


def test_lines_past_the_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    """With the buffer full, put() returns at once and counts the line instead of keeping it."""
    dropped = _counter()
    sink = LineSink(str(tmp_path / "access.log"), dropped, max_pending=0)
    for _ in range(3):
        sink.put(b"x\n")
    sink.close()
    assert dropped.get() == 3
    assert (tmp_path / "access.log").read_bytes() == b""


def test_reopen_writes_new_lines_to_a_fresh_file_at_the_path(tmp_path: Path) -> None:
    """After the file is renamed, reopen() sends the following lines to a new file at the same path."""
    path = tmp_path / "access.log"
    sink = LineSink(str(path), _counter())
    sink.put(b"one\n")
    sink.reopen()  # flushes what it holds to the current file first
    _wait(lambda: path.read_bytes() == b"one\n")
    path.rename(tmp_path / "access.log.1")
    sink.reopen()
    _wait(path.exists)
    sink.put(b"two\n")
    sink.close()
    assert (tmp_path / "access.log.1").read_bytes() == b"one\n"
    assert path.read_bytes() == b"two\n"


def test_an_unopenable_path_is_an_error_naming_it(tmp_path: Path) -> None:
    """A path in a missing directory fails at once, naming the key and the path."""
    with pytest.raises(OSError, match=r"access_log.path: cannot open .*missing/access.log"):
        LineSink(str(tmp_path / "missing" / "access.log"), _counter())


def _wait(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll until `condition` holds (a hang guard, not a speed check)."""
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)
