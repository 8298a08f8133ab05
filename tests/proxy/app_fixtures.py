"""Builders for the running-proxy tests: recording back ends, a routes.yaml writer, a started proxy, raw HTTP.

Plain helpers (no pytest fixtures), so each test module wires the few it needs into its own fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from benchmarks.harness import free_port, free_ports
from proxy.app import RunningProxy, start_proxy

# Free ports have one home, shared with the benchmarks. A free port is released before a server takes it: for an
# upstream that must refuse connections use `dead_port`, since the next server any test starts could take a free one.
__all__ = ["free_port", "free_ports"]

TOKEN_ENV = "STRANGLER_TEST_ADMIN_TOKEN"


@dataclass(frozen=True, slots=True)
class Hit:
    """One request as a back end received it."""

    method: str
    path: str  # raw path and query, exactly as on the request line
    headers: CIMultiDict[str]
    body: bytes


HITS = web.AppKey("hits", list[Hit])


def backend_app(name: str) -> web.Application:
    """A back end answering every path with JSON {"side", "path", "method"}; `?sleep=0.5` delays the answer."""
    app = web.Application()
    app[HITS] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        request.app[HITS].append(Hit(request.method, request.raw_path, CIMultiDict(request.headers), body))
        sleep = request.query.get("sleep")
        if sleep:
            await asyncio.sleep(float(sleep))
        return web.json_response(
            {"side": name, "path": request.raw_path, "method": request.method, "body": body.decode("latin-1")},
            headers={"X-Backend": name},
        )

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def hits(server: Any) -> list[Hit]:
    """The requests a `backend_app` served (server: pytest-aiohttp's TestServer)."""
    return server.app[HITS]  # type: ignore[no-any-return]


# Sockets bound but never listening, held for the whole test session: connecting to their ports is refused, and no
# server (the proxy's own listeners included) can be given one of them meanwhile.
_DEAD: list[socket.socket] = []


def dead_port() -> int:
    """A loopback port that refuses every connection for the rest of the test session."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _DEAD.append(sock)
    return int(sock.getsockname()[1])


def write_config(
    path: Path,
    *,
    legacy: int,
    new: int,
    routes: str = "",
    settings: str = "",
    new_base: str = "",
) -> Path:
    """Write a routes.yaml with upstreams `legacy` and `new` on loopback ports; `routes` is YAML list items."""
    text = f"""\
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0, token_env: {TOKEN_ENV}}}
debug_headers: true
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  new: {{url: "http://127.0.0.1:{new}{new_base}"}}
{settings}
routes:
{routes or "  []"}
"""
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running_proxy(config_path: Path, **kwargs: Any) -> AsyncIterator[RunningProxy]:
    """The real proxy on free loopback ports (proxy and admin), stopped with a short drain afterwards."""
    kwargs.setdefault("port", 0)
    kwargs.setdefault("admin_port", 0)
    running = await start_proxy(config_path, **kwargs)
    try:
        yield running
    finally:
        await running.stop(drain_timeout=2.0)


@contextlib.asynccontextmanager
async def proxy_in_front_of(legacy: Any, tmp_path: Path, settings: str) -> AsyncIterator[RunningProxy]:
    """The real proxy (no config watching) with both upstreams on `legacy` (pytest-aiohttp's TestServer) and the
    routes.yaml `settings` (limits, say), written in tmp_path."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port, settings=settings)
    async with running_proxy(path, watch=False) as running:
        yield running


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], limit: float = 5.0) -> None:
    """Poll `condition` until it holds; TimeoutError after `limit` seconds (a hang guard, not a speed check)."""
    async with asyncio.timeout(limit):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


def url(running: RunningProxy, path: str) -> str:
    return f"http://127.0.0.1:{running.proxy_port}{path}"


def admin_url(running: RunningProxy, path: str) -> str:
    return f"http://127.0.0.1:{running.admin_port}{path}"


async def read_until_closed(port: int, data: bytes, *, limit: float = 5.0) -> tuple[bytes, bool]:
    """Send `data` on a fresh connection and read until the server closes it: what came back, and whether it closed
    (a reset counts as closed) within `limit` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    closed = True
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(limit):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await reader.read(65536):
                    received += chunk
    except TimeoutError:
        closed = False
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received, closed


async def raw_exchange(port: int, data: bytes, *, limit: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it (or `limit` seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _complete(data: bytes) -> bool:
    """Whether `data` holds a whole response with a Content-Length body."""
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP/1.1 response."""
    return int(response.split(b" ", 2)[1])
