"""Start, run and stop the proxy: the client listener, the admin listener, the config watcher and signal handling.

`start_proxy` is the library entry point (tests, the CLI's demo); `serve` runs it until SIGTERM/SIGINT with a
graceful drain: stop accepting, report not-ready, let in-flight requests finish within limits.drain_timeout, then
close pools, sessions and listeners. SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy import native
from proxy.admin import create_admin_app, warn_if_exposed
from proxy.banner import exit_line, startup_lines
from proxy.config.model import SERVERS, ConfigError, ConfigIssue, Server, server_named
from proxy.events import ExchangeListener
from proxy.handler import ProxyHandler
from proxy.listener import ProtocolListener
from proxy.reload import POLL_INTERVAL, Reloader, build_snapshot_parts
from proxy.server import GuardedRequestHandler, ProxyServer
from proxy.state import ReloadResult, RuntimeState, Snapshot
from proxy.tasks import TaskOwner
from proxy.tls import ListenerTLS, TLSFileError, warn_unverified
from proxy.worker_role import (
    WorkerRole,
    add_worker_routes,
    ignore_sigusr1_unless_handled,
    prepare_admin_socket,
    write_exit_report,
)

log = logging.getLogger("strangler.proxy")

ListenersFactory = Callable[[RuntimeState], Sequence[ExchangeListener]]


class RunningProxy:
    """A started proxy: its ports, its state, and `stop()` for a graceful shutdown."""

    def __init__(
        self,
        *,
        state: RuntimeState,
        reloader: Reloader,
        server: ProxyServer,
        runner: web.ServerRunner,
        admin_runner: web.AppRunner,
        tasks: TaskOwner,
        listener: Server = "aiohttp",
    ) -> None:
        self.state = state
        self.listener = listener  # the proxy listener implementation serving (listen.server)
        self.reloader = reloader
        self._server = server
        self._runner = runner
        self._admin_runner = admin_runner
        self._tasks = tasks
        self._stopped = False
        self.proxy_port: int = runner.addresses[0][1]
        admin_address = admin_runner.addresses[0]  # a unix socket's path for a worker (`proxy.worker_role`)
        self.admin_port: int = admin_address[1] if isinstance(admin_address, tuple) else 0

    @property
    def connections(self) -> list[Any]:
        """The per-connection protocols of the client connections open now (the chosen listener's kind)."""
        return list(self._server.connections)

    async def reload(self, trigger: str = "sighup") -> ReloadResult:
        return await self.reloader.reload(trigger)

    def request_reload(self, trigger: str = "sighup") -> None:
        """Start a reload in the background (from a signal handler)."""
        with contextlib.suppress(RuntimeError):  # already stopping
            _ = self._tasks.start(self.reloader.reload(trigger), name="reload")

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Graceful shutdown; in-flight requests get `drain_timeout` seconds (default limits.drain_timeout)."""
        if self._stopped:
            return
        self._stopped = True
        state = self.state
        state.draining = True
        timeout = state.config.limits.drain_timeout if drain_timeout is None else drain_timeout
        await self._tasks.close()
        for site in list(self._runner.sites):
            await site.stop()  # no new connections from here on
        self._server.pre_shutdown()  # idle keep-alive connections close; busy ones close after their response
        await self._server.shutdown(timeout)
        await self._runner.cleanup()
        for listener in state.listeners:
            await _close_listener(listener)
        await self._admin_runner.cleanup()
        await state.close()


SERVER_ENV = "STRANGLER_SERVER"  # overrides listen.server when set (`fast` or `aiohttp`); CI runs the suite on both


def chosen_server(explicit: Server | None, configured: Server) -> Server:
    """The proxy listener implementation: the caller's choice, else $STRANGLER_SERVER, else listen.server."""
    if explicit is not None:
        return explicit
    named = os.environ.get(SERVER_ENV, "")
    if not named:
        return configured
    server = server_named(named)
    if server is None:
        known = ", ".join(SERVERS)
        raise ConfigError([ConfigIssue(f"${SERVER_ENV}", "", f"unknown server {named!r} (known: {known})")])
    return server


LISTENER_READY_TIMEOUT = 15.0  # seconds a listener's `ready()` may take before traffic is accepted anyway
LISTEN_BACKLOG = 1024  # the proxy listener's accept queue at least; raised to limits.max_connections when larger


async def _listeners_ready(listeners: Iterable[ExchangeListener]) -> None:
    """Give listeners with a `ready()` coroutine (the shadow worker process) time to start before traffic is
    accepted, so the first requests are mirrored like the rest instead of arriving as one burst; one that is not
    ready in time is logged, never fatal: the proxy serves either way."""
    for listener in listeners:
        ready = getattr(listener, "ready", None)
        if ready is None:
            continue
        try:
            await asyncio.wait_for(ready(), LISTENER_READY_TIMEOUT)
        except TimeoutError:
            log.warning("exchange listener %r not ready after %.0fs; serving anyway", listener, LISTENER_READY_TIMEOUT)
        except Exception:
            log.exception("exchange listener %r failed to get ready; serving anyway", listener)


async def _close_listener(listener: object) -> None:
    aclose = getattr(listener, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.exception("exchange listener %r failed to close", listener)


async def start_proxy(
    config_path: str | Path,
    *,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    listeners: Iterable[ExchangeListener] = (),
    listeners_factory: ListenersFactory | None = None,
    db: str | None = None,
    watch: bool = True,
    watch_interval: float = POLL_INTERVAL,
    server: Server | None = None,
    worker: WorkerRole | None = None,
) -> RunningProxy:
    """Load the config, bind both listeners and start watching the file. Raises ConfigError or OSError (bind).

    host/port/admin_port override the config's listen and admin addresses (port 0: any free port); server overrides
    listen.server (the proxy listener implementation). A `worker` (one of `serve --workers N`) binds the proxy port
    with SO_REUSEPORT and its admin app on its private unix socket.
    """
    path = Path(config_path)
    config, table = await asyncio.to_thread(build_snapshot_parts, path)
    state = RuntimeState(Snapshot(config, table, 1), listeners=listeners, db_path=db)
    async with contextlib.AsyncExitStack() as unwind:
        unwind.push_async_callback(state.close)
        await state.open()
        if listeners_factory is not None:
            state.add_listeners(listeners_factory(state))
        for listener in state.listeners:
            unwind.push_async_callback(_close_listener, listener)
        await _listeners_ready(state.listeners)

        chosen = chosen_server(server, config.listen.server)
        protocol = ProtocolListener if chosen == "fast" else GuardedRequestHandler
        proxy_server = ProxyServer(ProxyHandler(state), state=state, protocol=protocol)
        runner = web.ServerRunner(proxy_server, handle_signals=False)
        await runner.setup()
        unwind.push_async_callback(runner.cleanup)
        # aiohttp's default backlog of 128 makes a burst of connects wait on SYN retransmits (1 s, then 3 s);
        # the kernel caps it at net.core.somaxconn.
        backlog = max(LISTEN_BACKLOG, config.limits.max_connections)
        listen_port = config.listen.port if port is None else port
        tls = None if config.listen.tls is None else ListenerTLS(config.listen.tls)  # the admin listener stays clear
        context = None if tls is None else tls.listening
        site_host = host or config.listen.host
        site = web.TCPSite(
            runner, site_host, listen_port, backlog=backlog, ssl_context=context, reuse_port=worker is not None
        )
        await site.start()
        warn_unverified(config)

        reloader = Reloader(state, path, tls=tls)
        admin_host = config.admin.host
        admin_app = create_admin_app(state, reloader.reload)
        if worker is not None:
            add_worker_routes(admin_app, state.metrics)
        else:
            warn_if_exposed(config, admin_host)
        admin_runner = web.AppRunner(admin_app, access_log=None)
        await admin_runner.setup()
        unwind.push_async_callback(admin_runner.cleanup)
        if worker is not None:
            prepare_admin_socket(worker.admin_socket)
            await web.UnixSite(admin_runner, str(worker.admin_socket)).start()
        else:
            await web.TCPSite(admin_runner, admin_host, config.admin.port if admin_port is None else admin_port).start()

        tasks = TaskOwner("proxy")
        if watch:
            _ = tasks.start(reloader.watch(watch_interval), name="config-watch")
        running = RunningProxy(
            state=state,
            reloader=reloader,
            server=proxy_server,
            runner=runner,
            admin_runner=admin_runner,
            tasks=tasks,
            listener=chosen,
        )
        state.ready = True
        unwind.pop_all()
    log.info("strangler listening on %s:%d (admin %s:%d)", host or config.listen.host, running.proxy_port,
             admin_host, running.admin_port)  # fmt: skip
    return running


def serve(
    config_path: str | Path,
    *,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    db: str | None = None,
    listeners_factory: ListenersFactory | None = None,
    shadow: str = "in-process",
    quiet: bool = False,
    server: Server | None = None,
    worker: WorkerRole | None = None,
) -> int:
    """Run the proxy until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain, 1 on start-up
    failure). Uses uvloop when it is installed. Unless `quiet`, a banner goes to stderr at start (`shadow` says how
    the shadow side runs) and one line at exit. `server` overrides listen.server (see `chosen_server`); a `worker`
    runs as one of `serve --workers N` (`proxy.supervisor`)."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform but Windows
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(
            _serve(config_path, host, port, admin_port, db, listeners_factory, shadow, quiet, server, worker)
        )


def settle_gc() -> None:
    """Move everything allocated at start-up (modules, config, route tables) out of the collector's sight and
    collect young objects less often: each request allocates many short-lived container objects, and the default
    gen-0 threshold (700) made the cyclic collector re-scan the long-lived start-up heap every few requests
    (measured: about 17% less CPU per pass-through request)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


GC_GEN0_THRESHOLD = 5000


async def _serve(
    config_path: str | Path,
    host: str | None,
    port: int | None,
    admin_port: int | None,
    db: str | None,
    listeners_factory: ListenersFactory | None,
    shadow: str = "in-process",
    quiet: bool = False,
    server: Server | None = None,
    worker: WorkerRole | None = None,
) -> int:
    if worker is not None:
        ignore_sigusr1_unless_handled()
    try:
        running = await start_proxy(
            config_path,
            host=host,
            port=port,
            admin_port=admin_port,
            db=db,
            listeners_factory=listeners_factory,
            server=server,
            worker=worker,
        )
    except ConfigError as exc:
        log.error("cannot start: invalid config\n%s", exc)
        return 1
    except (OSError, TLSFileError) as exc:  # TLSFileError: a certificate changed after the config was checked
        log.error("cannot start: %s", exc)
        return 1
    settle_gc()
    if not quiet:
        config = running.state.config
        lines = startup_lines(
            config,
            host=host or config.listen.host,
            port=running.proxy_port,
            admin_host=config.admin.host,
            admin_port=running.admin_port,
            store=db or str(config.store.path),
            shadow=shadow if running.state.listeners else "off",
            listener=running.listener,
            code=native.status().describe(),
        )
        sys.stderr.write("\n".join(lines) + "\n")
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    handled: list[signal.Signals] = []
    handlers: dict[signal.Signals, Callable[[], Any]] = {
        signal.SIGTERM: stopping.set,
        signal.SIGINT: stopping.set,
        signal.SIGHUP: running.request_reload,
        signal.SIGUSR1: running.state.reopen_logs,  # logrotate: the access log is opened again at its path
    }
    for sig, callback in handlers.items():
        with contextlib.suppress(NotImplementedError, AttributeError):  # platforms without signal support
            loop.add_signal_handler(sig, callback)
            handled.append(sig)
    try:
        await stopping.wait()
        log.info("shutting down: draining in-flight requests (up to %.0fs)", running.state.config.limits.drain_timeout)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await running.stop()
    if worker is not None:
        write_exit_report(worker, running.state.metrics)
    if not quiet:
        sys.stderr.write(exit_line(running.state.metrics) + "\n")
    return 0
