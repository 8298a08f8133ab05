"""The barest Python reverse proxy: how far an interpreted proxy can go on this machine (`benchmarks.ceiling`).

One uvloop process; each client connection gets its own upstream connection, opened at accept; a request is
relayed when its head is whole (GET without a body, as wrk sends) and an answer when its Content-Length body is.
No routing, no header rules, no limits, no timeouts: nothing strangler must do. `--work-us N` spins N µs of Python
per request and per answer, to see how the proxy's req/s falls with its own work, and `--coalesce` sends through
`proxy.coalesce` (the first write of a loop iteration at once, the rest at its end) to see what that recovers.

    python -m benchmarks.bare_proxy --port 9000 --upstream 8000 [--work-us 30] [--coalesce]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import uvloop

from proxy.coalesce import WriteCoalescer

Send = Callable[[asyncio.WriteTransport, bytes], object]


def _send_at_once(transport: asyncio.WriteTransport, data: bytes) -> None:
    transport.write(data)


def _spinner(work_us: float) -> Callable[[], None]:
    if not work_us:
        return lambda: None
    clock, seconds = time.perf_counter, work_us / 1e6

    def spin() -> None:
        end = clock() + seconds
        while clock() < end:
            pass

    return spin


def answer_end(buffer: bytes) -> int:
    """Where the first whole answer in `buffer` ends (its head and Content-Length body); 0 while it is partial."""
    end_of_head = buffer.find(b"\r\n\r\n")
    if end_of_head < 0:
        return 0
    length = 0
    for line in buffer[:end_of_head].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    end = end_of_head + 4 + length
    return end if len(buffer) >= end else 0


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while end := answer_end(self.buffer):
            self.client.work()
            self.client.answer(self.buffer[:end])
            self.buffer = self.buffer[end:]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream_port: int, send: Send, work: Callable[[], None]) -> None:
        self.upstream_port = upstream_port
        self.send = send
        self.work = work
        self.buffer = b""
        self.waiting: list[bytes] = []
        self.transport: asyncio.WriteTransport | None = None
        self.upstream: _Upstream | None = None
        self.connecting: asyncio.Task[object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(
            loop.create_connection(lambda: _Upstream(self), "127.0.0.1", self.upstream_port)
        )

    def upstream_ready(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for request in self.waiting:
            self._forward(request)
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            request, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
            self.work()
            if self.upstream is None:
                self.waiting.append(request)
            else:
                self._forward(request)

    def _forward(self, request: bytes) -> None:
        assert self.upstream is not None
        assert self.upstream.transport is not None
        self.send(self.upstream.transport, request)

    def answer(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send(self.transport, data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(port: int, upstream_port: int, work_us: float, coalesce: bool) -> None:
    loop = asyncio.get_running_loop()
    send: Send = WriteCoalescer(loop).write if coalesce else _send_at_once
    work = _spinner(work_us)
    server = await loop.create_server(lambda: _Client(upstream_port, send, work), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True, help="the back end's loopback port")
    parser.add_argument("--work-us", type=float, default=0.0, help="Python work spun per request and per answer")
    parser.add_argument("--coalesce", action="store_true", help="send through proxy.coalesce")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream, args.work_us, args.coalesce))


if __name__ == "__main__":
    main()
