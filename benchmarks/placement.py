"""Where the scheduler puts the processes, and what that does to shadow 100% / pass-through: side by side in one run.

Under shadowing both cores of a small machine are busy (the proxy, its shadow worker, the nginx back end, wrk), and
the processes that wake on the proxy's core preempt it; in pass-through one core is mostly free for them. This runs
pass-through and shadow 100% (matching responses) twice each: `free` (the scheduler places everything, as `make bench`
does) and `pinned` (the proxy alone on the first core, its shadow worker, the back end and wrk on the others, with
`sched_setaffinity`, as an operator could with `taskset` or systemd's `CPUAffinity=`). Each round measures the four in
turn, starting one further along each round; every figure is the median of rounds. It prints req/s, each round's
shadow / pass-through ratio for both placements, and the proxy's and the worker's involuntary context switches per
request (preemptions: `nonvoluntary_ctxt_switches` of every thread, from /proc), the mechanism itself. With `--who`,
one more measurement of each free setup under `perf record -e sched:sched_switch` (after the rounds, so it perturbs
none of them) says which process took the proxy's core each time the proxy was preempted.

    .venv/bin/python -m benchmarks.placement --rounds 4 [--who]

Needs wrk and nginx (apt-get install wrk nginx), Linux (/proc, sched_setaffinity) and at least 2 cores; `--who`
also linux-perf and root (the scheduler's tracepoints).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.harness import children, free_ports, listening_pids, nginx_backend, process, routes_yaml, strangler_cmd

SETUPS = (("pass", "legacy", False), ("shadow", "shadow", False), ("pass", "legacy", True), ("shadow", "shadow", True))


def _tids(pids: list[int]) -> set[int]:
    """The thread ids of these processes now (none for a process that is gone)."""
    out: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            out.update(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))
    return out


def preemptions(pid: int) -> int:
    """Involuntary context switches of every thread of a process so far (0 once it is gone)."""
    total = 0
    for tid in _tids([pid]):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            total += int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
    return total


# One sched_switch event as `perf script -F trace` prints it.
_SWITCH = re.compile(r"prev_pid=(\d+) .*?prev_state=(\S+) ==> next_comm=(.+?) next_pid=(\d+)")


def preempted_by(trace: str, proxy: set[int], names: dict[int, str]) -> Counter[str]:
    """Who took the CPU each time a thread in `proxy` was switched out while still runnable (preempted, state R),
    from `perf script -F trace` output of sched_switch events: labelled by `names` (pid → label) where given, else
    by the command name. A thread switched out asleep (S, D) gave the CPU up and is not counted."""
    who: Counter[str] = Counter()
    for line in trace.splitlines():
        m = _SWITCH.search(line)
        if m is not None and int(m[1]) in proxy and m[2].startswith("R"):
            who[names.get(int(m[4]), m[3])] += 1
    return who


def _who(port: int, backends: list[int], seconds: float, connections: int) -> tuple[int, Counter[str]] | str:
    """Requests served and who preempted the proxy during one measurement under perf; or why it could not run."""
    [proxy] = listening_pids(port)
    worker = children(proxy)
    names = dict.fromkeys(_tids(worker), "shadow worker")
    names.update(dict.fromkeys(_tids([p for be in backends for p in listening_pids(be)]), "nginx (back end)"))
    with tempfile.TemporaryDirectory(prefix="strangler-sched-") as t:
        data = Path(t) / "sched.data"
        rec = subprocess.Popen(
            ["perf", "record", "-q", "-e", "sched:sched_switch", "-a", "-o", str(data), "--", "sleep", f"{seconds}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        n = _requests(port, seconds, connections, None)
        _, err = rec.communicate()
        if rec.returncode != 0 or not data.exists():
            return f"perf could not record the scheduler here: {err.strip().splitlines()[-1:] or rec.returncode}"
        trace = subprocess.run(["perf", "script", "-i", str(data), "-F", "trace"], capture_output=True, text=True)
    return n, preempted_by(trace.stdout, _tids([proxy]), names)


def _pin(pids: list[int], cpus: set[int]) -> None:
    for tid in _tids(pids):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


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
    ap.add_argument("--who", action="store_true", help="also: who preempts the proxy (needs perf and root)")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    if cores < 2 or not hasattr(os, "sched_setaffinity"):
        print("placement: needs Linux and at least 2 cores", file=sys.stderr)
        return 2
    proxy_cpus, rest = {0}, set(range(1, cores))
    with tempfile.TemporaryDirectory(prefix="strangler-place-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        ports: list[int] = []
        backends: list[list[int]] = []
        for i, (name, mode, pinned) in enumerate(SETUPS):
            be, be2, port, admin = free_ports(4)
            backends.append([be, be2])
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
        who = [_who(ports[i], backends[i], args.seconds, args.connections) for i in (0, 1)] if args.who else []
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
    for (name, _, _), got in zip(SETUPS, who, strict=False):
        if isinstance(got, str):
            print(f"who preempts the proxy, {name}, free: {got}")
            continue
        n, by = got
        listed = ", ".join(f"{label} {count / n:.3f}" for label, count in by.most_common(4)) or "nobody"
        print(f"who preempts the proxy, {name}, free (per request, {n:,} requests): {listed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
