"""CPU instructions per request in the proxy process, this checkout against another commit, counted by valgrind
(callgrind); and a cProfile of the proxy process under shadow load.

Wall-clock rows (`make bench`) drift by tens of percent on a shared host; an instruction count does not, so a
change to the request path can be compared side by side even on a busy machine. Each proxy runs under callgrind;
its counters are zeroed after a warm-up, N requests are sent, and the count is divided by N. Two setups: pass-through
(a legacy route) and shadow 100% with the shadow worker (matching responses); only the proxy process is counted
(the worker is a child valgrind does not follow), so "shadow − pass-through" is what a shadowed request costs the
proxy process: the snapshots, the frames and the writes to the worker's stream, and reading its acknowledgements.

    .venv/bin/python -m benchmarks.instructions --base HEAD~1 --requests 2000
    .venv/bin/python -m benchmarks.instructions --setups shadow --profile   # cProfile of the proxy, top functions
    .venv/bin/python -m benchmarks.instructions --access-log   # this checkout, access log off vs on (JSON to a file)
    .venv/bin/python -m benchmarks.instructions --listeners    # this checkout: aiohttp listener against fast
    .venv/bin/python -m benchmarks.instructions --setups shadow --worker --keep DIR   # where the worker's time goes

Needs valgrind (apt-get install valgrind); about a minute per side and setup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import aiohttp

from benchmarks.harness import (
    ROOT,
    SERVE_SNIPPET,
    backend_cmd,
    build_like_this,
    export_tree,
    free_port,
    free_ports,
    routes_yaml,
    shadow_coverage,
    stop_group,
    wait_port,
)

# The same, with a profiler that the first SIGUSR2 starts and the second stops (writing its stats to argv[2]). Not
# SIGUSR1: `serve` takes that over for the access log's reopen.
_PROFILED = """import cProfile, signal, sys
from cli.main import run
profiler, out = cProfile.Profile(), sys.argv[2]
running = []
def _toggle(*_):
    if running:
        profiler.disable()
        profiler.dump_stats(out)
    else:
        running.append(1)
        profiler.enable()
