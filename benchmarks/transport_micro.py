"""Micro-benchmark: aiohttp.ClientSession against proxy.upstream.transport.UpstreamPool on the same local back end.

Runs N GETs from 32 concurrent workers through each client in turn (alternating rounds, best round kept) and
prints requests per second, the client's own CPU time per request (the back end's share excluded), and the
ratios. The back end (a low-level aiohttp server answering a 60-byte JSON document) runs in a child process so
it does not share the client's event loop. Uses uvloop when importable.

    python -m benchmarks.transport_micro            # N=5000, 3 rounds
    python -m benchmarks.transport_micro -n 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from proxy.upstream.transport import UpstreamPool

BODY = b'{"id":42,"name":"widget","price":9.99,"tags":["a","b"],"ok":1}'
WORKERS = 32


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _serve() -> None:
    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    server = web.Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, "127.0.0.1", 0, backlog=1024)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    srv.close()


async def _drive(n: int, one: Callable[[], Awaitable[int]]) -> tuple[float, float]:
    """(requests per second, client CPU microseconds per request)."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


async def _bench_session(url: URL, n: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=WORKERS)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        target = url / "item"

        async def one() -> int:
            async with session.get(target) as resp:
                body = await resp.read()
                assert body == BODY
                return resp.status

        return await _drive(n, one)


async def _bench_pool(url: URL, n: int) -> tuple[float, float]:
    pool = UpstreamPool(url, max_connections=WORKERS)
    headers = [("Host", f"{url.host}:{url.port}"), ("Accept", "*/*")]

    async def one() -> int:
        resp = await pool.request(
            "GET", "/item", headers, None, content_length=None, connect_timeout=5, read_timeout=5, retry_stale=True
        )
        try:
            body = b""
            while chunk := await resp.read():
                body += chunk
            assert body == BODY
            return resp.status
        finally:
            resp.close()

    try:
        return await _drive(n, one)
    finally:
        await pool.close()


async def _main(url: URL, n: int, rounds: int, loop_name: str) -> None:
    await _bench_session(url, min(n, 500))  # warm up both paths and the server
    await _bench_pool(url, min(n, 500))
    rate = {"session": 0.0, "pool": 0.0}
    cpu = {"session": float("inf"), "pool": float("inf")}
    for r in range(rounds):
        for name, bench in (("session", _bench_session), ("pool", _bench_pool)):
            got_rate, got_cpu = await bench(url, n)
            rate[name] = max(rate[name], got_rate)
            cpu[name] = min(cpu[name], got_cpu)
            print(f"round {r + 1}: {name:8} {got_rate:8.0f} req/s {got_cpu:7.1f} us CPU/req")
    print(f"loop={loop_name} N={n} workers={WORKERS} (best of {rounds})")
    print(f"  aiohttp.ClientSession  {rate['session']:8.0f} req/s  {cpu['session']:6.1f} us client CPU/req")
    print(f"  UpstreamPool           {rate['pool']:8.0f} req/s  {cpu['pool']:6.1f} us client CPU/req")
    speedup, saving = rate["pool"] / rate["session"], cpu["session"] / cpu["pool"]
    print(f"  ratio pool/session     {speedup:8.2f}x req/s  {saving:6.2f}x less client CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=5000, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    loop_name = _install_uvloop()
    if args.serve:
        asyncio.run(_serve())
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.transport_micro", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        asyncio.run(_main(URL(f"http://127.0.0.1:{port}"), args.n, args.rounds, loop_name))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()
