"""The one admin listener of `serve --workers N`: the same endpoints as a lone proxy's (`proxy.admin`), answered for
all the workers together.

- /healthz: the supervisor runs. /readyz: every worker answers ready on its private socket.
- /metrics and /stats: each worker's registry (`proxy.worker_role`), merged (`proxy.aggregate`) and rendered by the
  same code as a lone proxy's, plus the supervisor's own figures (workers, ready, restarts); /stats adds `workers`.
- /routes and /config: the supervisor's own view of the file, loaded and reloaded exactly as each worker does.
- POST /reload: the same token rules (`proxy.admin`), then the supervisor and every worker reload; 200 only when
  all did. Any other path is passed on: reads to one ready worker, writes to every worker (each checks the token).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from proxy.admin import (
    METRICS_CONTENT_TYPE,
    RELOAD_KEY,
    STATE_KEY,
    _authorize,
    add_admin_endpoints,
    reload_view_data,
    warn_if_exposed,
)
from proxy.aggregate import merge_registries
from proxy.config.model import Config
from proxy.metrics import Metrics
from proxy.reload import Reloader
from proxy.state import RuntimeState, Snapshot
from proxy.stats import stats_document
from proxy.worker_role import REGISTRY_PATH, WorkerRole

WORKER_TIMEOUT: Final = aiohttp.ClientTimeout(total=10.0)
STREAM_TIMEOUT: Final = aiohttp.ClientTimeout(total=None, sock_read=60.0)  # a passed-on read may be long (a download)
PASSED_REQUEST_HEADERS: Final = ("Authorization", "Content-Type", "Accept")
PASSED_RESPONSE_HEADERS: Final = ("Content-Type", "Content-Disposition", "WWW-Authenticate")
SERVER_KEY: web.AppKey[AdminServer] = web.AppKey("supervisor_admin")


@dataclass(slots=True, eq=False)
class WorkerSlot:
    """One worker place: its socket and exit report, the process now in it, and what the supervisor saw of it."""

    index: int
    role: WorkerRole
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0  # loop time of the latest start
    restarts: int = 0
    ready: bool = False
    ever_ready: bool = False
    session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None


@dataclass(frozen=True, slots=True)
class MergedView:
    """What /stats reads (`proxy.stats.StatsSource`): the merged registry and the supervisor's snapshot."""

    metrics: Metrics
    snapshot: Snapshot

    @property
    def config(self) -> Config:
        return self.snapshot.config


class AdminServer:
    """The supervisor's admin listener and its clients to each worker's private socket."""

    def __init__(self, state: RuntimeState, reloader: Reloader, slots: list[WorkerSlot]) -> None:
        self.state = state
        self.reloader = reloader
        self.slots = slots
        self.serving = False  # the supervisor handles its signals: until then it is not ready, whatever the workers
        self.draining = False
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        """Open the worker clients and bind the admin listener; returns its port. Raises OSError."""
        for slot in self.slots:
            connector = aiohttp.UnixConnector(path=str(slot.role.admin_socket), force_close=True)
            slot.session = aiohttp.ClientSession(connector=connector, timeout=WORKER_TIMEOUT)
        app = web.Application()
        app[STATE_KEY] = self.state
        app[RELOAD_KEY] = self.reloader.reload
        app[SERVER_KEY] = self
        add_admin_endpoints(app, readyz=readyz, metrics=metrics, stats=stats, reload=reload_all)
        app.router.add_route("*", "/{tail:.*}", pass_on)  # the rest (/store/snapshot, ...) to the workers
        warn_if_exposed(self.state.config, host)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for slot in self.slots:
            if slot.session is not None:
                await slot.session.close()

    async def _get(self, slot: WorkerSlot, path: str) -> aiohttp.ClientResponse | None:
        if slot.session is None or slot.pid is None:
            return None
        try:
            response = await slot.session.get(f"http://worker{path}")
            await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None
        return response

    async def refresh_readiness(self) -> bool:
        """Ask every worker whether it is ready; True when all are."""

        async def one(slot: WorkerSlot) -> None:
            response = await self._get(slot, "/readyz")
            slot.ready = response is not None and response.status == 200
            slot.ever_ready = slot.ever_ready or slot.ready

        await asyncio.gather(*(one(slot) for slot in self.slots))
        return all(slot.ready for slot in self.slots)

    async def registries(self) -> list[dict[str, Any]]:
        """The registries of the workers that answer now (one that is restarting is left out)."""

        async def one(slot: WorkerSlot) -> dict[str, Any] | None:
            response = await self._get(slot, REGISTRY_PATH)
            if response is None or response.status != 200:
                return None
            with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                document: dict[str, Any] = await response.json()
                return document
            return None

        found = await asyncio.gather(*(one(slot) for slot in self.slots))
        return [doc for doc in found if doc is not None]

    async def merged(self) -> tuple[Metrics, list[dict[str, Any]]]:
        """Every reachable worker's registry merged, with the supervisor's own figures; and how many reported."""
        documents = await self.registries()
        await self.refresh_readiness()
        merged = merge_registries(documents)
        count = len(self.slots)
        merged.extra_gauge("strangler_proxy_workers", "Proxy worker processes (serve --workers).").set((), count)
        ready = merged.extra_gauge("strangler_proxy_workers_ready", "Proxy workers answering ready.")
        ready.set((), sum(slot.ready for slot in self.slots))
        reporting = merged.extra_gauge(
            "strangler_proxy_workers_reporting",
            "Proxy workers whose figures this scrape holds (one restarting is missing; its counters restart at 0).",
        )
        reporting.set((), len(documents))
        restarts = merged.extra_counter(
            "strangler_proxy_worker_restarts_total", "Proxy worker processes restarted after dying.", ("worker",)
        )
        for slot in self.slots:
            restarts.inc((str(slot.index),), slot.restarts)
        return merged, documents

    def workers_section(self, documents: list[dict[str, Any]]) -> dict[str, Any]:
        """/stats `workers`: how many, ready, restarted, and each worker's pid and requests served since its start."""
        served = {doc.get("pid"): _requests_served(doc) for doc in documents}
        return {
            "count": len(self.slots),
            "ready": sum(slot.ready for slot in self.slots),
            "reporting": len(documents),
            "restarts": sum(slot.restarts for slot in self.slots),
            "supervisor_pid": os.getpid(),
            "processes": [
                {
                    "index": s.index,
                    "pid": s.pid,
                    "ready": s.ready,
                    "restarts": s.restarts,
                    "requests": served.get(s.pid),
                }
                for s in self.slots
            ],
        }

    async def fan_out(self, method: str, path: str, headers: dict[str, str], body: bytes) -> list[tuple[int, bytes]]:
        """Send one write to every worker: (status, body) each, 502 for a worker that could not be reached."""

        async def one(slot: WorkerSlot) -> tuple[int, bytes]:
            if slot.session is None or slot.pid is None:
                return 502, b'{"error": "worker not running"}'
            try:
                async with slot.session.request(method, f"http://worker{path}", headers=headers, data=body) as r:
                    return r.status, await r.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                return 502, f'{{"error": "worker unreachable: {type(exc).__name__}"}}'.encode()

        return list(await asyncio.gather(*(one(slot) for slot in self.slots)))