signal.signal(signal.SIGUSR2, _toggle)
sys.argv = ['strangler', 'serve', '--config', sys.argv[1]]
run()
"""
_CLIENTS = 8
SETUPS = {"pass": ("legacy", "pass-through"), "shadow": ("shadow", "shadow 100% (worker)")}


@dataclass(frozen=True)
class Side:
    """One column of the comparison: a source tree and how its proxy is started."""

    label: str
    source: Path
    serve_args: tuple[str, ...] = ()
    access_log: bool = False
    worker: bool = False  # also count the shadow worker (valgrind follows the proxy's children)


async def _drive(port: int, requests: int, clients: int = _CLIENTS) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client(count: int) -> None:
            for _ in range(count):
                async with session.get(f"http://127.0.0.1:{port}/api/ping") as resp:
                    resp.raise_for_status()
                    await resp.read()

        await asyncio.gather(*(client(requests // clients) for _ in range(clients)))


@contextlib.contextmanager
def _running(cmd: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[int]:
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_port(port, timeout=600)
        yield proc.pid
    finally:
        stop_group(proc, 120)


def _instructions(
    side: Side, tmp: Path, backend: int, name: str, mode: str, requests: int, clients: int = _CLIENTS
) -> tuple[float, float | None]:
    """Instructions per request in the proxy process and (with `side.worker`, in a shadow setup) per copy the shadow
    worker compared; for a shadow setup also says how the copies ended (a count with copies dropped measures less
    work than a count with every copy handed over). Under valgrind the worker, which does more per copy than the
    proxy per request, falls behind and drops some copies even with one client: its count is divided by the copies
    it compared (the share of the whole run's, warm-up included), not by the requests."""
    source = side.source
    port, admin = free_ports(2)
    config = routes_yaml(tmp, port, admin, backend, backend, mode, name, access_log=side.access_log)
    out = tmp / f"callgrind.{name}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"]
    if side.worker:
        cmd.append("--trace-children=yes")  # the worker is `python -c WORKER_MAIN`, exec'd by the proxy
    cmd += [sys.executable, "-c", SERVE_SNIPPET, str(config), *side.serve_args]
    # Started in `source`: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH, so
    # started anywhere else (this checkout) the "base" side would import this checkout's code.
    with _running(cmd, port, env=dict(os.environ, PYTHONPATH=str(source)), cwd=source) as pid:
        asyncio.run(_drive(port, 400))  # warm-up: pools, caches, lazily imported code
        counted = [pid]
        if side.worker and mode == "shadow":
            children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
            counted += [int(c) for c in children[:1]]
        for each in counted:
            subprocess.run(["callgrind_control", "-z", str(each)], check=True, capture_output=True)
        asyncio.run(_drive(port, requests, clients))
        time.sleep(0.5 if len(counted) == 1 else 5.0)  # the worker's acknowledgements (it reports every 0.25 s)
        for each in counted:
            subprocess.run(["callgrind_control", "-d", str(each)], check=True, capture_output=True)
        compared = 1.0
        if mode == "shadow":
            cov = shadow_coverage(admin)
            print(f"  {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(cov.items())), file=sys.stderr)
            served = cov.get("served", 0.0)
            judged = sum(v for k, v in cov.items() if k in ("match", "mismatch", "candidate_error"))
            compared = judged / served if served and judged else 1.0
        time.sleep(1.0)
    per = [_dumped(tmp / f"callgrind.{name}.{each}.1") / requests for each in counted]  # the `-d` dumps only
    return per[0], per[1] / compared if len(per) > 1 else None


def _dumped(dump: Path) -> int:
    found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no callgrind counts in {dump}")
    return int(found.group(1))


def _profile(tmp: Path, backend: int, mode: str, requests: int, top: int) -> str:
    """cProfile of this checkout's proxy process over `requests` requests (after a warm-up): the top functions."""
    port, admin = free_ports(2)
    config = routes_yaml(tmp, port, admin, backend, backend, mode, f"profile-{mode}")
    out = tmp / f"profile-{mode}.pstats"
    cmd = [sys.executable, "-c", _PROFILED, str(config), str(out)]
    with _running(cmd, port, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT) as pid:
        asyncio.run(_drive(port, 2000))
        os.kill(pid, signal.SIGUSR2)  # start
        asyncio.run(_drive(port, requests))
        time.sleep(0.5)
        os.kill(pid, signal.SIGUSR2)  # stop and dump
        end = time.monotonic() + 30
        while not out.exists() and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)
    text = StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git ref to compare this checkout against (default HEAD)")
    ap.add_argument("--requests", type=int, default=2000, help="requests counted per side and setup")
    ap.add_argument(
        "--clients",
        type=int,
        default=_CLIENTS,
        help="concurrent client connections: with 1 every request is alone in its loop iteration and pays a whole "
        "write to the shadow worker; with more, a write is shared by however many requests the timing puts in one "
        "iteration (so shadow counts move by a few thousand between runs)",
    )
    ap.add_argument("--setups", default="pass,shadow", help=f"comma-separated, of: {', '.join(SETUPS)}")
    ap.add_argument("--profile", action="store_true", help="instead: cProfile this checkout's proxy (first setup)")
    ap.add_argument("--top", type=int, default=30, help="functions listed by --profile")
    ap.add_argument("--keep", type=Path, default=None, help="copy the callgrind files here (callgrind_annotate)")
    ap.add_argument("--access-log", action="store_true", help="instead of --base: this checkout, access log off vs on")
    ap.add_argument(
        "--listeners", action="store_true", help="instead of --base: this checkout, aiohttp vs fast listener"
    )
    ap.add_argument(
        "--worker",
        action="store_true",
        help="also count the shadow worker process (shadow setup; slower). Under valgrind the worker falls behind "
        "and drops or times out copies, which changes its work: its count moves by 20%% between runs of one "
        "checkout, so use it with --keep to see where its time goes, not as a figure",
    )
    args = ap.parse_args()
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown or not setups:
        ap.error(f"unknown setup(s) {', '.join(unknown) or '(none)'}; known: {', '.join(SETUPS)}")
    with tempfile.TemporaryDirectory(prefix="strangler-ir-") as t:
        tmp = Path(t)
        backend = free_port()
        with _running(backend_cmd(backend, 0), backend):
            if args.profile:
                mode, label = SETUPS[setups[0]]
                print(f"cProfile of the proxy process, {label}, {args.requests} requests:")
                print(_profile(tmp, backend, mode, args.requests, args.top))
                return 0
            worker = args.worker
            if args.access_log:
                first, second = Side("log off", ROOT, worker=worker), Side("log on", ROOT, access_log=True)
            elif args.listeners:
                first = Side("aiohttp", ROOT, ("--server", "aiohttp"), worker=worker)
                second = Side("fast", ROOT, ("--server", "fast"), worker=worker)
            else:
                base = Side(args.base, export_tree(args.base, tmp / "base"), worker=worker)
                build_like_this(base.source)
                first, second = base, Side("this checkout", ROOT, worker=worker)
            counts: dict[str, dict[str, float]] = {}
            workers: dict[str, dict[str, float]] = {}
            for setup in setups:
                mode = SETUPS[setup][0]
                for key, side in (("base", first), ("this", second)):
                    name = f"{'a' if key == 'base' else 'b'}-{setup}"
                    proxy, in_worker = _instructions(side, tmp, backend, name, mode, args.requests, args.clients)
                    counts.setdefault(setup, {})[key] = proxy
                    if in_worker is not None:
                        workers.setdefault(setup, {})[key] = in_worker
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in tmp.glob("callgrind.*"):
                shutil.copy(dump, args.keep / dump.name)
    print(
        f"instructions per request in the proxy process (callgrind, {args.requests} requests each, "
        f"{args.clients} client connection{'s' if args.clients > 1 else ''}):"
    )
    print(f"{'setup':<28} {first.label:>14} {second.label:>14} {'ratio':>7}")
    for setup, by in counts.items():
        print(f"{SETUPS[setup][1]:<28} {by['base']:>14,.0f} {by['this']:>14,.0f} {by['this'] / by['base']:>7.3f}")
    if "pass" in counts and "shadow" in counts:
        cost = {side: counts["shadow"][side] - counts["pass"][side] for side in ("base", "this")}
        ratio = cost["this"] / cost["base"] if cost["base"] else float("nan")
        print(f"{'shadow − pass-through':<28} {cost['base']:>14,.0f} {cost['this']:>14,.0f} {ratio:>7.3f}")
    for setup, by in workers.items():
        if len(by) == 2:
            label = f"{SETUPS[setup][1]}: worker, per compared copy"
            print(f"{label:<28} {by['base']:>14,.0f} {by['this']:>14,.0f} {by['this'] / by['base']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
