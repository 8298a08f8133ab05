"""Where a request's CPU goes under saturating load: each process's CPU time per request, pass-through and shadow.

`make bench` gives req/s; this says why shadow 100% / pass-through is what it is on a small machine. Under `wrk -t1
-c32` every process involved (wrk itself, the nginx back end, the proxy, its shadow worker) is measured from
`/proc/<pid>/stat` (wrk from its own resource usage) over the same seconds, and divided by the requests served. When
the cores are full, req/s is about cores / (the sum of those per-request figures); when they are not, the proxy alone
is the limit. For shadow it also prints the share of copies compared and dropped.

    .venv/bin/python -m benchmarks.cpu_split                 # pass-through and shadow, 8 s each
    .venv/bin/python -m benchmarks.cpu_split --seconds 15 --setups shadow

Needs wrk and nginx (apt-get install wrk nginx); Linux (/proc).
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
    cpu_seconds,
    free_port,
    listening_pids,
    nginx_backend,
    process,
    routes_yaml,
    shadow_coverage,
    strangler_cmd,
)

MODES = {"pass": "legacy", "shadow": "shadow"}


def _wrk(port: int, seconds: float, connections: int) -> tuple[float, float]:
    """Requests served and wrk's own CPU seconds (from its resource usage when it exits)."""
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
    return float(found.group(1)), usage.ru_utime + usage.ru_stime


def measure(setup: str, seconds: float, connections: int) -> None:
    with tempfile.TemporaryDirectory(prefix="strangler-cpu-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        be, be2, port, admin = (free_port() for _ in range(4))
        stack.enter_context(nginx_backend(tmp, be, be2))
        config = routes_yaml(tmp, port, admin, be, be2, MODES[setup], setup)
        stack.enter_context(process(strangler_cmd(config), port, log=tmp / f"{setup}.log"))
        _wrk(port, 2, connections)  # warm-up: pools, caches, the shadow worker's first copies
        time.sleep(1.0)
        [proxy] = listening_pids(port)
        roles = {"proxy": [proxy], "shadow worker": children(proxy), "nginx (back end)": listening_pids(be)}
        before = {role: sum(map(cpu_seconds, pids)) for role, pids in roles.items()}
        started = time.monotonic()
        requests, wrk_cpu = _wrk(port, seconds, connections)
        elapsed = time.monotonic() - started
        after = {role: sum(map(cpu_seconds, pids)) for role, pids in roles.items()}
        used = {role: after[role] - before[role] for role in roles} | {"wrk (load generator)": wrk_cpu}
        print(f"\n{setup}: {requests / elapsed:,.0f} req/s over {elapsed:.1f} s, {os.cpu_count()} cores")
        total = 0.0
        for role, cpu in used.items():
            if cpu <= 0:
                continue
            total += cpu
            print(f"  {role:<22} {cpu / requests * 1e6:7.1f} µs CPU per request  ({cpu / elapsed:5.0%} of a core)")
        cores = os.cpu_count() or 1
        ceiling = cores / (total / requests)
        print(f"  {'all':<22} {total / requests * 1e6:7.1f} µs; {cores} cores / that = {ceiling:,.0f} req/s "
              f"if the cores were the only limit ({total / elapsed:.0%} busy)")  # fmt: skip
        if setup == "shadow":
            time.sleep(1.5)  # the worker's last acknowledgements
            shares = coverage_shares(shadow_coverage(admin))
            print(f"  copies over the whole run (warm-up included): {shares}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="pass,shadow", help=f"comma-separated, of: {', '.join(MODES)}")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if not setups or any(s not in MODES for s in setups):
        ap.error(f"--setups takes a comma-separated list of: {', '.join(MODES)}")
    missing = [tool for tool in ("wrk", "nginx", "ss", "pgrep") if shutil.which(tool) is None]  # ss: iproute2
    if missing or not Path("/proc/self/stat").exists():
        print(f"needs Linux and {', '.join(missing) or 'its tools'} (apt-get install wrk nginx)", file=sys.stderr)
        return 2
    for setup in setups:
        measure(setup, args.seconds, args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
