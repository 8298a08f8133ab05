"""The shadow worker process as the proxy keeps it alive: `WorkerSupervisor` starts `shadow.worker.process`
(`WORKER_MAIN`) on one end of a socket pair (with this checkout on its PYTHONPATH, so it runs the same code), reads
its reports (`WorkerStream`), kills it when it stops reporting for `SILENT_AFTER` seconds, and restarts it after it
dies with a delay that doubles from RESTART_FIRST up to RESTART_MAX. What travels on the stream, and what happens to
the copies meant for a worker that died, is the bridge's business (`shadow.worker.bridge`): the supervisor tells it,
through `WorkerOwner`, when a worker connects, goes and comes back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from proxy.config.model import SHADOW_WORKER_NICE
from proxy.metrics import Metrics
from shadow.worker.wire import FrameReader, WireError, apply_metric_changes, read_settled

log = logging.getLogger("strangler.shadow.bridge")  # the records keep the name they had before the split

RESTART_FIRST = 0.5  # seconds before the first restart of a worker that died; doubles up to RESTART_MAX
RESTART_MAX = 30.0
HEALTHY = 60.0  # a worker that ran this long before dying restarts after RESTART_FIRST again
SOCKET_BUFFER = 4 * 1024 * 1024  # kernel buffer of the stream, so bursts rarely wait in user space
SILENT_AFTER = 30.0  # seconds without a report (the worker sends one every 0.25 s) before a worker counts as stuck
STARTUP_SILENCE = 60.0  # the same before its first word: starting (imports, opening the store) may be slow
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])  # the worker runs the same code as this process


# The worker's entry point, imported rather than run with `-m`: `-m` runs a module's source as __main__, never its
# compiled form (proxy.native), and the worker's modules are compiled with the rest of the request path. The command
# line still names shadow.worker.process, which is how tools and tests tell the worker from its proxy.
WORKER_MAIN = "import sys; from shadow.worker.process import main; sys.exit(main())"


class WorkerOwner(Protocol):
    """What the supervisor tells the side that writes to the worker (the bridge)."""

    @property
    def closing(self) -> bool:
        """Shutting down: a worker that exits now is not restarted, nor killed for being silent."""
        ...

    def worker_connected(self, transport: asyncio.Transport) -> None:
        """A worker is connected: frames may be written to `transport`."""

    def worker_disconnected(self) -> None:
        """The stream closed: nothing may be written until the next worker connects."""

    def worker_settled(self, seqs: tuple[int, ...]) -> None:
        """The worker wrote these starts' rows."""

    def worker_lost(self) -> None:
        """The worker died (or could not start); a new one follows unless closing."""

    def worker_restarting(self) -> None:
        """A new worker is about to start."""


class WorkerStream(asyncio.Protocol):
    """The proxy's end of the stream: reads the worker's metric reports."""

    def __init__(
        self, metrics: Metrics, ready: asyncio.Future[None], on_settled: Callable[[tuple[int, ...]], None]
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._on_settled = on_settled
        self._reader = FrameReader()
        self._loop = asyncio.get_running_loop()
        self.heard = self._loop.time()  # when the worker last sent anything (it reports every 0.25 s)
        self.spoke = False  # it has sent something: it is past its start-up (imports, opening the store)
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.heard = self._loop.time()
        self.spoke = True
        try:
            for message in self._reader.feed(data):
                if message[0] == "metrics":
                    apply_metric_changes(self._metrics, message)
                elif message[0] == "settled":
                    self._on_settled(read_settled(message))
                elif message[0] == "ready" and not self._ready.done():
                    self._ready.set_result(None)
        except (WireError, ValueError, TypeError, IndexError):  # never let a bad report disturb the proxy
            log.exception("shadow worker sent an unreadable report")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class WorkerSupervisor:
    """Runs one shadow worker process at a time for `owner`, on the running event loop. `supervise()` is the task
    that keeps it alive; `check_alive()` is called now and then (every traffic flush) to kill a stuck one."""

    def __init__(
        self,
        owner: WorkerOwner,
        db: Path,
        metrics: Metrics,
        *,
        max_backlog: int,
        silent_after: float = SILENT_AFTER,
        nice: int = SHADOW_WORKER_NICE,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._owner = owner
        self._db = db
        self._metrics = metrics
        self._max_backlog = max_backlog
        self._silent_after = silent_after
        self._nice = nice  # added to the worker's nice value (`limits.shadow_worker_nice`)
        self.proc: asyncio.subprocess.Process | None = None
        self._stream: WorkerStream | None = None
        # Set when the first worker has its store open (or has died trying): the bridge's `ready()` waits for it.
        self.first_ready: asyncio.Future[None] = self._loop.create_future()

    async def supervise(self) -> None:
        delay = RESTART_FIRST
        while True:
            began = self._loop.time()
            try:
                code = await self._run_worker()
            except OSError:
                log.exception("could not start the shadow worker")
                code = None
            if not self.first_ready.done():
                self.first_ready.set_result(None)  # it died before it was ready: do not hold up the proxy
            if self._owner.closing:
                return
            self._owner.worker_lost()
            if self._loop.time() - began > HEALTHY:
                delay = RESTART_FIRST
            log.error("shadow worker exited (code %s); copies are dropped until it restarts in %.1fs", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)
            self._owner.worker_restarting()  # (a close during the sleep cancels this task)

    async def _run_worker(self) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
            self.proc = proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WORKER_MAIN,
                "--fd",
                str(theirs.fileno()),
                "--db",
                str(self._db),
                "--nice",
                str(self._nice),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # signals to the terminal's group do not cut it short; it stops on "close"
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            stream = WorkerStream(self._metrics, self.first_ready, self._owner.worker_settled)
            # (uvloop's socket transports are not asyncio.Transport subclasses, but they have its methods.)
            transport, _ = await self._loop.connect_accepted_socket(lambda: stream, ours)
            transport.set_write_buffer_limits(high=self._max_backlog * 2)  # the bridge's backlog check comes first
            self._stream = stream
            self._owner.worker_connected(transport)
            try:
                await stream.closed
            finally:
                self._owner.worker_disconnected()
                self._stream = None
                transport.abort()
            return await proc.wait()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise

    def check_alive(self) -> None:
        """Kill a worker that stopped reporting (its loop is stuck: it would only ever drop copies from now on);
        `supervise` then starts a new one."""
        stream, proc = self._stream, self.proc
        if stream is None or proc is None or proc.returncode is not None or self._owner.closing:
            return
        silent = self._loop.time() - stream.heard
        if silent > (self._silent_after if stream.spoke else max(self._silent_after, STARTUP_SILENCE)):
            log.error("shadow worker (pid %d) silent for %.0fs; killing it so a new one takes over", proc.pid, silent)
            proc.kill()
