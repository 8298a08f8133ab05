"""What a proxy worker under `serve --workers N` does differently from a lone proxy, in one place: its admin app
listens on a private unix socket (in the supervisor's private directory) and also serves its raw registry for the
supervisor to merge (`proxy.aggregate`); it writes its final registry to a file on exit, for the supervisor's exit
line; and it ignores SIGUSR1 unless something else handles it (the supervisor forwards that signal to every
worker, and its default action would kill the process).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from proxy.aggregate import registry_document
from proxy.metrics import Metrics

log = logging.getLogger("strangler.proxy")

REGISTRY_PATH: Final = "/_worker/registry"
WORKER_METRICS_KEY = web.AppKey("worker_metrics", Metrics)


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Where a worker's supervisor listens for it: its admin socket and its exit report (both in a private
    directory the supervisor made)."""

    admin_socket: Path
    exit_report: Path

    @classmethod
    def in_directory(cls, directory: Path, index: int) -> WorkerRole:
        return cls(directory / f"worker-{index}.sock", directory / f"worker-{index}.exit.json")


async def registry_view(request: web.Request) -> web.Response:
    """The worker's whole registry as JSON (`proxy.aggregate.registry_document`), with its pid."""
    document = registry_document(request.app[WORKER_METRICS_KEY])
    return web.json_response({**document, "pid": os.getpid()})


def add_worker_routes(app: web.Application, metrics: Metrics) -> None:
    """Give a worker's admin app the route the supervisor reads its registry from."""
    app[WORKER_METRICS_KEY] = metrics
    app.router.add_get(REGISTRY_PATH, registry_view)


def prepare_admin_socket(path: Path) -> None:
    """Remove the socket file a previous worker in the same slot left behind (it died without cleaning up)."""
    path.unlink(missing_ok=True)


def ignore_sigusr1_unless_handled() -> None:
    """Keep SIGUSR1 from killing the worker when nothing in it handles the signal (its default action is to end
    the process); a handler installed later on the loop (the access log's reopen) takes over."""
    if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def write_exit_report(role: WorkerRole, metrics: Metrics) -> None:
    """The worker's final registry, written atomically where the supervisor reads it after the worker exits (a
    failure costs only the exit line's count, so it is logged, never raised)."""
    partial = role.exit_report.with_suffix(".partial")
    try:
        partial.write_text(json.dumps({**registry_document(metrics), "pid": os.getpid()}), encoding="utf-8")
        partial.replace(role.exit_report)
    except OSError as exc:
        log.warning("cannot write the exit report %s: %s", role.exit_report, exc)
