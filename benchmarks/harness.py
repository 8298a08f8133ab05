"""The processes and config files `make bench` and the other benchmarks start: free ports, a process that is stopped
with its whole group, nginx and strangler configs, a running strangler's shadow coverage from its /stats, and the
CPU time of a process from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

from proxy import native

ROOT = Path(__file__).resolve().parent.parent
BODY = '{"id":1,"name":"widget","price":9.99,"tags":["a","b"],"ok":true,"n":12345}'


def free_ports(count: int) -> tuple[int, ...]:
    """`count` distinct loopback ports free right now. All of them stay bound until the last is chosen: asked one at
    a time, the kernel can hand the port it just released out again, and two servers (a listener and its admin) were
    once given the same one."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
    return tuple(ports)


def free_port() -> int:
    """One loopback port free right now; for two or more that must differ, use `free_ports`."""
    return free_ports(1)[0]


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a child started in its own session (its whole process group); SIGKILL it after `timeout` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def process(
    cmd: list[str], port: int, *, env: dict[str, str] | None = None, log: Path | None = None, cwd: Path | None = None
) -> Iterator[None]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        wait_port(port)
        yield
    finally:
        stop_group(proc, 15)
        if log:
            out.close()  # type: ignore[union-attr]


def nginx_conf(tmp: Path, name: str, server: str, workers: int = 1) -> Path:
    d = tmp / name
    (d / "logs").mkdir(parents=True)
    conf = d / "nginx.conf"
    conf.write_text(
        f"""worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  {server}
}}
"""
    )
    return conf


def nginx_backend(tmp: Path, *ports: int) -> contextlib.AbstractContextManager[None]:
    """nginx (one worker) as the fast back end on `ports`, answering every path with the JSON `BODY`."""
    listens = " ".join(f"listen 127.0.0.1:{port};" for port in ports)
    server = f"server {{ {listens} location / {{ default_type application/json; return 200 '{BODY}'; }} }}"
    return process(nginx_cmd(nginx_conf(tmp, "backend", server)), ports[0])


def nginx_proxy(tmp: Path, port: int, backend: int, workers: int = 1) -> contextlib.AbstractContextManager[None]:
    """nginx as the reference reverse proxy on `port` in front of `backend`, with upstream keep-alive."""
    server = (
        f"upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }} server {{ listen 127.0.0.1:{port}; "
        'location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }'
    )
    return process(nginx_cmd(nginx_conf(tmp, f"proxy{workers}", server, workers=workers)), port)


def nginx_cmd(conf: Path) -> list[str]:
    return ["nginx", "-p", str(conf.parent), "-e", str(conf.parent / "logs" / "error.log"), "-c", str(conf)]


def backend_cmd(port: int, delay_ms: float) -> list[str]:
    return [sys.executable, "-m", "benchmarks.backend", "--port", str(port), "--delay-ms", str(delay_ms)]


def routes_yaml(
    tmp: Path, port: int, admin: int, legacy: int, new: int, mode: str, name: str, *, access_log: bool = False
) -> Path:
    extra = "\n    shadow: {sample: 1.0, timeout: 5s}" if mode == "shadow" else ""
    if access_log:
        extra += f"\naccess_log: {{path: {tmp / (name + '.access.log')}, format: json}}"
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""version: 1
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
store: {{path: {tmp / (name + ".db")}}}
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}"}}
routes:
  - id: bench
    match: {{path: "/**"}}
    mode: {mode}{extra}
"""
    )
    return path


def strangler_cmd(config: Path, *extra: str) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "strangler"), "serve", "--config", str(config), *extra]


def shadow_coverage(admin_port: int) -> dict[str, float]:
    """From a running strangler's /stats: requests served, and mirrored exchanges by outcome[/reason] (all pairs).

    A shadow row's req/s means little without this: a shadow side that cannot keep up drops copies (counted)
    instead of slowing the client, so the row also says what share of the requests really was compared."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats", timeout=10) as r:
        stats = json.load(r)
    out: dict[str, float] = {"served": float(stats["unrouted"]["requests"])}
    for route in stats["routes"]:
        out["served"] += route["requests"]["total"]
        for pair in route["shadow"].values():
            reasoned = {outcome: sum(by.values()) for outcome, by in pair["reasons"].items()}
            keys = [(outcome, n - reasoned.get(outcome, 0)) for outcome, n in pair["outcomes"].items()]
            keys += [(f"{outcome}/{reason}", n) for outcome, by in pair["reasons"].items() for reason, n in by.items()]
            for key, n in keys:
                if n:
                    out[key] = out.get(key, 0.0) + n
    return out


def coverage_shares(cov: dict[str, float]) -> str:
    """`shadow_coverage`'s outcomes as shares of the requests served: "dropped/queue_full 2.1%, match 97.9%"."""
    served = cov.get("served", 0.0)
    return ", ".join(f"{k} {v / served:.1%}" for k, v in sorted(cov.items()) if k != "served" and served)


# `strangler serve --config ARGV[1] [ARGV[2:]]` from whatever source tree is first on sys.path: started in that tree
# (cwd) with PYTHONPATH set to it, a commit exported by `export_tree` runs its own code, not this checkout's (`python
# -c` puts the working directory first on sys.path, ahead of PYTHONPATH).
SERVE_SNIPPET = (
    "import sys; from cli.main import run; sys.argv = ['strangler', 'serve', '--config', *sys.argv[1:]]; run()"
)


def serve_from(source: Path, config: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run `strangler serve` from the source tree `source`."""
    return [sys.executable, "-c", SERVE_SNIPPET, str(config), *extra], dict(os.environ, PYTHONPATH=str(source))


def export_tree(ref: str, into: Path) -> Path:
    """The source tree of a git ref of this repository, written to `into` (`git archive`)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def build_like_this(tree: Path) -> None:
    """Compile the base's request path when this checkout runs compiled (proxy.native), so that like is measured
    against like: a base with no native build of its own (older than it) runs as Python, and says so."""
    if not native.status().active:
        print(f"this checkout runs as Python ({native.status().reason}): so does the base")
        return
    if not (tree / "proxy" / "native_build.py").is_file():
        print("the base has no native build (older than proxy/native.py): it runs as Python, this checkout compiled")
        return
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-m", "proxy.native_build", "--strict"], cwd=tree, env=env, capture_output=True, text=True
    )
    last = (done.stdout.strip().splitlines() or [""])[-1]
    print(f"base: {last}" if done.returncode == 0 else f"base: native build failed, it runs as Python: {done.stderr}")


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times(pid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of a process (all its threads: utime, stime); zeros when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 when it is gone."""
    return sum(cpu_times(pid))


def children(pid: int) -> list[int]:
    """The child processes of `pid` (a strangler's shadow worker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def listening_pids(port: int) -> list[int]:
    """Every process holding the listening socket of `port` (nginx's master and its worker)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})
    if not pids:
        raise RuntimeError(f"no process found listening on port {port} (ss)")
    return pids
