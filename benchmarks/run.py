"""make bench: the same load against a back end directly, through strangler and through nginx, side by side.

Throughput rows use wrk (closed loop, -t1 -c32) when installed, else a Python load generator; fixed-rate rows use an
open-loop Python generator (latency measured from each request's scheduled start, so stalls are not hidden).
nginx serves as the fast back end and as the reference reverse proxy when installed (Debian's nginx); otherwise an
aiohttp back end stands in and the nginx proxy row is skipped with the reason. Figures drift between machines;
the ratios measured in one run are what the targets are about. Last, `benchmarks.mismatch_sustain` holds 1,000
mismatching req/s for `--sustain-seconds` and counts what the shadow side dropped. `--only` picks setups.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PASS = "strangler pass-through"  # the default listener (listen.server: fast)
PASS_AIOHTTP = "strangler pass-through, --server aiohttp"
ACCESS = "strangler pass-through, access log on"  # JSON lines to a file: the access log's cost, next to PASS
SHADOW = "strangler shadow 100% (matching)"
SHADOW_INPROC = "strangler shadow 100%, in-process (--no-shadow-worker)"
NGINX = "nginx reverse proxy (1 worker)"
PASS_W2 = "strangler pass-through --workers 2"
NGINX_W2 = "nginx reverse proxy (worker_processes 2)"
# The req/s ratios printed, each the median of per-round ratios of two setups measured side by side.
RPS_RATIOS = (
    ("pass-through / nginx req/s (target >= 0.25)", PASS, NGINX),
    ("pass-through, aiohttp listener / nginx req/s", PASS_AIOHTTP, NGINX),
    ("pass-through fast / aiohttp listener req/s", PASS, PASS_AIOHTTP),
    ("access log on / off req/s (pass-through)", ACCESS, PASS),
    # Worker scaling: each setup with 2 workers against itself with 1.
    ("worker scaling: strangler --workers 2 / --workers 1 req/s", PASS_W2, PASS),
    ("worker scaling: nginx worker_processes 2 / 1 req/s", NGINX_W2, NGINX),
    ("strangler --workers 2 / nginx worker_processes 2 req/s", PASS_W2, NGINX_W2),
    ("shadow 100% / pass-through req/s (target >= 0.75)", SHADOW, PASS),
    ("shadow 100% in-process / pass-through req/s", SHADOW_INPROC, PASS),
)
BODY = '{"id":1,"name":"widget","price":9.99,"tags":["a","b"],"ok":true,"n":12345}'
# What `--only` may pick: throughput setups (the back end direct row always comes with them), the fixed-rate latency
# rows, the compare micro-benchmarks and the sustained mismatch run.
SETUPS = {
    "nginx": NGINX,
    "pass": PASS,
    "aiohttp": PASS_AIOHTTP,
    "access": ACCESS,
    "workers": PASS_W2,
    "shadow": SHADOW,
    "inproc": SHADOW_INPROC,
    "fixed": "",
    "compare": "",
    "sustain": "",
}


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


def nginx_conf(tmp: Path, name: str, server: str, workers: int = 1) -> Path:
    d = tmp / name
    (d / "logs").mkdir(parents=True)
    conf = d / "nginx.conf"
    conf.write_text(
        f"""worker_processes {workers};
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


def routes_yaml(
    tmp: Path, port: int, admin: int, legacy: int, new: int, mode: str, name: str, *, access_log: bool = False
) -> Path:
    extra = "\n    shadow: {sample: 1.0, timeout: 5s}" if mode == "shadow" else ""
    if access_log:
        extra += f"\naccess_log: {{path: {tmp / (name + '.access.log')}, format: json}}"
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


def strangler_cmd(config: Path, *extra: str) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "strangler"), "serve", "--config", str(config), *extra]


