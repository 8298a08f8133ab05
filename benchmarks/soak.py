"""`make soak`: strangler under load for a bounded time while everything around it misbehaves, then one table.

    SOAK_SECONDS=60 python -m benchmarks.soak      # default 600 s

What runs: `strangler serve` (with its shadow worker) as a subprocess, a legacy and a new back end as processes
(`benchmarks.backend`), legacy behind a fault relay (tests/faults/tcp.py), and a client sending GETs to one route
per mode (legacy, shadow, canary, new + verify), 16 at a time. Meanwhile:
- the candidate (the new back end) is killed with SIGKILL and restarted 2 s later, every 20 s;
- legacy flaps: its relay resets every connection for 1 s, every 15 s;
- routes.yaml is rewritten (the canary weight changes) every 3 s;
- the shadow worker is killed with SIGKILL once, at 30 % of the run;
- the store refuses every write for 5 s once, at 50 % of the run (a trigger on the real file, tests/faults/store.py).

The table checks: primary errors not caused by legacy (a 5xx when legacy was not flapping: must be 0), mirrored =
outcomes counted = stored rows + rows counted lost (must be equal), the RSS and open descriptors of the proxy and
its worker over time (flat), and failed requests within 1 s after a reload (must be 0). Exit code 1 when a check
fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.harness import free_ports
from tests.faults.store import allow_writes, refuse_writes
from tests.faults.tcp import PASS, Fault, FaultProxy

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
KILL_CANDIDATE_EVERY = 20.0
CANDIDATE_DOWN = 2.0
FLAP_EVERY = 15.0
FLAP_FOR = 1.0
REWRITE_EVERY = 3.0
STORE_FULL_FOR = 5.0
SAMPLES = 10  # RSS / descriptor samples over the run
PATHS = ("/legacy/", "/shadow/", "/canary/", "/new/")


def routes_yaml(port: int, admin: int, legacy: int, new: int, db: Path, weight: int) -> str:
    return f"""\
version: 1
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
store: {{path: {db}}}
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}", breaker_cooldown: 1s}}
defaults:
  timeouts: {{connect: 500ms, read: 5s}}
  shadow: {{timeout: 2s}}
routes:
  - {{id: legacy, match: {{path: "/legacy/**"}}, mode: legacy}}
  - {{id: shadow, match: {{path: "/shadow/**"}}, mode: shadow}}
  - {{id: canary, match: {{path: "/canary/**"}}, mode: canary, canary: {{weight: {weight}}}, fallback: legacy}}
  - {{id: new, match: {{path: "/new/**"}}, mode: new, verify: {{}}, fallback: legacy}}
"""


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        if found:
            return int(found.group(1)) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def worker_pid(proxy_pid: int) -> int | None:
    """The shadow worker: the proxy's child running shadow.worker.process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == proxy_pid and b"shadow.worker.process" in Path(f"/proc/{entry}/cmdline").read_bytes():
                return int(entry)
    return None


def start_backend(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # started and left running: nothing blocks on it
        [sys.executable, "-m", "benchmarks.backend", "--port", str(port)], cwd=ROOT, stdin=subprocess.DEVNULL
    )


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    errors_legacy: int = 0  # 5xx / failures while legacy was flapping (or just after)
    errors_other: list[str] = field(default_factory=list)
    failed_after_reload: int = 0


@dataclass
class Scene:
    """What is broken right now, and when things happened (loop time)."""

    start: float = 0.0
    flapping_until: float = 0.0
    reloads: list[float] = field(default_factory=list)


async def wait_port(port: int, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {limit:.0f}s")


async def client(session: aiohttp.ClientSession, base: str, until: float, scene: Scene, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    n = 0
    while loop.time() < until:
        n += 1
        path = PATHS[n % len(PATHS)] + str(n)
        tally.sent += 1
        sent_at = loop.time()
        try:
            async with session.get(base + path) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, why = 0, type(exc).__name__
        else:
            why = f"{status} {body[:80]!r}"
        if 200 <= status < 500:
            tally.ok += 1
            continue
        done = loop.time()
        if sent_at <= scene.flapping_until + 0.5 and done >= scene.flapping_until - FLAP_FOR - 0.5:
            tally.errors_legacy += 1
            continue
        tally.errors_other.append(f"{path} at {sent_at - scene.start:.1f}s: {why}")
        if any(r <= sent_at <= r + 1.0 for r in scene.reloads):
            tally.failed_after_reload += 1


def metric_values(text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name) :]] = out.get(labels[len(name) :], 0.0) + float(value)
    return out


