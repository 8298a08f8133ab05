"""Micro-benchmark of one upstream HTTP/1.1 exchange on a connection, before and after a change, in one run.

Both versions of `H1Connection` (the current `proxy.upstream._h1`, and `proxy/_h1.py` as it was at `--before`, by
default the commit before proxy/h1_protocol.py was added) run the same exchanges on a fake transport: encode the request
head, `exchange()` driven by hand (the coroutine is stepped, no event loop runs, no socket), the response fed to
`data_received`, the body taken with `read_nowait`, then `finish()` keeps the connection for the next one. Short rounds
alternate between the versions (the best of many short rounds shrugs off a busy machine); the best round of each is
printed side by side, in CPU µs per exchange (process time: other processes do not count).

    .venv/bin/python -m benchmarks.h1_micro                   # N=2000, 40 rounds
    .venv/bin/python -m benchmarks.h1_micro -n 5000 --rounds 100 --before main
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import types
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from proxy.upstream._h1 import H1Connection
from proxy.upstream.request_head import encode_head

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"id":42,"name":"widget","price":9.99,"tags":["a","b"],"ok":1}'
_SMALL_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
    b"Date: Sun, 06 Dec 2026 13:00:00 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\n" % len(BODY)
)
CASES: dict[str, tuple[list[bytes], bytes, bool]] = {
    # name: (packets as the socket delivers them, the body, a HEAD request)
    "small (Content-Length)": ([_SMALL_HEAD + BODY], BODY, False),
    "chunked (2 packets)": (
        [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(BODY[:30]), BODY[:30]),
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY[30:]), BODY[30:]),
        ],
        BODY,
        False,
    ),
    "100 Continue + small": ([b"HTTP/1.1 100 Continue\r\n\r\n" + _SMALL_HEAD + BODY], BODY, False),
    "HEAD": ([_SMALL_HEAD], b"", True),
}
HEADERS = [("Host", "127.0.0.1:8080"), ("Accept", "*/*"), ("User-Agent", "bench"), ("X-Request-Id", "abc123")]


class FakeTransport:
    """Takes writes and does nothing: the benchmark delivers the response itself."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        raise AssertionError("a benchmark connection must stay open")

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def before_module(rev: str | None) -> tuple[types.ModuleType, str]:
    """`proxy/_h1.py` as it was at `rev` (default: just before proxy/h1_protocol.py was added), as a module."""
    if rev is None:
        added = _git("log", "-n1", "--diff-filter=A", "--format=%H", "--", "proxy/h1_protocol.py")
        rev = f"{added}^" if added else "HEAD"
    label = _git("rev-parse", "--short", rev)
    module = types.ModuleType("h1_before")
    module.__file__ = f"{label}:proxy/_h1.py"
    sys.modules[module.__name__] = module  # `from __future__ import annotations` dataclass lookups need it
    exec(compile(_git("show", f"{rev}:proxy/_h1.py"), module.__file__, "exec"), module.__dict__)
    return module, label


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def _step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that is waiting on an already-settled future to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the exchange did not finish")


Version = tuple[Callable[..., Any], Callable[..., tuple[bytes, bool] | None]]  # (H1Connection, encode_head)


def bench(version: Version, loop: asyncio.AbstractEventLoop, case: str, n: int) -> float:
    """CPU µs per exchange of `case` through one version's H1Connection and encode_head."""
    packets, body, head_only = CASES[case]
    connection, encode = version
    conn = connection(loop, lambda conn: None)
    conn.connection_made(FakeTransport())
    method = "HEAD" if head_only else "GET"
    start = time.process_time()
    for _ in range(n):
        encoded = encode(method, "/item?id=42", HEADERS, "")
        assert encoded is not None
        coro = conn.exchange(encoded[0], b"", head_only=head_only, close=False, read_timeout=30.0)
        coro.send(None)  # runs to the wait for the response head
        for packet in packets:
            conn.data_received(packet)
        _msg, payload = _step(coro)
        if payload.read_nowait() != body or not conn.finish():
            raise AssertionError(f"{case}: wrong body or connection not reusable")
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="exchanges per case per round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--before", help="git revision of the 'before' proxy/_h1.py")
    args = parser.parse_args()
    old, label = before_module(args.before)
    versions: dict[str, Version] = {
        f"before ({label})": (old.H1Connection, old.encode_head),
        "after (work tree)": (H1Connection, encode_head),
    }
    loop = asyncio.new_event_loop()  # only for futures and timer handles; it never runs
    try:
        best = {(name, case): float("inf") for name in versions for case in CASES}
        for version in versions.values():  # warm up
            for case in CASES:
                bench(version, loop, case, min(args.n, 2000))
        order = list(versions.items())
        for _ in range(args.rounds):
            order.reverse()  # neither version always runs first
            for case in CASES:
                for name, version in order:
                    best[name, case] = min(best[name, case], bench(version, loop, case, args.n))
    finally:
        loop.close()
    names = list(versions)
    print(f"CPU µs per exchange, best of {args.rounds} rounds of {args.n} (lower is better); {sys.version.split()[0]}")
    print(f"{'case':26} {names[0]:>18} {names[1]:>18} {'after/before':>13}")
    for case in CASES:
        before, after = best[names[0], case], best[names[1], case]
        print(f"{case:26} {before:18.2f} {after:18.2f} {after / before:13.3f}")


if __name__ == "__main__":
    main()