def shadow_coverage(admin_port: int) -> dict[str, float]:
    """From a running strangler's /stats: requests served, and mirrored exchanges by outcome[/reason] (all pairs).

    A shadow row's req/s means little without this: a shadow side that cannot keep up drops copies (counted)
    instead of slowing the client, so the row also says what share of the requests really was compared."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats", timeout=10) as r:
        stats = json.load(r)
    out: dict[str, float] = {"served": float(stats["unrouted"]["requests"])}
    for route in stats["routes"]:
        out["served"] += route["requests"]["total"]
        for pair in route["shadow"].values():
            reasoned = {outcome: sum(by.values()) for outcome, by in pair["reasons"].items()}
            keys = [(outcome, n - reasoned.get(outcome, 0)) for outcome, n in pair["outcomes"].items()]
            keys += [(f"{outcome}/{reason}", n) for outcome, by in pair["reasons"].items() for reason, n in by.items()]
            for key, n in keys:
                if n:
                    out[key] = out.get(key, 0.0) + n
    return out


# --- load generators --------------------------------------------------------------------------------------------


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


# --- the run ----------------------------------------------------------------------------------------------------


def _median_row(name: str, runs: list[tuple[float, float, float]]) -> Row:
    """The median of each figure over interleaved rounds, so one noisy moment cannot decide a ratio."""
    return Row(
        name,
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        statistics.median(r[2] for r in runs),
        f"median of {len(runs)}",
    )


Runs = dict[str, list[tuple[float, float, float]]]  # per setup, (req/s, p50 ms, p99 ms) of each round


def _rounds(
    targets: dict[str, int], rounds: int, measure: Callable[[int], tuple[float, float, float]]
) -> tuple[list[Row], Runs]:
    """Measure every target once per round, in turn, for `rounds` rounds; all targets run the whole time."""
    runs: Runs = {name: [] for name in targets}
    for r in range(rounds):
        for name, port in targets.items():
            runs[name].append(measure(port))
            print(f"  round {r + 1}/{rounds} {name}: {runs[name][-1][0]:.0f} req/s", file=sys.stderr)
    return [_median_row(name, values) for name, values in runs.items()], runs


def _rps(x: tuple[float, float, float], y: tuple[float, float, float]) -> float:
    return x[0] / y[0]


def _paired(
    runs: Runs, a: str, b: str, figure: Callable[[tuple[float, float, float], tuple[float, float, float]], float]
) -> float:
    """The median over rounds of a figure of two setups measured next to each other in the same round.

    Machines like this one drift by tens of percent within a minute (shared hosts); a ratio of two medians can
    pair a fast moment of one setup with a slow moment of the other, a per-round ratio cannot."""
    return statistics.median(figure(x, y) for x, y in zip(runs[a], runs[b], strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each row is the median")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=float, default=300.0, help="requests/s of the fixed-rate rows")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-results" / "latest.json")
    ap.add_argument(
        "--only",
        default=",".join(SETUPS),
        help=f"comma-separated setups to run (default all): {', '.join(SETUPS)}; e.g. --only pass,shadow,fixed",
    )
    ap.add_argument(
        "--sustain-seconds",
        type=float,
        default=120.0,
        help="how long benchmarks.mismatch_sustain holds 1,000 mismatching req/s (0: skip it)",
    )
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = ", ".join(sorted(only - SETUPS.keys())) or "(none)"
    if not only or only - SETUPS.keys():
        ap.error(f"--only: unknown setup(s) {unknown}; known: {', '.join(SETUPS)}")
    have_nginx = shutil.which("nginx") is not None
    generator = f"wrk -t1 -c{args.connections}" if shutil.which("wrk") else "python (wrk not installed)"
    print(f"load generator: {generator}")
    print(f"back end: {'nginx' if have_nginx else 'aiohttp (nginx not installed)'}; cores: {os.cpu_count()}")
    rows: list[Row] = []
    runs: Runs = {}
    coverage: dict[str, dict[str, float]] = {}
    if only & {"nginx", "pass", "aiohttp", "access", "workers", "shadow", "inproc"}:
        rows, runs, coverage = _throughput_rows(args, only, have_nginx)
    if "fixed" in only:
        fixed_rows, fixed_runs = _fixed_rows(args)
        rows += fixed_rows
        runs |= fixed_runs

    print()
    print(f"{'setup':<56} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r.name:<56} {r.rps:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}")
    print(f"\nratios (median over {args.rounds} interleaved rounds of each round's ratio, side by side in this run):")
    ratios: dict[str, float] = {}
    for label, a, b in RPS_RATIOS:  # each only when both setups ran (--only)
        if a in runs and b in runs:
            ratios[label] = _paired(runs, a, b, _rps)
    if SHADOW in runs and PASS in runs:
        print(
            "  rounds of shadow / pass-through: "
            + ", ".join(f"{x[0] / y[0]:.2f}" for x, y in zip(runs[SHADOW], runs[PASS], strict=True))
        )
    if "fixed" in only:
        f_be, f_pt, f_pa, f_sl = _fixed_names(args.rate)
        ratios["added p50 ms at fixed rate (target <= 0.5)"] = _paired(runs, f_pt, f_be, lambda x, y: x[1] - y[1])
        ratios["added p50 ms at fixed rate, aiohttp listener"] = _paired(runs, f_pa, f_be, lambda x, y: x[1] - y[1])
        ratios["p99 slow-candidate shadow / pass-through (target <= 1.05)"] = _paired(
            runs, f_sl, f_pt, lambda x, y: x[2] / y[2]
        )
        print(
            "  rounds of p99 slow-candidate shadow / pass-through: "
            + ", ".join(f"{x[2] / y[2]:.2f}" for x, y in zip(runs[f_sl], runs[f_pt], strict=True))
        )
    for k, v in ratios.items():
        print(f"  {k:<62} {v:.3f}")
    by_name = {r.name: r.rps for r in rows}
    if PASS_W2 in by_name:
        print("\nreq/s per worker count (medians above; with fewer free cores than workers, little scaling):")
    for label, one, two in (("strangler pass-through", PASS, PASS_W2), ("nginx reverse proxy", NGINX, NGINX_W2)):
        if one in by_name and two in by_name:
            print(f"  {label:<24} 1 worker {by_name[one]:>8.0f}   2 workers {by_name[two]:>8.0f}")
    if coverage:
        print("\nshadow coverage over the whole run (warm-up included), from each process's /metrics:")
    for name, cov in coverage.items():
        served = cov.get("served") or 1.0
        parts = ", ".join(f"{k} {v:.0f} ({100 * v / served:.1f}%)" for k, v in sorted(cov.items()) if k != "served")
        print(f"  {name:<11} served {served:.0f}: {parts}")
    if "compare" in only:
        print()
        subprocess.run([sys.executable, "-m", "benchmarks.compare_micro"], check=False)
        print()
        subprocess.run([sys.executable, "-m", "benchmarks.compare_bench"], check=False)
        print()  # rows/s one store file takes (docs/scale.md)
        subprocess.run([sys.executable, "-m", "benchmarks.store_rate", "--seconds", "2"], check=False)
    sustain = None
    if "sustain" in only and args.sustain_seconds > 0:
        from benchmarks import mismatch_sustain

        print()
        sustain = mismatch_sustain.run(args.sustain_seconds, 1000.0, 250.0)
        mismatch_sustain.report(sustain)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    figures = {"rows": [asdict(r) for r in rows], "rounds": runs, "ratios": ratios, "coverage": coverage}
    if sustain is not None:
        figures["sustain"] = asdict(sustain)
    args.json.write_text(json.dumps(figures, indent=2))
    print(f"\nfigures written to {args.json}")
    return 0


def _throughput_rows(
    args: argparse.Namespace, only: set[str], have_nginx: bool
) -> tuple[list[Row], Runs, dict[str, dict[str, float]]]:
    """wrk against the back end directly and the picked proxies, all running at once, in interleaved rounds."""
    secs, conns = args.seconds, args.connections
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        be, be2, pt, pt_a, pta, pta_a, sh, sh_a, shi, shi_a, ngx, al, al_a = (free_port() for _ in range(13))
        pt2, pt2_a, ngx2 = (free_port() for _ in range(3))
        if have_nginx:
            server = (
                f"server {{ listen 127.0.0.1:{be}; listen 127.0.0.1:{be2}; location / {{ default_type "
                f"application/json; return 200 '{BODY}'; }} }}"
            )
            stack.enter_context(process(nginx_cmd(nginx_conf(tmp, "backend", server)), be))
        else:
            stack.enter_context(process(backend_cmd(be, 0), be))
            stack.enter_context(process(backend_cmd(be2, 0), be2))
        targets = {"back end direct": be}
        if "pass" in only:
            cfg = routes_yaml(tmp, pt, pt_a, be, be2, "legacy", "pass")
            stack.enter_context(process(strangler_cmd(cfg), pt, log=tmp / "pass.log"))
            targets[PASS] = pt
        if "access" in only:
            cfg = routes_yaml(tmp, al, al_a, be, be2, "legacy", "access", access_log=True)
            stack.enter_context(process(strangler_cmd(cfg), al, log=tmp / "access.log"))
            targets[ACCESS] = al
        if "aiohttp" in only:
            cfg = routes_yaml(tmp, pta, pta_a, be, be2, "legacy", "pass_aiohttp")
            stack.enter_context(process(strangler_cmd(cfg, "--server", "aiohttp"), pta, log=tmp / "pass_aiohttp.log"))
            targets[PASS_AIOHTTP] = pta
        if "workers" in only:
            cfg = routes_yaml(tmp, pt2, pt2_a, be, be2, "legacy", "pass_w2")
            stack.enter_context(process(strangler_cmd(cfg, "--workers", "2"), pt2, log=tmp / "pass_w2.log"))
            targets[PASS_W2] = pt2
        if "shadow" in only:
            cfg = routes_yaml(tmp, sh, sh_a, be, be2, "shadow", "shadow")
            stack.enter_context(process(strangler_cmd(cfg), sh, log=tmp / "shadow.log"))
            targets[SHADOW] = sh
        if "inproc" in only:
            cfg = routes_yaml(tmp, shi, shi_a, be, be2, "shadow", "shadow_inproc")
            stack.enter_context(process(strangler_cmd(cfg, "--no-shadow-worker"), shi, log=tmp / "inproc.log"))
            targets[SHADOW_INPROC] = shi
        if "nginx" in only and have_nginx:
            # worker_processes 2 comes with the workers row, to scale side by side with strangler --workers 2
            for name, port, workers in ((NGINX, ngx, 1), (NGINX_W2, ngx2, 2))[: 2 if "workers" in only else 1]:
                conf = nginx_conf(
                    tmp,
                    f"proxy{workers}",
                    f"upstream be {{ server 127.0.0.1:{be}; keepalive 64; }} server {{ listen 127.0.0.1:{port}; "
                    "location / { proxy_pass http://be; proxy_http_version 1.1; "
                    'proxy_set_header Connection ""; } }',
                    workers=workers,
                )
                stack.enter_context(process(nginx_cmd(conf), port))
                targets[name] = port
        elif "nginx" in only:
            print("nginx reverse proxy row skipped: nginx not installed (apt-get install nginx)")
        # Measured in this order each round, so the setups a ratio compares run next to each other.
        order = [NGINX, PASS, PASS_AIOHTTP, ACCESS, NGINX_W2, PASS_W2, SHADOW, SHADOW_INPROC]
        targets = {"back end direct": targets["back end direct"]} | {k: targets[k] for k in order if k in targets}
        for port in targets.values():
            throughput(port, 1.0, conns)  # warm-up: pools, caches
        rows, runs = _rounds(targets, args.rounds, lambda port: throughput(port, secs, conns))
        coverage = {}
        if SHADOW in targets:
            coverage["worker"] = shadow_coverage(sh_a)
        if SHADOW_INPROC in targets:
            coverage["in-process"] = shadow_coverage(shi_a)
    return rows, runs, coverage


def _fixed_names(rate: float) -> tuple[str, str, str, str]:
    return (
        f"fixed {rate:.0f}/s: back end direct",
        f"fixed {rate:.0f}/s: strangler pass-through",
        f"fixed {rate:.0f}/s: strangler pass-through, --server aiohttp",
        f"fixed {rate:.0f}/s: strangler shadow, candidate 10x slower",
    )


def _fixed_rows(args: argparse.Namespace) -> tuple[list[Row], Runs]:
    """Fixed-rate latency rows: a legacy that takes 2 ms, a candidate 10x slower (20 ms), all up at once."""
    rate, secs = args.rate, args.seconds
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        legacy_p, slow_p, fpt, fpt_a, fpa, fpa_a, fsl, fsl_a = (free_port() for _ in range(8))
        stack.enter_context(process(backend_cmd(legacy_p, 2.0), legacy_p))
        stack.enter_context(process(backend_cmd(slow_p, 20.0), slow_p))
        cfg = routes_yaml(tmp, fpt, fpt_a, legacy_p, slow_p, "legacy", "fpass")
        stack.enter_context(process(strangler_cmd(cfg), fpt, log=tmp / "fpass.log"))
        cfg = routes_yaml(tmp, fpa, fpa_a, legacy_p, slow_p, "legacy", "fpass_aiohttp")
        stack.enter_context(process(strangler_cmd(cfg, "--server", "aiohttp"), fpa, log=tmp / "fpass_aiohttp.log"))
        cfg = routes_yaml(tmp, fsl, fsl_a, legacy_p, slow_p, "shadow", "fslow")
        stack.enter_context(process(strangler_cmd(cfg), fsl, log=tmp / "fslow.log"))
        fixed = dict(zip(_fixed_names(rate), (legacy_p, fpt, fpa, fsl), strict=True))
        for port in fixed.values():
            asyncio.run(_open_loop(port, rate, 1.0))  # warm-up
        return _rounds(fixed, args.rounds, lambda port: asyncio.run(_open_loop(port, rate, secs)))


if __name__ == "__main__":
    sys.exit(main())
