"""Builders for the forwarding tests: a tiny proxy app around `forward()`, recording back ends, a raw back end.

The proxy app here is deliberately minimal (one catch-all handler, header hygiene, forward or websocket) so the
forwarding tests do not depend on the real request handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_protocol import RequestHandler
from yarl import URL

from proxy.app import chosen_server
from proxy.config.model import Listen, Timeouts, Upstream
from proxy.conn_guard import ConnectionCounter
from proxy.forwarding import FallbackAvailable, ForwardResult, ForwardTarget, forward
from proxy.headers import new_request_id, upstream_request_headers, valid_request_id
from proxy.listener import ProtocolListener
from proxy.metrics import Metrics
from proxy.upstream import transport
from proxy.websocket import forward_websocket, is_websocket_upgrade, websocket_session

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
MiB = 1024 * 1024
QUICK = Timeouts(connect=1.0, read=5.0)


@dataclass(frozen=True, slots=True)
class ProxySetup:
    """How the test proxy forwards: one upstream and the forward() options under test."""

    upstream: Upstream
    timeouts: Timeouts = QUICK
    max_body: int = MiB
    capture: int = 0
    allow_fallback: bool = False
    preread: bool = False  # read the body before forwarding, as the handler does for fallback routes
    trusted: tuple[Network, ...] = ()
    keep_headers: bool = True  # ForwardResult.response_headers wanted (the handler: only with exchange observers)


@dataclass(slots=True)
class ProxyLog:
    """What the test proxy saw: forward() results and fallbacks offered."""

    results: list[ForwardResult] = field(default_factory=list)
    fallbacks: list[FallbackAvailable] = field(default_factory=list)


LOG = web.AppKey("log", ProxyLog)
POOL = web.AppKey("pool", transport.UpstreamPool)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def upstream_at(url: URL | str, *, host_header: str = "rewrite") -> Upstream:
    return Upstream(name="legacy", url=URL(url), host_header="preserve" if host_header == "preserve" else "rewrite")


def proxy_app(setup: ProxySetup) -> web.Application:
    """A web.Application with one catch-all handler that cleans headers and calls forward()."""
    app = web.Application()
    app[LOG] = ProxyLog()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        # Looked up on the module at call time so a replaced transport is picked up.
        app[POOL] = transport.UpstreamPool(setup.upstream.url)
        app[SESSION] = websocket_session()  # the proxy's own
        yield
        await app[POOL].close()
        await app[SESSION].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-Id")
        request_id = incoming if incoming is not None and valid_request_id(incoming) else new_request_id()
        headers = upstream_request_headers(
            request.raw_headers,
            upstream=setup.upstream,
            client_host=request.headers.get("Host", ""),
            peer_ip=request.remote or "",
            scheme=request.scheme,
            trusted_proxies=setup.trusted,
            request_id=request_id,
            via="strangler",
            http_version=(request.version.major, request.version.minor),
        )
        target = setup.upstream.url.raw_path.rstrip("/") + request.raw_path
        if is_websocket_upgrade(request):
            return await forward_websocket(
                request,
                upstream=setup.upstream,
                session=request.app[SESSION],
                target=target,
                headers=headers,
                timeouts=setup.timeouts,
                route_id="ws",
                request_id=request_id,
            )
        body = await request.read() if setup.preread and request.body_exists else None
        try:
            resp, result = await forward(
                request,
                ForwardTarget(setup.upstream, request.app[POOL], target, setup.timeouts),
                headers=headers,
                body=body,
                max_body=setup.max_body,
                capture=setup.capture,
                allow_fallback=setup.allow_fallback,
                response_headers=(("Via", "1.1 strangler"),),
                route_id="test-route",
                request_id=request_id,
                keep_headers=setup.keep_headers,
            )
        except FallbackAvailable as exc:
            request.app[LOG].fallbacks.append(exc)
            return web.Response(text="fallback")
        request.app[LOG].results.append(result)
        return resp

    app.cleanup_ctx.append(resources)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class ProxyServer(TestServer):
    """A TestServer that, like strangler's own listener, does not cancel handlers when a client hangs up, and serves
    on the listener strangler would choose (`proxy.app.chosen_server`: $STRANGLER_SERVER, else the default).

    aiohttp's TestServer forces handler cancellation on; forward() must be tested the way it runs.
    """

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        kwargs["handler_cancellation"] = False
        if chosen_server(None, Listen().server) == "fast":
            return FastAppRunner(self.app, **kwargs)
        return await super()._make_runner(**kwargs)


class FastServer(web.Server):
    """aiohttp's low-level server making the fast listener's per-connection protocol, without strangler's limits."""

    def __call__(self) -> RequestHandler:
        counter = ConnectionCounter(Metrics())
        return ProtocolListener(  # type: ignore[return-value]  # the fast listener is a protocol of its own
            self, loop=self._loop, connections=counter, header_timeout=0, max_connections=2**20, **self._kwargs
        )


class FastAppRunner(web.AppRunner):
    """An AppRunner whose connections are served by the fast listener's request loop (`proxy.listener`)."""

    async def _make_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        app = self.app
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        return FastServer(app._handle, request_factory=app._make_request, loop=loop, **self._kwargs)  # type: ignore[arg-type]  # aiohttp passes its own Request


@dataclass(slots=True)
class Seen:
    """What a recording back end received, per request."""

    method: str
    path: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body_size: int

    def header(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode() for n, v in self.raw_headers if n.lower() == key]

    def names(self) -> set[str]:
        return {n.decode().lower() for n, _ in self.raw_headers}


async def count_body(request: web.BaseRequest) -> int:
    """Read a request body to the end without keeping it."""
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return size


class RawBackend:
    """An asyncio server that records request heads byte for byte and answers with a canned response.

    It reads one request per connection (its body framed by Content-Length or chunked) and then writes
    `response`; when `close_after` is set it writes only that many response bytes and drops the connection.
    """

    def __init__(self, response: bytes, *, close_after: int | None = None) -> None:
        self.response = response
        self.close_after = close_after
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> URL:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return URL(f"http://127.0.0.1:{port}")

    async def start(self) -> RawBackend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            self.bodies.append(await self._read_body(reader, head))
            if self.close_after is None:
                writer.write(self.response)
                await writer.drain()
            else:
                writer.write(self.response[: self.close_after])
                await writer.drain()
                await asyncio.sleep(0.05)  # let the partial response reach the proxy before the reset
                writer.transport.abort()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
        lines = head.lower().split(b"\r\n")
        for line in lines:
            if line.startswith(b"content-length:"):
                return await reader.readexactly(int(line.split(b":", 1)[1]))
        if b"transfer-encoding: chunked" in lines:
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return bytes(body)
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        return b""

    def header_lines(self, index: int = 0) -> list[bytes]:
        """The request's header lines (without the request line), lower-cased."""
        return [line.lower() for line in self.heads[index].split(b"\r\n")[1:] if line]
