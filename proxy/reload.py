"""Hot reload: watch routes.yaml (and take SIGHUP / admin requests), load it off the loop, swap it in atomically.

A file that fails to load never replaces the running config: the proxy keeps serving the last good snapshot and
the errors are kept for the admin /config endpoint. Listen addresses are bound once; changing them needs a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from proxy.config import Config, ConfigError
from proxy.loader import load_config
from proxy.routing import RouteTable
from proxy.state import ReloadResult, RuntimeState

log = logging.getLogger("strangler.reload")

POLL_INTERVAL = 0.5

FileSignature = tuple[int, int, int] | None


def file_signature(path: Path) -> FileSignature:
    """(mtime_ns, size, inode): changes on edits and on atomic replace-by-rename; None while the file is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def build_snapshot_parts(path: Path) -> tuple[Config, RouteTable]:
    """Load and index a config file (runs in a worker thread). Raises ConfigError."""
    config = load_config(path)
    return config, RouteTable.build(config.routes)


class Reloader:
    """Reloads one config file into one RuntimeState; reloads never overlap."""

    def __init__(self, state: RuntimeState, path: Path) -> None:
        self._state = state
        self._path = path
        self._lock = asyncio.Lock()
        self._seen: FileSignature = file_signature(path)

    async def reload(self, trigger: str = "sighup") -> ReloadResult:
        """Load the file now; on success swap the snapshot, on failure keep the old one. Never raises."""
        state = self._state
        async with self._lock:
            self._seen = file_signature(self._path)
            try:
                config, table = await asyncio.to_thread(build_snapshot_parts, self._path)
            except ConfigError as exc:
                errors = tuple(str(issue) for issue in exc.issues) or (str(exc),)
                return self._failed(trigger, errors)
            except Exception as exc:  # a bug or an unexpected I/O error must not stop the proxy
                log.exception("config reload from %s failed unexpectedly", self._path)
                return self._failed(trigger, (f"{type(exc).__name__}: {exc}",))
            old = state.snapshot.config
            snapshot = state.apply(config, table)
            _warn_restart_needed(old, config)
            result = ReloadResult(ok=True, time=time.time(), generation=snapshot.generation, trigger=trigger)
            state.last_reload = result
            state.metrics.reloads.inc(("ok",))
            log.info("config reloaded from %s (%s): generation %d", self._path, trigger, snapshot.generation)
            return result

    def _failed(self, trigger: str, errors: tuple[str, ...]) -> ReloadResult:
        state = self._state
        result = ReloadResult(
            ok=False, time=time.time(), generation=state.snapshot.generation, errors=errors, trigger=trigger
        )
        state.last_reload = result
        state.metrics.reloads.inc(("failed",))
        log.error(
            "config reload from %s failed; still serving generation %d:\n  %s",
            self._path,
            state.snapshot.generation,
            "\n  ".join(errors),
        )
        return result

    async def watch(self, interval: float = POLL_INTERVAL) -> None:
        """Poll the file; reload once a change has been stable for one interval (editors write in steps)."""
        pending: FileSignature = None
        while True:
            await asyncio.sleep(interval)
            current = await asyncio.to_thread(file_signature, self._path)
            if current is None or current == self._seen:
                pending = None
                continue
            if current != pending:
                pending = current  # changed since the last look: wait one more interval for the writer to finish
                continue
            pending = None
            await self.reload("file")


def _warn_restart_needed(old: Config, new: Config) -> None:
    if old.listen != new.listen:
        log.warning(
            "listen address changed (%s:%d -> %s:%d): restart strangler to apply it",
            old.listen.host,
            old.listen.port,
            new.listen.host,
            new.listen.port,
        )
    if (old.admin.host, old.admin.port) != (new.admin.host, new.admin.port):
        log.warning("admin address changed: restart strangler to apply it")
