"""Mismatching pairs at a sustained fixed rate: does the shadow side judge and store every one, or drop some?

Drives `--rate` requests/s (default 1,000) open-loop, for `--seconds` (default 120), through a real `strangler serve`
with the shadow worker on a route where every pair mismatches (new renames one field of a ~1.4 KB JSON order), plus
`--match-rate` requests/s on a route where every pair matches. Afterwards it waits for the shadow side to settle,
reads the proxy's /metrics (mirrored, outcomes, drops by reason, store rows lost) and, once the proxy has stopped,
the store (rows by route and outcome). Issue 13's target: 0 mismatching pairs dropped at 1,000/s for 2 minutes.

    .venv/bin/python -m benchmarks.mismatch_sustain --seconds 120 --rate 1000

Back ends are nginx (`return 200` of fixed documents) when installed, else aiohttp processes. The load generator
(`benchmarks.protocol_load`) is a bare asyncio protocol on keep-alive connections (a request is sent at its scheduled
time on an idle connection, a new one opened when none is idle), so the generator itself costs little CPU; latency is
measured from the scheduled time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.compare_micro import order_document
from benchmarks.harness import free_ports, nginx_cmd, nginx_conf, process, strangler_cmd
from benchmarks.protocol_load import Load, drive

MISMATCH_ROUTE = "mismatching"
MATCH_ROUTE = "matching"
SETTLE_TIMEOUT = 120.0  # seconds the shadow side may take to finish after the load stops


def documents() -> tuple[bytes, bytes]:
    """Legacy's order (compact JSON, ~1.4 KB) and new's: the same with customer.email renamed email_address."""
    legacy = order_document()
    new = json.loads(json.dumps(legacy))
    new["customer"]["email_address"] = new["customer"].pop("email")
    return json.dumps(legacy, separators=(",", ":")).encode(), json.dumps(new, separators=(",", ":")).encode()


def _config(tmp: Path, port: int, admin: int, legacy: int, new: int) -> Path:
    path = tmp / "sustain.yaml"
    path.write_text(
        f"""version: 1
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
store: {{path: {tmp / "sustain.db"}}}
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
routes:
  - id: {MISMATCH_ROUTE}
    match: {{path: "/api/mismatch/**"}}
    mode: shadow
    shadow: {{sample: 1.0, timeout: 5s}}
  - id: {MATCH_ROUTE}
    match: {{path: "/api/match/**"}}
    mode: shadow
    shadow: {{sample: 1.0, timeout: 5s}}
