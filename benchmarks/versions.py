"""Two versions of strangler side by side under the same load: this checkout against a git ref, req/s per setup.

`make bench` compares setups of one version; a change to the request path is judged against the code before it.
On a shared 2-core machine req/s drifts by tens of percent between minutes, so both versions run at once, behind one
nginx back end, and are measured in interleaved rounds (the order reversed every other round, so neither is always
measured first); each figure is the median of the per-round ratios. Setups: pass-through (`legacy`) and shadow 100%
with the shadow worker (`shadow`, matching responses). For shadow it also prints the share of copies each version
compared and dropped: a version that drops more copies did less work per request. When this checkout runs its
request path compiled (`proxy.native`), the base is compiled too before it is measured. And for each version it prints
the CPU time per request of its proxy process and its shadow worker, read from /proc over each round (Linux): a
change to one of them shows in its own figure, not only in req/s, which both share.

    .venv/bin/python -m benchmarks.versions --base 927472c            # 6 rounds of 4 s per version and setup
    .venv/bin/python -m benchmarks.versions --base HEAD~3 --setups shadow --rounds 10

Needs wrk and nginx (apt-get install wrk nginx).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    build_like_this,
    children,
    coverage_shares,
    cpu_seconds,
    export_tree,
    free_ports,
    listening_pids,
    nginx_backend,
    process,
    routes_yaml,
    serve_from,
    shadow_coverage,
)
from benchmarks.load import wrk

MODES = {"pass": "legacy", "shadow": "shadow"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git ref to compare this checkout against")
    ap.add_argument("--setups", default="pass,shadow", help=f"comma-separated, of: {', '.join(MODES)}")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each measurement")
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if not setups or any(s not in MODES for s in setups):
        ap.error(f"--setups takes a comma-separated list of: {', '.join(MODES)}")
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)} (apt-get install {' '.join(missing)})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="strangler-versions-") as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        trees = {args.base: export_tree(args.base, tmp / "base"), "this checkout": ROOT}
        build_like_this(trees[args.base])
        be, be2 = free_ports(2)
        stack.enter_context(nginx_backend(tmp, be, be2))
        ports: dict[tuple[str, str], tuple[int, int]] = {}
        for label, tree in trees.items():
            for setup in setups:
                port, admin = free_ports(2)
                name = f"{'base' if tree != ROOT else 'this'}-{setup}"
                config = routes_yaml(tmp, port, admin, be, be2, MODES[setup], name)
                cmd, env = serve_from(tree, config)
                stack.enter_context(process(cmd, port, env=env, cwd=tree, log=tmp / f"{name}.log"))
                ports[(label, setup)] = (port, admin)
        for port, _ in ports.values():
            wrk(port, 1.0, args.connections)  # warm-up: pools, caches
        rps: dict[tuple[str, str], list[float]] = {key: [] for key in ports}
        cpu: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in ports}  # µs/request: proxy, worker
        for r in range(args.rounds):
            order = list(ports) if r % 2 == 0 else list(reversed(ports))
            for key in order:
                rps[key].append(_measure(ports[key][0], args.seconds, args.connections, cpu[key]))
                time.sleep(0.5)  # let the shadow worker catch up before the next measurement
            print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{k[0]} {k[1]} {v[-1]:.0f}" for k, v in rps.items()))
        time.sleep(1.5)  # the workers' last acknowledgements
        coverage = {label: shadow_coverage(ports[(label, "shadow")][1]) for label in trees if "shadow" in setups}
    _print(args.base, setups, rps, coverage)
    _print_cpu(args.base, setups, cpu)
    return 0


def _measure(port: int, seconds: float, connections: int, cpu: list[tuple[float, float]]) -> float:
    """req/s of one round; appends the proxy's and its shadow worker's CPU µs per request. The worker's CPU is read
    a moment after wrk stops, so the copies of the round's last requests are counted; requests are req/s times the
    round's wall time (wrk's own start-up is the same for both versions)."""
    [proxy] = listening_pids(port)
    workers = children(proxy)
    proxy_before, worker_before = cpu_seconds(proxy), sum(map(cpu_seconds, workers))
    started = time.monotonic()
    rps = wrk(port, seconds, connections)[0]
    served = rps * (time.monotonic() - started)
    proxy_after = cpu_seconds(proxy)
    time.sleep(0.3)
    worker_after = sum(map(cpu_seconds, workers))
    if served:
        cpu.append(((proxy_after - proxy_before) / served * 1e6, (worker_after - worker_before) / served * 1e6))
    return rps


def _print(
    base: str,
    setups: list[str],
    rps: dict[tuple[str, str], list[float]],
    coverage: dict[str, dict[str, float]],
) -> None:
    this = "this checkout"
    print(f"\n{'setup':<10} {base:>14} {this:>14}  {'ratio (median of rounds)':<26} rounds")
    for setup in setups:
        a, b = rps[(base, setup)], rps[(this, setup)]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        print(
            f"{setup:<10} {statistics.median(a):>14,.0f} {statistics.median(b):>14,.0f}  "
            f"{statistics.median(ratios):<26.3f} " + " ".join(f"{x:.2f}" for x in ratios)
        )
    if "pass" in setups and "shadow" in setups:
        for label in (base, this):
            ratios = [s / p for s, p in zip(rps[(label, "shadow")], rps[(label, "pass")], strict=True)]
            print(f"shadow / pass-through, {label}: {statistics.median(ratios):.3f} (rounds "
                  + ", ".join(f"{x:.2f}" for x in ratios) + ")")  # fmt: skip
    for label, cov in coverage.items():
        print(f"shadow copies, {label}: {cov.get('served', 0.0):,.0f} served: {coverage_shares(cov)}")


def _print_cpu(base: str, setups: list[str], cpu: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
    """CPU µs per request of each version's proxy and shadow worker: medians of rounds, and this / base."""
    this = "this checkout"
    print(f"\n{'CPU µs per request':<24} {base:>14} {this:>14}  ratio (median of rounds)")
    for setup in setups:
        for i, role in enumerate(("proxy", "shadow worker")):
            if role == "shadow worker" and setup != "shadow":
                continue
            a, b = ([round_[i] for round_ in cpu[(label, setup)]] for label in (base, this))
            ratios = [y / x for x, y in zip(a, b, strict=False) if x]  # (a round without requests has no row)
            if ratios:
                print(f"{setup + ', ' + role:<24} {statistics.median(a):>14.1f} {statistics.median(b):>14.1f}  "
                      f"{statistics.median(ratios):.3f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
