"""How far an interpreted proxy can go on this machine, side by side: nginx as the proxy, the barest uvloop proxy
(`benchmarks.bare_proxy`) with 0 and `--work-us` µs of Python per request and per answer, each with and without
`proxy.coalesce`, and strangler pass-through.

Issue 13 asks for 0.25 of nginx's req/s. This says how much of the gap is Python as such (the bare proxy at 0 µs),
how much is the proxy's own work (the bare proxy at strangler's µs), and how much of the cost of that work is paid
again in the kernel, waking peers that the slower proxy lets fall asleep (the same work with coalescing). Each ratio
is the median over interleaved rounds of that round's ratio to nginx, as in `make bench`.

    .venv/bin/python -m benchmarks.ceiling                       # 4 rounds of 4 s; --work-us 30
    .venv/bin/python -m benchmarks.ceiling --work-us 10,20,30 --rounds 6

Needs wrk and nginx (apt-get install wrk nginx).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import free_port, free_ports, nginx_backend, nginx_proxy, process, routes_yaml, strangler_cmd
from benchmarks.load import wrk


def bare_cmd(port: int, upstream: int, work_us: float, coalesce: bool) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.bare_proxy", "--port", str(port), "--upstream", str(upstream)]
    return [*cmd, "--work-us", str(work_us), *(["--coalesce"] if coalesce else [])]


def setups(work: list[float]) -> list[tuple[str, float, bool]]:
    """(name, work µs, coalesce) for every bare proxy measured."""
    return [
        (f"bare, {w:g} µs work{', coalesced' if coalesce else ''}", w, coalesce)
        for w in dict.fromkeys((0.0, *work))  # 0 once, even when asked for again
        for coalesce in (False, True)
    ]


def measure(work: list[float], rounds: int, seconds: float) -> dict[str, float]:
    """Each setup's median req/s ratio to nginx; also "nginx req/s"."""
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        backend, spare, nginx, strangler, admin = free_ports(5)
        stack.enter_context(nginx_backend(tmp, backend, spare))
        stack.enter_context(nginx_proxy(tmp, nginx, backend))
        targets = {}
        for name, w, coalesce in setups(work):
            port = targets[name] = free_port()
            stack.enter_context(process(bare_cmd(port, backend, w, coalesce), port, log=tmp / f"{port}.log"))
        config = routes_yaml(tmp, strangler, admin, backend, spare, "legacy", "p")
        stack.enter_context(process(strangler_cmd(config), strangler, log=tmp / "strangler.log"))
        targets["strangler pass-through"] = strangler
        for port in (nginx, *targets.values()):
            wrk(port, 1, 32)  # warm up: connections, pools, caches
        ratios: dict[str, list[float]] = {name: [] for name in targets}
        nginx_rps: list[float] = []
        for r in range(rounds):
            base = wrk(nginx, seconds, 32)[0]
            nginx_rps.append(base)
            for name, port in targets.items():
                ratios[name].append(wrk(port, seconds, 32)[0] / base)
            print(f"  round {r + 1}/{rounds}: nginx {base:,.0f} req/s", file=sys.stderr)
        figures = {name: statistics.median(values) for name, values in ratios.items()}
        figures["nginx req/s"] = statistics.median(nginx_rps)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-us", default="30", help="comma-separated µs of Python work per request and answer")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"ceiling: needs {' and '.join(missing)} (apt-get install wrk nginx)")
    work = [float(w) for w in args.work_us.split(",") if w]
    figures = measure(work, args.rounds, args.seconds)
    print(f"nginx as the proxy: {figures.pop('nginx req/s'):,.0f} req/s (median of {args.rounds} rounds)")
    print("| setup | req/s / nginx |\n|---|---|")
    for name, ratio in figures.items():
        print(f"| {name} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