def _requests_served(document: dict[str, Any]) -> int:
    family = next((m for m in document.get("metrics", ()) if m.get("name") == "strangler_requests_total"), None)
    return int(sum(value for _, value in family["values"])) if family is not None else 0


def _passed_headers(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in PASSED_REQUEST_HEADERS if name in request.headers}


async def readyz(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    if server.draining:
        return web.Response(status=503, text="draining")
    if not server.serving:
        return web.Response(status=503, text="starting")
    if not await server.refresh_readiness():
        ready = sum(slot.ready for slot in server.slots)
        return web.Response(status=503, text=f"starting: {ready} of {len(server.slots)} workers ready")
    return web.Response(text="ready")


async def metrics(request: web.Request) -> web.Response:
    merged, _ = await request.app[SERVER_KEY].merged()
    return web.Response(body=merged.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def stats(request: web.Request) -> web.Response:
    """The same document as a lone proxy's /stats over the merged registry, plus `workers`."""
    server = request.app[SERVER_KEY]
    merged, documents = await server.merged()
    document = stats_document(MergedView(merged, server.state.snapshot))
    return web.json_response({**document, "workers": server.workers_section(documents)})


async def reload_all(request: web.Request) -> web.Response:
    """POST /reload: the token rules of a lone proxy; then the supervisor's view and every worker reload."""
    refusal = _authorize(request)
    if refusal is not None:
        return refusal
    server = request.app[SERVER_KEY]
    result = await request.app[RELOAD_KEY]("admin")
    answers = await server.fan_out("POST", "/reload", _passed_headers(request), b"")
    document = reload_view_data(result)
    workers: list[dict[str, Any]] = []
    for slot, (status, body) in zip(server.slots, answers, strict=True):
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {"error": body.decode(errors="replace")}
        workers.append({"index": slot.index, "status": status, **answer})
        if status != 200:
            document["errors"].extend(f"worker {slot.index}: {e}" for e in answer.get("errors") or [answer])
    document["ok"] = result.ok and all(status == 200 for status, _ in answers)
    document["workers"] = workers
    return web.json_response(document, status=200 if document["ok"] else 422)


async def pass_on(request: web.Request) -> web.StreamResponse:
    """A path the supervisor does not answer itself: a read goes to one ready worker (streamed back), a write to
    every worker (the answer when they all agree, else 502 listing each)."""
    server = request.app[SERVER_KEY]
    headers = _passed_headers(request)
    if request.method not in ("GET", "HEAD"):
        answers = await server.fan_out(request.method, request.path_qs, headers, await request.read())
        statuses = {status for status, _ in answers}
        if len(statuses) == 1:
            return web.Response(status=answers[0][0], body=answers[0][1], content_type="application/json")
        details = [{"index": s.index, "status": status} for s, (status, _) in zip(server.slots, answers, strict=True)]
        return web.json_response({"error": "the workers answered differently", "workers": details}, status=502)
    slot = next((s for s in server.slots if s.ready and s.session is not None), None)
    if slot is None or slot.session is None:
        return web.json_response({"error": "no worker ready"}, status=503)
    try:
        upstream = await slot.session.request(
            request.method, f"http://worker{request.path_qs}", headers=headers, timeout=STREAM_TIMEOUT
        )
    except (aiohttp.ClientError, OSError, TimeoutError):
        return web.json_response({"error": "worker unreachable"}, status=502)
    async with upstream:  # once the answer has begun, a failure can only cut it short
        response = web.StreamResponse(status=upstream.status)
        for name in PASSED_RESPONSE_HEADERS:
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response
