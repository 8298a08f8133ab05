"""Hot reload: watch routes.yaml (and take SIGHUP / admin requests), load it off the loop, swap it in atomically.

A file that fails to load never replaces the running config: the proxy keeps serving the last good snapshot and
the errors are kept for the admin /config endpoint (and `strangler_config_last_reload_ok` is 0 on /metrics).
Editors and deploy tools write in steps, so the watcher reloads a changed file only once its size and mtime have
stayed the same for STABLE_FOR seconds, and a file that would remove every route is refused unless it says so
(`routes: []`): a file cut short before `routes:` is valid YAML with no routes. A file that disappears is reported
at once, not at the next SIGHUP. Listen addresses are bound once; changing them needs a restart.
The signature is the resolved file's (`os.stat` follows symlinks), so a Kubernetes ConfigMap volume, where
routes.yaml -> ..data/routes.yaml and an update renames a new `..data` symlink over the old one, reads as a change.
With a TLS listener, every successful reload also loads its certificate and key into a fresh context and swaps it in
for new handshakes (`proxy.tls.ListenerTLS`), and a change to either file triggers a reload like a change to the
config file; a certificate that fails to load fails the reload, and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from pathlib import Path

import yaml

from proxy.config.loader import parse_config, read_config_text
from proxy.config.model import Config, ConfigError
from proxy.routing import RouteTable
from proxy.state import ReloadResult, RuntimeState
from proxy.tls import FileSignatures, ListenerTLS, TLSFileError, listener_files, server_context, warn_unverified

log = logging.getLogger("strangler.reload")

POLL_INTERVAL = 0.5
STABLE_FOR = 0.5  # seconds a changed file's size and mtime must stay the same before it is reloaded

FileSignature = tuple[int, int, int, int] | None
Watched = tuple[FileSignature, FileSignatures]  # routes.yaml, and the TLS listener's certificate and key


def file_signature(path: Path) -> FileSignature:
    """(mtime_ns, size, inode, ctime_ns): changes on edits, on atomic replace-by-rename and on a chmod (a file made
    unreadable is reported at once); None while the file is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def build_snapshot_parts(path: Path) -> tuple[Config, RouteTable]:
    """Load and index a config file (runs in a worker thread). Raises ConfigError."""
    config, table, _ = read_snapshot_parts(path)
    return config, table


def read_snapshot_parts(path: Path) -> tuple[Config, RouteTable, bool]:
    """Like `build_snapshot_parts`, also saying whether the file spells out `routes: []` (read once)."""
    text = read_config_text(path)
    config = parse_config(text, path, files=True)  # serving: the TLS files must load
    return config, RouteTable.build(config.routes), not config.routes and says_no_routes(text)


def says_no_routes(text: str) -> bool:
    """Whether config text sets `routes:` to an empty list on purpose (not left out, not an empty value)."""
    try:
        top = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(top, dict) and top.get("routes") == []


def removes_every_route(old: Config, new: Config, explicit: bool) -> str | None:
    """Why a reload from `old` to `new` is refused, or None: dropping every route needs `routes: []` written."""
    if old.routes and not new.routes and not explicit:
        return (
            f"{new.source}: the file has no routes (cut short?); refusing to remove all {len(old.routes)} routes. "
            "Write 'routes: []' to remove every route on purpose"
        )
    return None


