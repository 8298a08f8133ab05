"""Where a request's CPU goes under saturating load: each process's CPU time per request (user and kernel), for
pass-through, shadow, and nginx as the proxy.

`make bench` gives req/s; this says why the ratios are what they are on a small machine. Under `wrk -t1 -c32` every
process involved (wrk itself, the nginx back end, the proxy, its shadow worker) is measured from `/proc/<pid>/stat`
(wrk from its own resource usage) over the same seconds, and divided by the requests served. When the cores are
full, req/s is about cores / (the sum of those per-request figures); when they are not, the proxy alone is the
limit. For shadow it also prints the share of copies compared and dropped. `--perf` samples the proxy (nginx's
worker for `nginx`) with perf and prints its kernel share and the share spent waking a sleeping peer
(`benchmarks.wakeups`): on a virtual machine that is where a slower proxy loses most against nginx.

    .venv/bin/python -m benchmarks.cpu_split                 # pass-through and shadow, 8 s each
    .venv/bin/python -m benchmarks.cpu_split --seconds 15 --setups shadow
    .venv/bin/python -m benchmarks.cpu_split --setups nginx,pass --perf

Needs wrk and nginx (apt-get install wrk nginx); Linux (/proc); for --perf, linux-perf and root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    children,
    coverage_shares,
    cpu_times,
    free_ports,
    listening_pids,
    nginx_backend,
    nginx_proxy,
    process,
    routes_yaml,
    shadow_coverage,
    strangler_cmd,
)
from benchmarks.wakeups import WAKE, perf_missing, record, shares

MODES = {"pass": "legacy", "shadow": "shadow", "nginx": ""}  # nginx: nginx itself as the proxy, for comparison


def _wrk(port: int, seconds: float, connections: int) -> tuple[float, tuple[float, float]]:
    """Requests served and wrk's own user and kernel CPU seconds (from its resource usage when it exits)."""
    proc = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"http://127.0.0.1:{port}/api/ping"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped here
    found = re.search(r"(\d+) requests in", out)
    if found is None:
        raise RuntimeError(f"wrk printed no request count:\n{out}")
    return float(found.group(1)), (usage.ru_utime, usage.ru_stime)


def measure(setup: str, seconds: float, connections: int, perf: bool) -> dict[str, object]:
    """Run one setup under wrk, print where its CPU went, and return the figures (µs per request by role, user and
    kernel; with `perf`, the proxy's kernel and wake-up shares)."""
    with tempfile.TemporaryDirectory(prefix="strangler-cpu-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        be, be2, port, admin = free_ports(4)
        stack.enter_context(nginx_backend(tmp, be, be2))
        if setup == "nginx":
            stack.enter_context(nginx_proxy(tmp, port, be))
        else:
            config = routes_yaml(tmp, port, admin, be, be2, MODES[setup], setup)
            stack.enter_context(process(strangler_cmd(config), port, log=tmp / f"{setup}.log"))
        _wrk(port, 2, connections)  # warm-up: pools, caches, the shadow worker's first copies
        time.sleep(1.0)
        if setup == "nginx":
            proxy = max(listening_pids(port))  # nginx's worker (its master only waits)
            roles = {"nginx (reverse proxy)": listening_pids(port), "nginx (back end)": listening_pids(be)}
        else:
            [proxy] = listening_pids(port)
            roles = {"proxy": [proxy], "shadow worker": children(proxy), "nginx (back end)": listening_pids(be)}
        before = {role: _times(pids) for role, pids in roles.items()}
        recording = record(proxy, seconds) if perf else None
        started = time.monotonic()
        requests, wrk_cpu = _wrk(port, seconds, connections)
        elapsed = time.monotonic() - started
        after = {role: _times(pids) for role, pids in roles.items()}
        used = {role: (after[role][0] - before[role][0], after[role][1] - before[role][1]) for role in roles}
        used["wrk (load generator)"] = wrk_cpu
        print(f"\n{setup}: {requests / elapsed:,.0f} req/s over {elapsed:.1f} s, {os.cpu_count()} cores")
        print(f"  {'CPU µs per request':<22} {'all':>7} {'user':>7} {'kernel':>7}")
        total = 0.0
        for role, (user, kernel) in used.items():
            cpu = user + kernel
            if cpu <= 0:
                continue
            total += cpu
            print(
                f"  {role:<22} {cpu / requests * 1e6:7.1f} {user / requests * 1e6:7.1f} {kernel / requests * 1e6:7.1f}"
                f"  ({cpu / elapsed:4.0%} of a core)"
            )
        figures: dict[str, object] = {
            "req_per_s": requests / elapsed,
            "us_per_request": {role: [u / requests * 1e6, k / requests * 1e6] for role, (u, k) in used.items()},
        }
        cores = os.cpu_count() or 1
        ceiling = cores / (total / requests)
        print(f"  {'all':<22} {total / requests * 1e6:7.1f} µs; {cores} cores / that = {ceiling:,.0f} req/s "
              f"if the cores were the only limit ({total / elapsed:.0%} busy)")  # fmt: skip
        if recording is not None and not (found := shares(recording)).samples:
            print("  perf recorded no samples of the proxy (not permitted to sample another process?)")
        elif recording is not None:
            own = sum(used[next(iter(roles))]) / requests * 1e6
            waking = f"{found.waking:.0%} waking a peer ({WAKE}): about {found.waking * own:.1f} µs per request"
            print(f"  perf, the proxy's {found.samples:,} samples: {found.kernel:.0%} in the kernel, {waking}")
            figures |= {
                "perf_kernel_share": found.kernel,
                "perf_waking_share": found.waking,
                "waking_us": found.waking * own,
            }
        if setup == "shadow":
            time.sleep(1.5)  # the worker's last acknowledgements
            shares_ = coverage_shares(shadow_coverage(admin))
            print(f"  copies over the whole run (warm-up included): {shares_}")
        return figures


def _times(pids: list[int]) -> tuple[float, float]:
    times = [cpu_times(pid) for pid in pids]
    return sum(user for user, _ in times), sum(kernel for _, kernel in times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="pass,shadow", help=f"comma-separated, of: {', '.join(MODES)}")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--perf", action="store_true", help="also sample the proxy with perf: its kernel and wake-up shares"
    )
    args = ap.parse_args()
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if not setups or any(s not in MODES for s in setups):
        ap.error(f"--setups takes a comma-separated list of: {', '.join(MODES)}")
    missing = [tool for tool in ("wrk", "nginx", "ss", "pgrep") if shutil.which(tool) is None]  # ss: iproute2
    if missing or not Path("/proc/self/stat").exists():
        print(f"needs Linux and {', '.join(missing) or 'its tools'} (apt-get install wrk nginx)", file=sys.stderr)
        return 2
    if args.perf and (why := perf_missing()) is not None:
        print(f"--perf: {why}", file=sys.stderr)
        return 2
    for setup in setups:
        measure(setup, args.seconds, args.connections, args.perf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