async def soak(seconds: float) -> int:
    work = Path(tempfile.mkdtemp(prefix="strangler-soak-"))
    db = work / "soak.db"
    config = work / "routes.yaml"
    port, admin, legacy_port, new_port = free_ports(4)
    legacy = start_backend(legacy_port)
    new = start_backend(new_port)
    relay = await FaultProxy.start(legacy_port)
    write_atomically(config, routes_yaml(port, admin, relay.port, new_port, db, 50))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    serve_cmd = [sys.executable, "-c", "from cli.main import run; run()", "serve", "--config", str(config)]
    proxy = subprocess.Popen(serve_cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)  # noqa: ASYNC220 (a child we own)
    loop = asyncio.get_running_loop()
    scene, tally = Scene(), Tally()
    samples: list[tuple[float, float, int, float, int]] = []
    try:
        await wait_port(legacy_port)
        await wait_port(new_port)
        await wait_port(port)
        start = scene.start = loop.time()
        until = start + seconds

        async def chaos() -> None:
            weight, next_rewrite = 50, start + REWRITE_EVERY
            next_kill, next_flap = start + KILL_CANDIDATE_EVERY / 2, start + FLAP_EVERY
            worker_killed = store_filled = False
            nonlocal new
            while (now := loop.time()) < until:
                if now >= next_rewrite:
                    weight = 80 if weight == 50 else 50
                    write_atomically(config, routes_yaml(port, admin, relay.port, new_port, db, weight))
                    scene.reloads.append(now)
                    next_rewrite += REWRITE_EVERY
                if now >= next_kill:
                    new.kill()
                    new.wait()
                    await asyncio.sleep(CANDIDATE_DOWN)
                    new = start_backend(new_port)
                    next_kill += KILL_CANDIDATE_EVERY
                if now >= next_flap:
                    scene.flapping_until = loop.time() + FLAP_FOR  # (`now` may be old: a kill above slept)
                    relay.flap(Fault("reset"))
                    await asyncio.sleep(FLAP_FOR)
                    relay.fault = PASS
                    next_flap += FLAP_EVERY
                if not worker_killed and now - start >= 0.3 * seconds:
                    wpid = worker_pid(proxy.pid)
                    if wpid:
                        os.kill(wpid, signal.SIGKILL)
                        worker_killed = True
                if not store_filled and now - start >= 0.5 * seconds:
                    store_filled = True
                    await asyncio.to_thread(refuse_writes, db)
                    await asyncio.sleep(STORE_FULL_FOR)
                    await asyncio.to_thread(allow_writes, db)
                await asyncio.sleep(0.05)

        async def sample() -> None:
            for i in range(SAMPLES + 1):
                await asyncio.sleep(max(0.0, start + i * seconds / SAMPLES - loop.time()))
                wpid = worker_pid(proxy.pid)
                samples.append((loop.time() - start, rss_mib(proxy.pid), open_fds(proxy.pid),
                                rss_mib(wpid) if wpid else float("nan"), open_fds(wpid) if wpid else -1))  # fmt: skip

        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            base = f"http://127.0.0.1:{port}"
            await asyncio.gather(
                chaos(), sample(), *(client(session, base, until, scene, tally) for _ in range(CONCURRENCY))
            )
            await asyncio.sleep(2.0)  # the last rows reach the store and the last reports the proxy
            async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                metrics_text = await resp.text()
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proxy.kill()
        for backend in (legacy, new):
            backend.kill()
            backend.wait()
        await relay.close()
    mirrored = sum(metric_values(metrics_text, "strangler_shadow_mirrored_total").values())
    outcomes = metric_values(metrics_text, "strangler_shadow_total")
    counted = sum(outcomes.values())
    lost = sum(metric_values(metrics_text, "strangler_store_rows_lost_total").values())
    write_errors = sum(metric_values(metrics_text, "strangler_store_write_errors_total").values())
    restarts = sum(metric_values(metrics_text, "strangler_shadow_worker_restarts_total").values())
    reloads = metric_values(metrics_text, "strangler_reloads_total")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = int(conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0])
    drops: dict[str, float] = {}
    for labels, value in outcomes.items():
        if 'outcome="dropped"' in labels:
            reason = re.search(r'reason="([^"]*)"', labels)
            key = reason.group(1) if reason else "?"
            drops[key] = drops.get(key, 0) + value
    return print_table(seconds, tally, mirrored, counted, stored, lost, drops, write_errors, restarts, reloads, samples)


def print_table(
    seconds: float,
    tally: Tally,
    mirrored: float,
    counted: float,
    stored: int,
    lost: float,
    drops: dict[str, float],
    write_errors: float,
    restarts: float,
    reloads: dict[str, float],
    samples: list[tuple[float, float, int, float, int]],
) -> int:
    checks = [
        ("primary errors not caused by legacy", str(len(tally.errors_other)), not tally.errors_other),
        ("failed requests within 1 s after a reload", str(tally.failed_after_reload), tally.failed_after_reload == 0),
        ("mirrored = outcomes counted", f"{mirrored:.0f} = {counted:.0f}", mirrored == counted),
        ("mirrored = stored rows + rows counted lost", f"{mirrored:.0f} = {stored} + {lost:.0f}",
         mirrored == stored + lost),
    ]  # fmt: skip
    out = [f"soak: {seconds:.0f} s, {tally.sent} requests ({tally.sent / seconds:.0f}/s), {tally.ok} answered < 500"]
    out.append("")
    out.append("| check | value | ok |")
    out.append("|---|---|---|")
    out.extend(f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in checks)
    out.append("")
    reason_text = ", ".join(f"{k} {v:.0f}" for k, v in sorted(drops.items())) or "none"
    ok_reloads = reloads.get('{result="ok"}', 0)
    out.append(f"5xx while legacy flapped (excused): {tally.errors_legacy}; counted drops by reason: {reason_text}")
    out.append(f"store write errors (retried): {write_errors:.0f}; worker restarts: {restarts:.0f}; "
               f"reloads ok: {ok_reloads:.0f}")  # fmt: skip
    out.append("")
    out.append("| t (s) | proxy RSS MiB | proxy fds | worker RSS MiB | worker fds |")
    out.append("|---|---|---|---|---|")
    out.extend(f"| {t:.0f} | {r:.1f} | {f} | {wr:.1f} | {wf} |" for t, r, f, wr, wf in samples)
    for line in tally.errors_other[:10]:
        out.append(f"  error: {line}")
    print("\n".join(out))
    return 0 if all(ok for _, _, ok in checks) else 1


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(soak(seconds))


if __name__ == "__main__":
    sys.exit(main())