"""
    )
    return path


@contextlib.contextmanager
def backends(tmp: Path, legacy_port: int, new_port: int) -> Iterator[None]:
    """Legacy answers the order on every path; new the same on /api/match/ and the renamed one elsewhere."""
    legacy_doc, new_doc = documents()
    with contextlib.ExitStack() as stack:
        if shutil.which("nginx"):

            def ret(doc: bytes) -> str:
                return f"default_type application/json; return 200 '{doc.decode()}';"

            server = (
                f"server {{ listen 127.0.0.1:{legacy_port}; location / {{ {ret(legacy_doc)} }} }} "
                f"server {{ listen 127.0.0.1:{new_port}; location /api/match/ {{ {ret(legacy_doc)} }} "
                f"location / {{ {ret(new_doc)} }} }}"
            )
            conf = nginx_conf(tmp, "backends", server)
            stack.enter_context(process(nginx_cmd(conf), legacy_port))  # one nginx, both ports
        else:
            for port, mismatch_doc in ((legacy_port, legacy_doc), (new_port, new_doc)):
                cmd = [sys.executable, "-m", "benchmarks.mismatch_sustain", "--serve-backend", str(port)]
                cmd += ["--backend-doc", mismatch_doc.decode()]
                stack.enter_context(process(cmd, port))
        yield


def serve_backend(port: int, mismatch_doc: bytes) -> None:
    """The aiohttp stand-in when nginx is not installed: the order on /api/match/, `mismatch_doc` elsewhere."""
    from aiohttp import web

    legacy_doc, _ = documents()

    async def handle(request: web.Request) -> web.Response:
        doc = legacy_doc if request.path.startswith("/api/match/") else mismatch_doc
        return web.Response(body=doc, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- reading the outcome ---------------------------------------------------------------------------------------


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} ([\d.e+-]+)$")


def read_metrics(admin: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The proxy's /metrics as {name: {labels: value}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = tuple((k, v) for k, v in re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.setdefault(m.group(1), {})[labels] = float(m.group(3))
    return out


@dataclass
class RouteFigures:
    mirrored: float = 0
    outcomes: dict[str, float] = field(default_factory=dict)  # outcome or outcome/reason -> count

    @property
    def accounted(self) -> float:
        return sum(self.outcomes.values())

    @property
    def dropped(self) -> dict[str, float]:
        return {k.split("/", 1)[1]: v for k, v in self.outcomes.items() if k.startswith("dropped/")}


def route_figures(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], route: str) -> RouteFigures:
    figures = RouteFigures()
    for labels, value in metrics.get("strangler_shadow_mirrored_total", {}).items():
        if dict(labels).get("route") == route:
            figures.mirrored += value
    for labels, value in metrics.get("strangler_shadow_total", {}).items():
        d = dict(labels)
        if d.get("route") == route and value:
            key = d["outcome"] + (f"/{d['reason']}" if d.get("reason") else "")
            figures.outcomes[key] = figures.outcomes.get(key, 0) + value
    return figures


def wait_settled(admin: int, timeout: float) -> tuple[dict[str, RouteFigures], float]:
    """Poll /metrics until every mirrored request of both routes has an outcome (or `timeout`); the figures and
    the seconds it took."""
    began = time.monotonic()
    while True:
        metrics = read_metrics(admin)
        figures = {route: route_figures(metrics, route) for route in (MISMATCH_ROUTE, MATCH_ROUTE)}
        done = all(f.accounted >= f.mirrored for f in figures.values())
        if done or time.monotonic() - began > timeout:
            return figures, time.monotonic() - began
        time.sleep(0.5)


def store_rows(db: Path) -> dict[str, dict[str, int]]:
    """Rows in the store by route and outcome[/reason]."""
    out: dict[str, dict[str, int]] = {}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        sql = "SELECT route_id, outcome, coalesce(reason, ''), count(*) FROM exchanges GROUP BY 1, 2, 3"
        for route, outcome, reason, count in conn.execute(sql):
            key = outcome + (f"/{reason}" if reason else "")
            out.setdefault(route, {})[key] = count
    return out


def cpu_seconds(marker: str) -> dict[str, float]:
    """CPU seconds (user + system) so far of the strangler processes whose command line names `marker` (this run's
    temporary directory): the proxy ("serve") and its shadow worker."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if marker not in cmdline:
            continue
        role = "worker" if "shadow.worker.process" in cmdline else "proxy" if " serve " in cmdline else None
        if role is not None:
            out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


@dataclass
class RouteSummary:
    """One route's copies during the measured load (the warm-up subtracted)."""

    mirrored: float
    outcomes: dict[str, float]  # outcome or outcome/reason -> count
    dropped: dict[str, float]  # reason -> count
    unaccounted: float  # mirrored without an outcome when the figures were read (0 once settled)


@dataclass
class Result:
    seconds: float
    rate: float
    match_rate: float
    load: str
    settle_seconds: float
    mismatching: RouteSummary
    matching: RouteSummary
    rows_lost: float
    stored: dict[str, dict[str, int]]
    cpu: dict[str, float]  # CPU seconds of the proxy and the worker during the load and until settled

    @property
    def mismatch_dropped(self) -> float:
        return sum(self.mismatching.dropped.values())


