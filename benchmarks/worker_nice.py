"""The primary's latency under a slow candidate at several shadow worker nice values, side by side in one run.

At a fixed open-loop rate through a legacy that takes 2 ms: the back end directly, strangler pass-through, and
strangler shadowing every request to a candidate 10x slower (20 ms), once per `--nice` value
(`limits.shadow_worker_nice`). Every setup runs the whole time; each round measures them in turn, starting one further
along the list each round, with `--pause` seconds between two measurements, so that no setup pays for the copies the
one before it left in flight. Printed: p50 and p99 (medians of rounds) and each round's p99 against pass-through's in
the same round. With `--sched` (Linux `perf`, root) it also records the scheduler during each measurement and prints
the proxy process's run-queue delay (wake-up to running, `perf sched timehist`): the mechanism itself, steadier than a
client-side p99 on a busy machine.

    .venv/bin/python -m benchmarks.worker_nice --nice 0,5,10,19 --rounds 10 --sched
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import backend_cmd, free_ports, routes_yaml, strangler_cmd, wait_port
from benchmarks.load import open_loop

Figures = tuple[float, float, float]  # req/s, p50 ms, p99 ms


def sched_delays(data: Path, pid: int) -> list[float]:
    """The run-queue delay (ms) of every wake-up of the threads of process `pid` in a `perf sched record` file."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", str(data)], capture_output=True, text=True).stdout
    delays = []
    for line in out.splitlines()[3:]:
        parts = line.split()
        # "name[pid]" for a process's main thread, "name[tid/pid]" for its other threads
        if len(parts) >= 6 and parts[2].endswith((f"[{pid}]", f"/{pid}]")):
            with contextlib.suppress(ValueError):
                delays.append(float(parts[-2]))
    return delays


def measure(port: int, pid: int, rate: float, seconds: float, sched: Path | None) -> tuple[Figures, list[float]]:
    if sched is None:
        return asyncio.run(open_loop(port, rate, seconds)), []
    rec = subprocess.Popen(
        ["perf", "sched", "record", "-a", "-o", str(sched)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.3)  # perf's own start-up
    try:
        figures = asyncio.run(open_loop(port, rate, seconds))
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait()
    delays = sched_delays(sched, pid)
    sched.unlink(missing_ok=True)
    return figures, delays


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.worker_nice", description=__doc__)
    ap.add_argument("--nice", default="0,5,10,19", help="comma-separated limits.shadow_worker_nice values")
    ap.add_argument("--rate", type=float, default=300.0, help="requests/s")
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each measurement")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between two measurements")
    ap.add_argument("--sched", action="store_true", help="also the proxy's run-queue delay (needs perf, root)")
    args = ap.parse_args(argv)
    if args.sched and not shutil.which("perf"):
        ap.error("--sched needs perf (linux-perf)")
    nices = [int(n) for n in args.nice.split(",")]
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], port: int) -> int:
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
        wait_port(port)
        return procs[-1].pid

    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as t:
        tmp = Path(t)
        try:
            legacy, slow = free_ports(2)
            targets = {"back end direct": (legacy, start(backend_cmd(legacy, 2.0), legacy))}
            start(backend_cmd(slow, 20.0), slow)
            for name, mode, nice in [("pass-through", "legacy", 0)] + [
                (f"shadow, nice {n}", "shadow", n) for n in nices
            ]:
                port, admin = free_ports(2)
                cfg = routes_yaml(tmp, port, admin, legacy, slow, mode, f"p{port}")
                cfg.write_text(cfg.read_text() + f"limits: {{shadow_worker_nice: {nice}}}\n")
                targets[name] = (port, start(strangler_cmd(cfg), port))
            for port, _ in targets.values():
                asyncio.run(open_loop(port, args.rate, 1.0))  # warm-up
            names = list(targets)
            runs: dict[str, list[Figures]] = {name: [] for name in names}
            delays: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    port, pid = targets[name]
                    figures, waited = measure(
                        port, pid, args.rate, args.seconds, tmp / "sched.data" if args.sched else None
                    )
                    runs[name].append(figures)
                    delays[name] += waited
                    time.sleep(args.pause)  # the shadow side finishes its last copies before the next setup
                print(f"  round {r + 1}/{args.rounds}", file=sys.stderr)
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)
    report(runs, delays, args)
    return 0


def report(runs: dict[str, list[Figures]], delays: dict[str, list[float]], args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    print(f"\n{args.rate:.0f} req/s, {args.seconds:g} s x {args.rounds} rounds, side by side; load average {load:.1f}")
    print(f"{'setup':<20} {'p50 ms':>7} {'p99 ms':>7}  p99 / pass-through: median [each round]")
    base = runs["pass-through"]
    for name, figures in runs.items():
        ratios = [x[2] / y[2] for x, y in zip(figures, base, strict=True)]
        p50, p99 = statistics.median(f[1] for f in figures), statistics.median(f[2] for f in figures)
        each = " ".join(f"{x:.2f}" for x in ratios)
        print(f"{name:<20} {p50:>7.2f} {p99:>7.2f}  {statistics.median(ratios):.3f} [{each}]")
    if not args.sched:
        return
    print("\nthe proxy process's run-queue delay, every wake-up of its threads (ms):")
    print(f"{'setup':<20} {'wake-ups':>9} {'mean':>7} {'p99':>7} {'p99.9':>7} {'> 0.5 ms':>9}")
    for name, waited in delays.items():
        if name == "back end direct" or not waited:
            continue
        q = sorted(waited)
        print(
            f"{name:<20} {len(q):>9} {statistics.mean(q):>7.3f} {q[int(0.99 * (len(q) - 1))]:>7.3f} "
            f"{q[int(0.999 * (len(q) - 1))]:>7.3f} {sum(d > 0.5 for d in q):>9}"
        )


if __name__ == "__main__":
    sys.exit(main())
