"""make bench: the same load against a back end directly, through strangler and through nginx, side by side.

Throughput rows use wrk (closed loop, -t1 -c32) when installed, else a Python load generator; fixed-rate rows use an
open-loop Python generator (latency measured from each request's scheduled start, so stalls are not hidden).
nginx serves as the fast back end and as the reference reverse proxy when installed (Debian's nginx); otherwise an
aiohttp back end stands in and the nginx proxy row is skipped with the reason. Figures drift between machines;
the ratios measured in one run are what the targets are about.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BODY = '{"id":1,"name":"widget","price":9.99,"tags":["a","b"],"ok":true,"n":12345}'


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    note: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def process(cmd: list[str], port: int, *, env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[None]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_port(port)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def nginx_conf(tmp: Path, name: str, server: str) -> Path:
    d = tmp / name
    (d / "logs").mkdir(parents=True)
    conf = d / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  {server}
}}
"""
    )
    return conf


def nginx_cmd(conf: Path) -> list[str]:
    return ["nginx", "-p", str(conf.parent), "-e", str(conf.parent / "logs" / "error.log"), "-c", str(conf)]


def backend_cmd(port: int, delay_ms: float) -> list[str]:
    return [sys.executable, "-m", "benchmarks.backend", "--port", str(port), "--delay-ms", str(delay_ms)]


def routes_yaml(tmp: Path, port: int, admin: int, legacy: int, new: int, mode: str, name: str) -> Path:
    extra = "\n    shadow: {sample: 1.0, timeout: 5s}" if mode == "shadow" else ""
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""version: 1
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
store: {{path: {tmp / (name + ".db")}}}
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
routes:
  - id: bench
    match: {{path: "/**"}}
    mode: {mode}{extra}
"""
    )
    return path


def strangler_cmd(config: Path) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "strangler"), "serve", "--config", str(config)]


# --- load generators --------------------------------------------------------------------------------------------


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", f"http://127.0.0.1:{port}/api/ping"],
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


async def _closed_loop(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
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
    return asyncio.run(_closed_loop(port, seconds, connections))


async def _open_loop(port: int, rate: float, seconds: float) -> tuple[float, float, float]:
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


def fixed_rate(port: int, rate: float, seconds: float) -> tuple[float, float, float]:
    asyncio.run(_open_loop(port, rate, 1.0))  # warm-up: pools, caches
    return asyncio.run(_open_loop(port, rate, seconds))


# --- the run ----------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=6.0, help="duration of each throughput run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=float, default=300.0, help="requests/s of the fixed-rate rows")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-results" / "latest.json")
    args = ap.parse_args()
    have_nginx = shutil.which("nginx") is not None
    print(f"load generator: {'wrk -t1 -c%d' % args.connections if shutil.which('wrk') else 'python (wrk not installed)'}")
    print(f"back end: {'nginx' if have_nginx else 'aiohttp (nginx not installed)'}; cores: {os.cpu_count()}")
    rows: list[Row] = []
    secs, conns = args.seconds, args.connections
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as t:
        tmp = Path(t)
        be, be2, px, sp, sa, ngx = (free_port() for _ in range(6))
        if have_nginx:
            backend = nginx_cmd(
                nginx_conf(
                    tmp,
                    "backend",
                    f"server {{ listen 127.0.0.1:{be}; listen 127.0.0.1:{be2}; location / {{ default_type "
                    f"application/json; return 200 '{BODY}'; }} }}",
                )
            )
        else:
            backend = backend_cmd(be, 0)
        with process(backend, be):
            if not have_nginx:
                ctx: contextlib.AbstractContextManager[None] = process(backend_cmd(be2, 0), be2)
            else:
                ctx = contextlib.nullcontext()
            with ctx:
                rows.append(Row("back end direct", *throughput(be, secs, conns)))
                cfg = routes_yaml(tmp, sp, sa, be, be2, "legacy", "pass")
                with process(strangler_cmd(cfg), sp, log=tmp / "pass.log"):
                    throughput(sp, 1.0, conns)  # warm-up
                    rows.append(Row("strangler pass-through", *throughput(sp, secs, conns)))
                cfg = routes_yaml(tmp, sp, sa, be, be2, "shadow", "shadow")
                with process(strangler_cmd(cfg), sp, log=tmp / "shadow.log"):
                    throughput(sp, 1.0, conns)
                    rows.append(Row("strangler shadow 100% (matching)", *throughput(sp, secs, conns)))
                if have_nginx:
                    conf = nginx_conf(
                        tmp,
                        "proxy",
                        f"upstream be {{ server 127.0.0.1:{be}; keepalive 64; }} server {{ listen 127.0.0.1:{ngx}; "
                        "location / { proxy_pass http://be; proxy_http_version 1.1; "
                        'proxy_set_header Connection ""; } }',
                    )
                    with process(nginx_cmd(conf), ngx):
                        throughput(ngx, 1.0, conns)
                        rows.append(Row("nginx reverse proxy (1 worker)", *throughput(ngx, secs, conns)))
        # Fixed-rate latency rows: a legacy that takes 2 ms, a candidate 10x slower (20 ms).
        legacy_p, slow_p = free_port(), free_port()
        rate = args.rate
        with process(backend_cmd(legacy_p, 2.0), legacy_p), process(backend_cmd(slow_p, 20.0), slow_p):
            rows.append(Row(f"fixed {rate:.0f}/s: back end direct", *fixed_rate(legacy_p, rate, secs)))
            cfg = routes_yaml(tmp, sp, sa, legacy_p, slow_p, "legacy", "fpass")
            with process(strangler_cmd(cfg), sp, log=tmp / "fpass.log"):
                rows.append(Row(f"fixed {rate:.0f}/s: strangler pass-through", *fixed_rate(sp, rate, secs)))
            cfg = routes_yaml(tmp, sp, sa, legacy_p, slow_p, "shadow", "fslow")
            with process(strangler_cmd(cfg), sp, log=tmp / "fslow.log"):
                rows.append(
                    Row(f"fixed {rate:.0f}/s: strangler shadow, candidate 10x slower", *fixed_rate(sp, rate, secs))
                )
    by = {r.name: r for r in rows}
    print()
    print(f"{'setup':<52} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r.name:<52} {r.rps:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}")
    print("\nratios (measured side by side in this run):")
    ratios: dict[str, float] = {}
    ngx_row = by.get("nginx reverse proxy (1 worker)")
    pt, sh = by["strangler pass-through"], by["strangler shadow 100% (matching)"]
    if ngx_row:
        ratios["pass-through / nginx req/s (target >= 0.20)"] = pt.rps / ngx_row.rps
    ratios["shadow 100% / pass-through req/s (target >= 0.60)"] = sh.rps / pt.rps
    f_be = by[f"fixed {rate:.0f}/s: back end direct"]
    f_pt = by[f"fixed {rate:.0f}/s: strangler pass-through"]
    f_sl = by[f"fixed {rate:.0f}/s: strangler shadow, candidate 10x slower"]
    ratios["added p50 ms at fixed rate (target <= 1.0)"] = f_pt.p50_ms - f_be.p50_ms
    ratios["p99 slow-candidate shadow / pass-through (target <= 1.10)"] = f_sl.p99_ms / f_pt.p99_ms
    for k, v in ratios.items():
        print(f"  {k:<60} {v:.3f}")
    subprocess.run([sys.executable, "-m", "benchmarks.compare_micro"], check=False)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "ratios": ratios}, indent=2))
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
