"""make bench: the same load against a back end directly, through strangler and through nginx, side by side.

Throughput rows use wrk (closed loop, -t1 -c32) when installed, else a Python load generator; fixed-rate rows use an
open-loop Python generator (latency measured from each request's scheduled start, so stalls are not hidden).
nginx serves as the fast back end and as the reference reverse proxy when installed (Debian's nginx); otherwise an
aiohttp back end stands in and the nginx proxy row is skipped with the reason. Figures drift between machines;
the ratios measured in one run are what the targets are about, and they too move with the machine kind, which is
printed first and stored with the figures (`benchmarks.machine`); `benchmarks.cpu_split` then says where nginx and
strangler each spend their CPU per request (with perf, how much of it wakes sleeping peers). Last,
`benchmarks.mismatch_sustain` holds 1,000 mismatching req/s for `--sustain-seconds` and counts what the shadow side
dropped. `--only` picks setups.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks import machine as machine_kind
from benchmarks.fixed_rate import fixed_ratios, fixed_rows
from benchmarks.harness import (
    ROOT,
    backend_cmd,
    free_ports,
    nginx_backend,
    nginx_proxy,
    process,
    routes_yaml,
    shadow_coverage,
    strangler_cmd,
)
from benchmarks.load import Row, Runs, measure_rounds, paired, rps_ratio, throughput

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
    "wakeups": "",  # benchmarks.cpu_split --perf on nginx and pass-through: where each spends its CPU per request
    "sustain": "",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each row is the median")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=float, default=300.0, help="requests/s of the fixed-rate rows")
    ap.add_argument(
        "--fixed-seconds",
        type=float,
        default=10.0,
        help="duration of each fixed-rate measurement: at 300 req/s, 10 s puts 3,000 samples under each p99 "
        "(its 30 slowest requests), where 4 s left 1,200 and one slow request moved a round's p99 ratio by 0.2",
    )
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
    machine = machine_kind.describe()  # before any load: the calibration loop must have the machine to itself
    print(machine_kind.summary(machine))
    print(f"load generator: {generator}")
    print(f"back end: {'nginx' if have_nginx else 'aiohttp (nginx not installed)'}; cores: {os.cpu_count()}")
    rows: list[Row] = []
    runs: Runs = {}
    coverage: dict[str, dict[str, float]] = {}
    if only & {"nginx", "pass", "aiohttp", "access", "workers", "shadow", "inproc"}:
        rows, runs, coverage = _throughput_rows(args, only, have_nginx)
    if "fixed" in only:
        f_rows, fixed_runs = fixed_rows(args)
        rows += f_rows
        runs |= fixed_runs

    print()
    print(f"{'setup':<56} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r.name:<56} {r.rps:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}")
    print(f"\nratios (median over {args.rounds} interleaved rounds of each round's ratio, side by side in this run):")
    ratios: dict[str, float] = {}
    for label, a, b in RPS_RATIOS:  # each only when both setups ran (--only)
        if a in runs and b in runs:
            ratios[label] = paired(runs, a, b, rps_ratio)
    if SHADOW in runs and PASS in runs:
        print(
            "  rounds of shadow / pass-through: "
            + ", ".join(f"{x[0] / y[0]:.2f}" for x, y in zip(runs[SHADOW], runs[PASS], strict=True))
        )
    if "fixed" in only:
        ratios |= fixed_ratios(runs, args.rate)
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
    wake_ups = _wake_ups(args) if "wakeups" in only else None
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
    figures = {
        "machine": machine,
        "rows": [asdict(r) for r in rows],
        "rounds": runs,
        "ratios": ratios,
        "coverage": coverage,
    }
    if wake_ups is not None:
        figures["wake_ups"] = wake_ups
    if sustain is not None:
        figures["sustain"] = asdict(sustain)
    args.json.write_text(json.dumps(figures, indent=2))
    print(f"\nfigures written to {args.json}")
    return 0


def _wake_ups(args: argparse.Namespace) -> dict[str, object] | None:
    """nginx and strangler pass-through each alone under wrk, their CPU per request split into user and kernel, and
    (with perf) the share each spends waking a sleeping peer: what makes pass-through / nginx move with the machine
    kind (README, "Performance"). None, with the reason printed, when wrk, nginx or perf is missing."""
    from benchmarks import cpu_split, wakeups

    missing = [tool for tool in ("wrk", "nginx", "ss", "pgrep") if shutil.which(tool) is None]
    if missing:
        print(f"\nCPU split skipped: {', '.join(missing)} not installed")
        return None
    why = wakeups.perf_missing()
    if why is not None:
        print(f"\nCPU split without perf ({why})")
    print("\nCPU per request, nginx and strangler pass-through each alone (benchmarks.cpu_split):")
    return {setup: cpu_split.measure(setup, args.seconds, args.connections, why is None) for setup in ("nginx", "pass")}


def _throughput_rows(
    args: argparse.Namespace, only: set[str], have_nginx: bool
) -> tuple[list[Row], Runs, dict[str, dict[str, float]]]:
    """wrk against the back end directly and the picked proxies, all running at once, in interleaved rounds."""
    secs, conns = args.seconds, args.connections
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        ports = free_ports(16)
        be, be2, pt, pt_a, pta, pta_a, sh, sh_a, shi, shi_a, ngx, al, al_a, pt2, pt2_a, ngx2 = ports
        if have_nginx:
            stack.enter_context(nginx_backend(tmp, be, be2))
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
                stack.enter_context(nginx_proxy(tmp, port, be, workers))
                targets[name] = port
        elif "nginx" in only:
            print("nginx reverse proxy row skipped: nginx not installed (apt-get install nginx)")
        # Measured in this order each round, so the setups a ratio compares run next to each other.
        order = [NGINX, PASS, PASS_AIOHTTP, ACCESS, NGINX_W2, PASS_W2, SHADOW, SHADOW_INPROC]
        targets = {"back end direct": targets["back end direct"]} | {k: targets[k] for k in order if k in targets}
        for port in targets.values():
            throughput(port, 1.0, conns)  # warm-up: pools, caches
        rows, runs = measure_rounds(targets, args.rounds, lambda port: throughput(port, secs, conns))
        coverage = {}
        if SHADOW in targets:
            coverage["worker"] = shadow_coverage(sh_a)
        if SHADOW_INPROC in targets:
            coverage["in-process"] = shadow_coverage(shi_a)
    return rows, runs, coverage


if __name__ == "__main__":
    sys.exit(main())
