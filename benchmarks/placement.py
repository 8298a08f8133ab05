"""Where the scheduler puts the processes, and what that does to shadow 100% / pass-through: side by side in one run.

Under shadowing both cores of a small machine are busy (the proxy, its shadow worker, the nginx back end, wrk), and
the processes that wake on the proxy's core preempt it; in pass-through one core is mostly free for them. This runs
pass-through and shadow 100% (matching responses) twice each: `free` (the scheduler places everything, as `make bench`
does) and `pinned` (the proxy alone on the first core, its shadow worker, the back end and wrk on the others, with
`sched_setaffinity`, as an operator could with `taskset` or systemd's `CPUAffinity=`). Each round measures the four in
turn, starting one further along each round; every figure is the median of rounds. It prints req/s, each round's
shadow / pass-through ratio for both placements, and the proxy's and the worker's involuntary context switches per
request (preemptions: `nonvoluntary_ctxt_switches` of every thread, from /proc), the mechanism itself.

    .venv/bin/python -m benchmarks.placement --rounds 4

Needs wrk and nginx (apt-get install wrk nginx), Linux (/proc, sched_setaffinity) and at least 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import children, free_ports, listening_pids, nginx_backend, process, routes_yaml, strangler_cmd

SETUPS = (("pass", "legacy", False), ("shadow", "shadow", False), ("pass", "legacy", True), ("shadow", "shadow", True))


def preemptions(pid: int) -> int:
    """Involuntary context switches of every thread of a process so far (0 once it is gone)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
                total += int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
    return total


def _pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


def _requests(port: int, seconds: float, connections: int, cpus: set[int] | None) -> int:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"http://127.0.0.1:{port}/api/ping"]
    if cpus is not None:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(out.split(" requests in")[0].split()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    if cores < 2 or not hasattr(os, "sched_setaffinity"):
        print("placement: needs Linux and at least 2 cores", file=sys.stderr)
        return 2
    proxy_cpus, rest = {0}, set(range(1, cores))
    with tempfile.TemporaryDirectory(prefix="strangler-place-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        ports: list[int] = []
        for i, (name, mode, pinned) in enumerate(SETUPS):
            be, be2, port, admin = free_ports(4)
            own = tmp / str(i)  # each setup its own back end and files
            own.mkdir()
            stack.enter_context(nginx_backend(own, be, be2))
            config = routes_yaml(own, port, admin, be, be2, mode, name)
            stack.enter_context(process(strangler_cmd(config), port, log=own / f"{name}.log"))
            _requests(port, 2, args.connections, None)  # warm-up; the worker is up once copies flow
            if pinned:
                [proxy] = listening_pids(port)
                _pin([proxy], proxy_cpus)
                _pin(children(proxy) + listening_pids(be) + listening_pids(be2), rest)
            ports.append(port)
        rps: list[list[float]] = [[] for _ in SETUPS]
        switches: list[list[tuple[float, float]]] = [[] for _ in SETUPS]
        for r in range(args.rounds):
            order = [(r + k) % len(SETUPS) for k in range(len(SETUPS))]
            for i in order:
                name, _, pinned = SETUPS[i]
                [proxy] = listening_pids(ports[i])
                worker = children(proxy)
                before = preemptions(proxy), sum(preemptions(w) for w in worker)
                n = _requests(ports[i], args.seconds, args.connections, rest if pinned else None)
                after = preemptions(proxy), sum(preemptions(w) for w in worker)
                rps[i].append(n / args.seconds)
                switches[i].append(((after[0] - before[0]) / n, (after[1] - before[1]) / n))
                label = f"{name}, {'pinned' if pinned else 'free'}"
                print(f"  round {r + 1}/{args.rounds} {label}: {n / args.seconds:,.0f} req/s", flush=True)
    print(f"\n{'setup':<18} {'req/s':>9} {'proxy preempted/req':>20} {'worker preempted/req':>21}")
    for i, (name, _, pinned) in enumerate(SETUPS):
        proxy_sw = statistics.median(s[0] for s in switches[i])
        worker_sw = statistics.median(s[1] for s in switches[i])
        worker_col = f"{worker_sw:21.3f}" if name == "shadow" else f"{'—':>21}"
        print(f"{name + (', pinned' if pinned else ', free'):<18} {statistics.median(rps[i]):9,.0f} "
              f"{proxy_sw:20.3f} {worker_col}")  # fmt: skip
    for label, p, s in (("free", 0, 1), ("pinned", 2, 3)):
        rounds = [b / a for a, b in zip(rps[p], rps[s], strict=True)]
        listed = ", ".join(f"{x:.2f}" for x in rounds)
        print(f"shadow / pass-through, {label}: {statistics.median(rounds):.3f} (rounds {listed})")
    for label, a, b in (("pass-through", 0, 2), ("shadow", 1, 3)):
        rounds = [y / x for x, y in zip(rps[a], rps[b], strict=True)]
        print(f"{label}, pinned / free req/s: {statistics.median(rounds):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
