"""CPU instructions per pass-through request, this checkout against another commit, counted by valgrind (callgrind).

Wall-clock rows (`make bench`) drift by tens of percent on a shared host; an instruction count does not, so a
change to the request path can be compared side by side even on a busy machine. Each proxy runs under callgrind;
its counters are zeroed after a warm-up, N requests are sent, and the count is divided by N.

    .venv/bin/python -m benchmarks.instructions --base HEAD~1 --requests 2000
    .venv/bin/python -m benchmarks.instructions --access-log   # this checkout, access log off vs on (JSON to a file)
    .venv/bin/python -m benchmarks.instructions --listeners   # this checkout: aiohttp listener against fast

Needs valgrind (apt-get install valgrind); about a minute per side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import aiohttp

from benchmarks.run import ROOT, backend_cmd, free_port, routes_yaml, wait_port

_SERVE = "import sys; from cli.main import run; sys.argv = ['strangler', 'serve', '--config', *sys.argv[1:]]; run()"
_CLIENTS = 8


async def _drive(port: int, requests: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=_CLIENTS)) as session:

        async def client(count: int) -> None:
            for _ in range(count):
                async with session.get(f"http://127.0.0.1:{port}/api/ping") as resp:
                    resp.raise_for_status()
                    await resp.read()

        await asyncio.gather(*(client(requests // _CLIENTS) for _ in range(_CLIENTS)))


@contextlib.contextmanager
def _running(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, timeout=600)
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def _instructions(
    source: Path, tmp: Path, backend: int, name: str, requests: int, *serve_args: str, access_log: bool = False
) -> float:
    port, admin = free_port(), free_port()
    config = routes_yaml(tmp, port, admin, backend, backend, "legacy", name, access_log=access_log)
    out = tmp / f"callgrind.{name}"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        _SERVE,
        str(config),
        *serve_args,
    ]
    with _running(cmd, port, env=dict(os.environ, PYTHONPATH=str(source))) as pid:
        asyncio.run(_drive(port, 400))  # warm-up: pools, caches, lazily imported code
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        asyncio.run(_drive(port, requests))
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        time.sleep(1.0)
    dump = tmp / f"callgrind.{name}.1"  # the `-d` dump: the counted requests only (exit writes a second file)
    found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no callgrind counts in {dump}")
    return int(found.group(1)) / requests


def _export(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git ref to compare this checkout against (default HEAD)")
    ap.add_argument("--requests", type=int, default=2000, help="requests counted per side")
    ap.add_argument("--access-log", action="store_true", help="compare this checkout with the access log off and on")
    ap.add_argument(
        "--listeners", action="store_true", help="compare this checkout's two listeners (--server aiohttp, fast)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="strangler-ir-") as t:
        tmp = Path(t)
        backend = free_port()
        with _running(backend_cmd(backend, 0), backend):
            if args.access_log:
                first, second = "access log off", "access log on"
                counts = {
                    first: _instructions(ROOT, tmp, backend, "off", args.requests),
                    second: _instructions(ROOT, tmp, backend, "on", args.requests, access_log=True),
                }
            elif args.listeners:
                first, second = "aiohttp listener", "fast listener"
                counts = {
                    first: _instructions(ROOT, tmp, backend, "aiohttp", args.requests, "--server", "aiohttp"),
                    second: _instructions(ROOT, tmp, backend, "fast", args.requests, "--server", "fast"),
                }
            else:
                first, second = args.base, "this checkout"
                base = _export(args.base, tmp / "base")
                counts = {
                    first: _instructions(base, tmp, backend, "base", args.requests),
                    second: _instructions(ROOT, tmp, backend, "this", args.requests),
                }
    for name, count in counts.items():
        print(f"{name:>16}: {count:>10,.0f} instructions per pass-through request")
    print(f"{'ratio':>16}: {counts[second] / counts[first]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
