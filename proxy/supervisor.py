"""`strangler serve --workers N` (N > 1): one supervising process and N proxy worker processes on one port.

The supervisor binds no proxy port: each worker is a whole proxy (`proxy.app.serve` with a `WorkerRole`) that binds
the listen port with SO_REUSEPORT, so the kernel spreads connections over them, and serves its admin app on a
private unix socket in a directory only this user can read. The supervisor serves the one admin listener
(`proxy.supervisor_admin`: health, readiness of every worker, /metrics and /stats merged over the workers, writes
fanned out to all), restarts a worker that dies with a delay doubling from RESTART_FIRST to RESTART_MAX, forwards
SIGHUP and SIGUSR1 to every worker, and on SIGTERM/SIGINT stops them all (each drains and flushes its shadow side)
and exits 0, with an exit line summed over the workers' final registries. Linux only (SO_REUSEPORT spreads load).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from proxy import native
from proxy.aggregate import merge_registries
from proxy.app import chosen_server
from proxy.banner import exit_line, startup_lines
from proxy.config.model import Config, ConfigError, Server
from proxy.leftovers import pid_prefix, remove_dead
from proxy.reload import POLL_INTERVAL, Reloader, build_snapshot_parts
from proxy.state import RuntimeState, Snapshot
from proxy.supervisor_admin import AdminServer, WorkerSlot
from proxy.tasks import TaskOwner
from proxy.worker_role import WorkerRole

log = logging.getLogger("strangler.supervisor")

RESTART_FIRST: Final = 0.5  # seconds before restarting a worker that died; doubles up to RESTART_MAX
RESTART_MAX: Final = 30.0
HEALTHY: Final = 60.0  # a worker that ran this long before dying restarts after RESTART_FIRST again
START_TIMEOUT: Final = 60.0  # seconds every worker has to report ready at start (imports, the shadow side)
STOP_GRACE: Final = 30.0  # seconds past limits.drain_timeout a stopping worker gets (its shadow flush) before SIGKILL
FORWARDED: Final = (signal.SIGHUP, signal.SIGUSR1)
PR_SET_PDEATHSIG: Final = 1
_SOURCE_ROOT: Final = str(Path(__file__).resolve().parents[1])
_SOCKETS_PREFIX: Final = "strangler-workers-"  # in TMPDIR, with the supervisor's pid (proxy.leftovers)

WorkerCommand = Callable[[WorkerRole, int], Sequence[str]]  # a worker's place and the port every worker binds


@dataclass(frozen=True, slots=True)
class SupervisorPlan:
    """What `serve --workers N` asks for; `command` builds one worker's command line (the CLI knows it)."""

    config_path: Path
    workers: int
    command: WorkerCommand
    host: str | None = None
    port: int | None = None
    admin_port: int | None = None
    store: str | None = None
    shadow: str = "worker process"
    quiet: bool = False
    server: Server | None = None  # --server, passed on to every worker


def restart_delay(previous: float, ran_for: float) -> float:
    """The wait before restarting a worker that died after `ran_for` seconds, the last wait being `previous`."""
    if ran_for >= HEALTHY or previous <= 0:
        return RESTART_FIRST
    return min(previous * 2, RESTART_MAX)


