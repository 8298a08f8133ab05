"""Load generators and interleaved rounds for `make bench`: wrk or a Python closed loop for throughput, an open loop
at a fixed rate for latency, and the per-round pairing that the printed ratios come from."""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    note: str = ""


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            f"http://127.0.0.1:{port}/api/ping",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  wrk reported errors on port {port}:\n{out}", file=sys.stderr)
    return rps, p50, p99


async def closed_loop(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
    url = f"http://127.0.0.1:{port}/api/ping"
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            while time.perf_counter() < end:
                t = time.perf_counter()
                async with session.get(url) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(worker() for _ in range(connections)))
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / seconds, q[49] * 1000, q[98] * 1000


def throughput(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
    if shutil.which("wrk"):
        return wrk(port, seconds, connections)
    return asyncio.run(closed_loop(port, seconds, connections))


async def open_loop(port: int, rate: float, seconds: float) -> tuple[float, float, float]:
    """Requests at a fixed rate; latency from the scheduled start, so a stalled proxy cannot hide its queue."""
    url = f"http://127.0.0.1:{port}/api/ping"
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        t0 = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = t0 + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                async with session.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(i) for i in range(n)))
    if errors:
        print(f"  {errors} errors at fixed rate on port {port}", file=sys.stderr)
    q = statistics.quantiles(latencies, n=100)
    return n / seconds, q[49] * 1000, q[98] * 1000


def median_row(name: str, runs: list[tuple[float, float, float]]) -> Row:
    """The median of each figure over interleaved rounds, so one noisy moment cannot decide a ratio."""
    return Row(
        name,
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        statistics.median(r[2] for r in runs),
        f"median of {len(runs)}",
    )


Runs = dict[str, list[tuple[float, float, float]]]  # per setup, (req/s, p50 ms, p99 ms) of each round


def measure_rounds(
    targets: dict[str, int], rounds: int, measure: Callable[[int], tuple[float, float, float]]
) -> tuple[list[Row], Runs]:
    """Measure every target once per round, in turn, for `rounds` rounds; all targets run the whole time."""
    runs: Runs = {name: [] for name in targets}
    for r in range(rounds):
        for name, port in targets.items():
            runs[name].append(measure(port))
            print(f"  round {r + 1}/{rounds} {name}: {runs[name][-1][0]:.0f} req/s", file=sys.stderr)
    return [median_row(name, values) for name, values in runs.items()], runs


def rps_ratio(x: tuple[float, float, float], y: tuple[float, float, float]) -> float:
    return x[0] / y[0]


def paired(
    runs: Runs, a: str, b: str, figure: Callable[[tuple[float, float, float], tuple[float, float, float]], float]
) -> float:
    """The median over rounds of a figure of two setups measured next to each other in the same round.

    Machines like this one drift by tens of percent within a minute (shared hosts); a ratio of two medians can
    pair a fast moment of one setup with a slow moment of the other, a per-round ratio cannot."""
    return statistics.median(figure(x, y) for x, y in zip(runs[a], runs[b], strict=True))
