"""The open-loop load generator of `benchmarks.mismatch_sustain`: requests at their scheduled times on keep-alive
connections, each a bare asyncio protocol (a request is sent on an idle connection, a new one opened when none is
idle), so the generator itself costs little CPU; latency is measured from the scheduled time.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from dataclasses import dataclass, field

MAX_CONNECTIONS = 512


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (responses carry Content-Length)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        found = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        if len(self.buf) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buf[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))


@dataclass
class Load:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> str:
        if not self.latencies:
            return f"sent {self.sent}, none answered"
        q = statistics.quantiles(self.latencies, n=100)
        return (
            f"sent {self.sent}, 200 OK {self.ok}, errors {self.errors}; latency from the scheduled time "
            f"p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms, max {max(self.latencies) * 1000:.1f} ms"
        )


async def drive(port: int, rate: float, match_rate: float, seconds: float, load: Load) -> None:
    """`rate` mismatching and `match_rate` matching requests per second, evenly interleaved, open loop."""
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    opened = 0
    total = rate + match_rate
    n = int(total * seconds)
    tasks: set[asyncio.Task[None]] = set()

    async def connection() -> _Connection:
        nonlocal opened
        while idle:
            conn = idle.pop()
            if not conn.lost:
                return conn
        opened += 1
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        return conn

    async def one(i: int, scheduled: float) -> None:
        # Every `total / match_rate`-th request goes to the matching route.
        matching = match_rate > 0 and int((i + 1) * match_rate / total) != int(i * match_rate / total)
        path = f"/api/{'match' if matching else 'mismatch'}/{i}"
        conn = await connection()
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        try:
            status = await conn.waiter
        except ConnectionError:
            load.errors += 1
            return
        load.latencies.append(loop.time() - scheduled)
        if status == 200:
            load.ok += 1
        else:
            load.errors += 1
        idle.append(conn)

    t0 = loop.time() + 0.05
    i = 0
    while i < n:
        due = t0 + i / total
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        while i < n and t0 + i / total <= loop.time():
            if len(tasks) >= MAX_CONNECTIONS:  # the proxy is not keeping up: wait rather than open more
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            task = loop.create_task(one(i, t0 + i / total))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            load.sent += 1
            i += 1
    if tasks:
        await asyncio.wait(tasks)
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