def claim_port(host: str, port: int) -> socket.socket:
    """A socket bound (never listening) to the listen port with SO_REUSEPORT, held while the workers bind the same
    port: it picks the port when `port` is 0, and keeps another program from taking it in between. Raises OSError
    when the port is in use, also by another `serve --workers` (SO_REUSEPORT would let it share the port silently)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no obstacle
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _worker_environment() -> dict[str, str]:
    """This environment (the admin token included: workers check it on writes), with this checkout first on the
    path, so the workers run the same code as the supervisor."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": _SOURCE_ROOT + (os.pathsep + path if path else "")}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A worker gets SIGTERM when the supervisor dies, so no worker outlives it holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Starts, watches, restarts, signals and stops the workers of one `serve --workers N`."""

    def __init__(self, plan: SupervisorPlan, state: RuntimeState, directory: Path, port: int) -> None:
        self.plan = plan
        self.port = port
        self.state = state
        self.directory = directory
        self.slots = [WorkerSlot(i, WorkerRole.in_directory(directory, i)) for i in range(plan.workers)]
        self.stopping = False
        self._tasks = TaskOwner("supervisor")
        self._failed_start = asyncio.Event()

    def is_stopping(self) -> bool:
        return self.stopping

    async def spawn(self, slot: WorkerSlot) -> None:
        slot.ready = False
        with contextlib.suppress(FileNotFoundError):
            slot.role.exit_report.unlink()
        slot.process = await asyncio.create_subprocess_exec(
            *self.plan.command(slot.role, self.port),
            stdin=asyncio.subprocess.DEVNULL,
            env=_worker_environment(),
            preexec_fn=_die_with_parent,
        )
        slot.started = asyncio.get_running_loop().time()
        log.info("proxy worker %d started (pid %d)", slot.index, slot.process.pid)

    async def start(self) -> None:
        for slot in self.slots:
            await self.spawn(slot)
        for slot in self.slots:
            _ = self._tasks.start(self._watch(slot), name=f"worker-{slot.index}")

    async def _watch(self, slot: WorkerSlot) -> None:
        """Wait for the worker to end; unless stopping, restart it after the back-off delay."""
        loop = asyncio.get_running_loop()
        delay = 0.0
        while True:
            assert slot.process is not None
            code = await slot.process.wait()
            slot.ready = False
            if self.stopping:
                return
            if not slot.ever_ready:
                log.error("proxy worker %d exited with code %s before it was ready", slot.index, code)
                self._failed_start.set()
                return
            delay = restart_delay(delay, loop.time() - slot.started)
            slot.restarts += 1
            log.error("proxy worker %d (pid %d) died (code %s); restarting in %.1fs",
                      slot.index, slot.process.pid, code, delay)  # fmt: skip
            await asyncio.sleep(delay)
            if self.is_stopping():  # it may have begun during the sleep
                return
            await self.spawn(slot)

    async def wait_ready(self, admin: AdminServer, limit: float = START_TIMEOUT) -> bool:
        """True once every worker answers ready; False when one exits first or `limit` seconds pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline and not self._failed_start.is_set():
            if await admin.refresh_readiness():
                return True
            await asyncio.sleep(0.1)
        return False

    def forward(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(sig)

    async def stop(self) -> int:
        """SIGTERM every running worker and wait for each to drain and flush (SIGKILL past the grace); 0 when each
        exited 0, or was ended by that SIGTERM while still starting (nothing to drain yet). A worker that had died
        earlier and was waiting for its restart is not a failure to stop."""
        self.stopping = True
        grace = self.state.config.limits.drain_timeout + STOP_GRACE
        codes = [await self._stop_worker(slot, grace) for slot in self._running()]
        await self._tasks.close()  # no restart from here on
        codes += [await self._stop_worker(slot, grace) for slot in self._running()]  # one started meanwhile
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1

    def _running(self) -> list[WorkerSlot]:
        running = [slot for slot in self.slots if slot.pid is not None]
        self.forward(signal.SIGTERM)
        return running

    async def _stop_worker(self, slot: WorkerSlot, grace: float) -> int:
        process = slot.process
        assert process is not None
        try:
            return await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            log.error("proxy worker %d (pid %d) did not stop in %.0fs; killing it", slot.index, process.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return await process.wait()

    def exit_reports(self) -> list[dict[str, Any]]:
        reports: list[dict[str, Any]] = []
        for slot in self.slots:
            with contextlib.suppress(OSError, ValueError):
                reports.append(json.loads(slot.role.exit_report.read_text(encoding="utf-8")))
        return reports


def _banner(plan: SupervisorPlan, config: Config, port: int, admin_port: int) -> str:
    lines = startup_lines(
        config,
        host=plan.host or config.listen.host,
        port=port,
        admin_host=config.admin.host,
        admin_port=admin_port,
        store=plan.store or str(config.store.path),
        shadow=plan.shadow,
        listener=chosen_server(plan.server, config.listen.server),
        workers=plan.workers,
        code=native.status().describe(),
    )
    return "\n".join(lines) + "\n"


async def supervise_async(plan: SupervisorPlan) -> int:
    try:
        config, table = await asyncio.to_thread(build_snapshot_parts, plan.config_path)
    except ConfigError as exc:
        log.error("cannot start: invalid config\n%s", exc)
        return 1
    host = plan.host or config.listen.host
    port = config.listen.port if plan.port is None else plan.port
    try:
        reserved = claim_port(host, port)
    except OSError as exc:
        log.error("cannot start: cannot bind %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    port = int(reserved.getsockname()[1])
    try:  # mode 0700: only this user reaches the workers' sockets
        remove_dead(Path(tempfile.gettempdir()), _SOCKETS_PREFIX, "a workers' socket directory")
        directory = Path(tempfile.mkdtemp(prefix=pid_prefix(_SOCKETS_PREFIX)))
    except OSError as exc:
        reserved.close()
        log.error("cannot start: no private directory for the workers' sockets (set TMPDIR to a writable one): %s", exc)
        return 1
    state = RuntimeState(Snapshot(config, table, 1), db_path=plan.store)
    reloader = Reloader(state, plan.config_path)
    supervisor = Supervisor(plan, state, directory, port)
    admin = AdminServer(state, reloader, supervisor.slots)
    try:
        await supervisor.start()
        try:
            admin_port = await admin.start(
                config.admin.host, config.admin.port if plan.admin_port is None else plan.admin_port
            )
        except OSError as exc:
            log.error("cannot start: %s", exc)
            await supervisor.stop()
            return 1
        if not await supervisor.wait_ready(admin):
            log.error("cannot start: not every proxy worker got ready")
            await supervisor.stop()
            return 1
        if not plan.quiet:
            sys.stderr.write(_banner(plan, config, port, admin_port))
        return await _run(plan, supervisor, reloader, admin)
    finally:
        await admin.close()
        await state.close()
        reserved.close()
        shutil.rmtree(directory, ignore_errors=True)


async def _run(plan: SupervisorPlan, supervisor: Supervisor, reloader: Reloader, admin: AdminServer) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    tasks = TaskOwner("supervisor-signals")

    def hangup() -> None:
        supervisor.forward(signal.SIGHUP)
        with contextlib.suppress(RuntimeError):
            _ = tasks.start(reloader.reload("sighup"), name="reload")

    handlers: dict[signal.Signals, Callable[[], Any]] = {
        signal.SIGTERM: stopping.set,
        signal.SIGINT: stopping.set,
        signal.SIGHUP: hangup,
        signal.SIGUSR1: lambda: supervisor.forward(signal.SIGUSR1),
    }
    for sig, callback in handlers.items():
        loop.add_signal_handler(sig, callback)
    _ = tasks.start(reloader.watch(POLL_INTERVAL), name="config-watch")
    admin.serving = True
    try:
        await stopping.wait()
        log.info("shutting down: draining %d proxy workers", len(supervisor.slots))
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)
        await tasks.close()
        admin.draining = True
        code = await supervisor.stop()
    if not plan.quiet:
        merged = merge_registries(supervisor.exit_reports())
        sys.stderr.write(exit_line(merged, workers=plan.workers) + "\n")
    return code


def supervise(plan: SupervisorPlan) -> int:
    """Run `serve --workers N` until SIGTERM/SIGINT; the process exit code (uvloop when installed)."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    if not hasattr(socket, "SO_REUSEPORT") or not sys.platform.startswith("linux"):
        log.error("cannot start: --workers above 1 needs Linux (SO_REUSEPORT)")
        return 1
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(supervise_async(plan))