def run(seconds: float, rate: float, match_rate: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="strangler-sustain-") as t:
        tmp = Path(t)
        legacy, new, port, admin = free_ports(4)
        config = _config(tmp, port, admin, legacy, new)
        load = Load()
        with backends(tmp, legacy, new):
            with process(strangler_cmd(config, "--quiet"), port, log=tmp / "serve.log"):
                asyncio.run(drive(port, 20, 20, 1.0, Load()))  # warm-up: pools, the worker's first pairs
                wait_settled(admin, SETTLE_TIMEOUT)
                before = read_metrics(admin)
                cpu_before = cpu_seconds(str(tmp))
                asyncio.run(drive(port, rate, match_rate, seconds, load))
                figures, settle = wait_settled(admin, SETTLE_TIMEOUT)
                cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_seconds(str(tmp)).items()}
                metrics = read_metrics(admin)
            rows = store_rows(tmp / "sustain.db")  # after serve stopped: every row flushed
        warm = {route: route_figures(before, route) for route in (MISMATCH_ROUTE, MATCH_ROUTE)}
        lost = sum(metrics.get("strangler_store_rows_lost_total", {}).values())

        def summary(route: str) -> RouteSummary:
            f, w = figures[route], warm[route]
            outcomes = {k: v - w.outcomes.get(k, 0) for k, v in f.outcomes.items()}
            dropped = {k: v - w.dropped.get(k, 0) for k, v in f.dropped.items()}
            return RouteSummary(
                f.mirrored - w.mirrored,
                {k: v for k, v in outcomes.items() if v},
                {k: v for k, v in dropped.items() if v},
                f.mirrored - f.accounted,
            )

        return Result(
            seconds,
            rate,
            match_rate,
            load.summary(),
            settle,
            summary(MISMATCH_ROUTE),
            summary(MATCH_ROUTE),
            lost,
            rows,
            cpu,
        )


def report(r: Result) -> None:
    print(
        f"mismatch sustain: {r.rate:.0f} mismatching + {r.match_rate:.0f} matching req/s for {r.seconds:.0f} s "
        f"through strangler serve (shadow worker)"
    )
    print(f"  load: {r.load}")
    for name, figures in (("mismatching route", r.mismatching), ("matching route", r.matching)):
        drops = ", ".join(f"{k} {v:.0f}" for k, v in sorted(figures.dropped.items())) or "none"
        outcomes = ", ".join(f"{k} {v:.0f}" for k, v in sorted(figures.outcomes.items()))
        late = f"; {figures.unaccounted:.0f} without an outcome yet" if figures.unaccounted else ""
        print(f"  {name}: mirrored {figures.mirrored:.0f}: {outcomes}; dropped: {drops}{late}")
    print(f"  settled {r.settle_seconds:.1f} s after the load stopped; store rows lost: {r.rows_lost:.0f}")
    copies = r.mismatching.mirrored + r.matching.mirrored
    if copies:
        cpu = sorted(r.cpu.items())
        per = ", ".join(f"{role} {1e6 * secs / copies:.0f} µs" for role, secs in cpu)
        load_share = ", ".join(f"{role} {100 * secs / r.seconds:.0f}% of a core" for role, secs in cpu)
        print(f"  CPU per request (each one mirrored): {per} ({load_share})")
    stored = ", ".join(f"{k} {v}" for k, v in sorted(r.stored.get(MISMATCH_ROUTE, {}).items()))
    print(f"  store rows of the mismatching route (warm-up included): {stored}")
    mirrored = r.mismatching.mirrored
    share = 100 * r.mismatch_dropped / mirrored if mirrored else 0.0
    print(f"  mismatching pairs dropped: {r.mismatch_dropped:.0f} of {mirrored:.0f} ({share:.2f}%; target 0)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="how long the load is sustained")
    ap.add_argument("--rate", type=float, default=1000.0, help="mismatching requests per second")
    ap.add_argument("--match-rate", type=float, default=250.0, help="matching requests per second besides")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--serve-backend", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backend-doc", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_backend is not None:
        serve_backend(args.serve_backend, args.backend_doc.encode())
        return 0
    result = run(args.seconds, args.rate, args.match_rate)
    report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