class Reloader:
    """Reloads one config file into one RuntimeState; reloads never overlap."""

    def __init__(
        self, state: RuntimeState, path: Path, *, stable_for: float = STABLE_FOR, tls: ListenerTLS | None = None
    ) -> None:
        self._state = state
        self._path = path
        self._stable_for = stable_for
        self._lock = asyncio.Lock()
        self.tls = tls
        self._seen: Watched = self._watched()
        state.metrics.config_ok.set((), 1)

    def _watched(self) -> Watched:
        return file_signature(self._path), listener_files(None if self.tls is None else self.tls.settings)

    def _load(self) -> tuple[Config, RouteTable, bool, ssl.SSLContext | None]:
        """The file's config (runs in a worker thread), and a fresh listener context when the listener has TLS."""
        config, table, explicit = read_snapshot_parts(self._path)
        tls = config.listen.tls
        return config, table, explicit, None if self.tls is None or tls is None else server_context(tls)

    async def reload(self, trigger: str = "sighup") -> ReloadResult:
        """Load the file now; on success swap the snapshot, on failure keep the old one. Never raises."""
        state = self._state
        async with self._lock:
            self._seen = self._watched()
            try:
                config, table, explicit, context = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                errors = tuple(str(issue) for issue in exc.issues) or (str(exc),)
                return self._failed(trigger, errors)
            except TLSFileError as exc:  # changed between the config's check and this load
                return self._failed(trigger, (f"{self._path}: listen.tls.{exc.field}: {exc}",))
            except Exception as exc:  # a bug or an unexpected I/O error must not stop the proxy
                log.exception("config reload from %s failed unexpectedly", self._path)
                return self._failed(trigger, (f"{type(exc).__name__}: {exc}",))
            old = state.snapshot.config
            refusal = removes_every_route(old, config, explicit)
            if refusal is not None:
                return self._failed(trigger, (refusal,))
            try:
                snapshot = state.apply(config, table)  # builds the pools of changed upstreams: their TLS files load
            except TLSFileError as exc:  # changed between the config's check and now; the old pools stay
                return self._failed(trigger, (f"{self._path}: upstream TLS file {exc.field}: {exc}",))
            if self.tls is not None and config.listen.tls is not None and context is not None:
                self.tls.swap(config.listen.tls, context)
                self._seen = self._watched()
            _warn_restart_needed(old, config)
            warn_unverified(config, old)
            result = ReloadResult(ok=True, time=time.time(), generation=snapshot.generation, trigger=trigger)
            state.last_reload = result
            state.metrics.reloads.inc(("ok",))
            state.metrics.config_ok.set((), 1)
            log.info("config reloaded from %s (%s): generation %d", self._path, trigger, snapshot.generation)
            return result

    def _failed(self, trigger: str, errors: tuple[str, ...]) -> ReloadResult:
        state = self._state
        result = ReloadResult(
            ok=False, time=time.time(), generation=state.snapshot.generation, errors=errors, trigger=trigger
        )
        state.last_reload = result
        state.metrics.reloads.inc(("failed",))
        state.metrics.config_ok.set((), 0)
        log.error(
            "config reload from %s failed; still serving generation %d:\n  %s",
            self._path,
            state.snapshot.generation,
            "\n  ".join(errors),
        )
        return result

    async def watch(self, interval: float = POLL_INTERVAL) -> None:
        """Poll the file; reload a change once its signature has held for `stable_for` seconds (editors and deploy
        tools write in steps); report a missing file at once."""
        loop = asyncio.get_running_loop()
        pending: Watched | None = None
        since = 0.0
        while True:
            await asyncio.sleep(interval)
            current = await asyncio.to_thread(self._watched)
            if current[0] is None:
                pending = None
                if self._seen[0] is not None:
                    self._seen = current
                    self._failed("file", (f"{self._path}: the file is missing (deleted or moved)",))
                continue
            if current == self._seen:
                pending = None
                continue
            now = loop.time()
            if current != pending:
                pending, since = current, now  # changed since the last look: wait for the writer to finish
                continue
            if now - since < self._stable_for:
                continue
            pending = None
            await self.reload("file")


def _warn_restart_needed(old: Config, new: Config) -> None:
    if (old.listen.tls is None) != (new.listen.tls is None):
        log.warning("listen.tls turned %s: restart strangler to apply it", "off" if new.listen.tls is None else "on")
    if (old.listen.host, old.listen.port) != (new.listen.host, new.listen.port):
        log.warning(
            "listen address changed (%s:%d -> %s:%d): restart strangler to apply it",
            old.listen.host,
            old.listen.port,
            new.listen.host,
            new.listen.port,
        )
    if old.listen.server != new.listen.server:
        log.warning(
            "listen.server changed (%s -> %s): restart strangler to apply it", old.listen.server, new.listen.server
        )
    if (old.admin.host, old.admin.port) != (new.admin.host, new.admin.port):
        log.warning("admin address changed: restart strangler to apply it")
    if old.workers != new.workers:
        log.warning("workers changed (%s -> %s): restart strangler to apply it", old.workers, new.workers)
