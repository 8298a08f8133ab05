"""The private aiohttp names strangler relies on (proxy/server.py, proxy/responses.py) exist in the installed aiohttp.

aiohttp is pinned to a minor range (pyproject.toml); when a new minor is allowed, this test names exactly what
moved, instead of the proxy failing at its first connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import http_parser, web, web_protocol

# (where, name): what proxy/server.py reads or overrides that aiohttp does not document.
MODULE_NAMES = (("aiohttp.web_protocol", "_ErrInfo"), ("aiohttp.web_protocol", "ERROR"))
HANDLER_ATTRIBUTES = (
    "_loop",
    "_messages",
    "_request_count",
    "_request_in_progress",
    "_current_request",
    "_parser",
    "_read_bufsize",
    "_buffer_paused",
    "_upgraded",
    "_force_close",
    "_max_msg_queue_size",
)
SERVER_ATTRIBUTES = ("_loop",)
HANDLER_METHODS = ("connection_made", "connection_lost", "data_received", "finish_response", "handle_error")


def test_private_module_names_exist() -> None:
    """Every private module-level name the proxy imports from aiohttp is there."""
    missing = [f"{mod}.{name}" for mod, name in MODULE_NAMES if not hasattr(web_protocol, name)]
    assert not missing, f"aiohttp {aiohttp.__version__} lacks {missing}: see proxy/server.py"


async def test_request_handler_and_server_have_the_private_attributes() -> None:
    """A real RequestHandler made by a real low-level Server has every private attribute proxy/server.py uses."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handle)
    missing = [f"Server.{a}" for a in SERVER_ATTRIBUTES if not hasattr(server, a)]
    handler = web_protocol.RequestHandler(server, loop=asyncio.get_running_loop())
    missing += [f"RequestHandler.{a}" for a in HANDLER_ATTRIBUTES if not hasattr(handler, a)]
    missing += [f"RequestHandler.{m}()" for m in HANDLER_METHODS if not callable(getattr(handler, m, None))]
    assert not missing, f"aiohttp {aiohttp.__version__} lacks {missing}: see proxy/server.py"
    await server.shutdown(0)


async def test_request_parser_stops_after_each_message_when_asked() -> None:
    """aiohttp's request parser takes max_msg_queue_size and, at 1, returns one request per feed and the rest on
    the next feed of b"" (what GuardedRequestHandler._feed relies on); aiohttp's stand-in for a refused request
    still says HTTP/1.0 (what ProxyServer replaces)."""
    two = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handle)
    handler = web_protocol.RequestHandler(server, loop=asyncio.get_running_loop())
    parser = http_parser.HttpRequestParser(handler, asyncio.get_running_loop(), 2**16, max_msg_queue_size=1)
    first, _, _ = parser.feed_data(two)
    second, _, _ = parser.feed_data(b"")
    assert [m.path for m, _ in first] == ["/a"]
    assert [m.path for m, _ in second] == ["/b"]
    assert web_protocol.ERROR.version == aiohttp.HttpVersion10
    await server.shutdown(0)


async def test_the_fast_listener_finds_what_it_uses_of_aiohttp() -> None:
    """proxy/h1_connection.py and proxy/listener.py build on aiohttp's BaseProtocol (write flow control), its C
    request parser, BaseRequest and low-level Server: every private name they use is there."""
    from aiohttp import base_protocol, web_request

    loop = asyncio.get_running_loop()
    protocol = base_protocol.BaseProtocol(loop)
    missing = [
        f"BaseProtocol.{a}"
        for a in ("_paused", "_drain_waiter", "_buffer_paused", "_upgraded", "_parser", "_drain_helper")
        if not hasattr(protocol, a)
    ]
    missing += [
        f"BaseProtocol.{m}()"
        for m in ("_pause_reading_for_buffer", "_resume_reading_for_buffer", "pause_reading", "resume_reading")
        if not callable(getattr(protocol, m, None))
    ]
    parser = http_parser.HttpRequestParser(protocol, loop, 2**16, max_msg_queue_size=1)
    missing += [
        f"HttpRequestParser.{m}()" for m in ("set_upgraded", "feed_data") if not callable(getattr(parser, m, None))
    ]
    missing += [f"BaseRequest.{m}()" for m in ("_cancel",) if not callable(getattr(web_request.BaseRequest, m, None))]
    missing += [f"web_protocol.{n}" for n in ("PayloadAccessError",) if not hasattr(web_protocol, n)]

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handle)
    missing += [
        f"Server.{a}"
        for a in ("request_factory", "request_handler", "requests_count", "connection_made", "connection_lost")
        if not hasattr(server, a)
    ]
    assert not missing, f"aiohttp {aiohttp.__version__} lacks {missing}: see proxy/h1_connection.py, proxy/listener.py"
    await server.shutdown(0)


def test_stream_response_prepares_headers_in_an_overridable_method() -> None:
    """proxy/responses.py overrides StreamResponse._prepare_headers to take back aiohttp's default Server header."""
    assert callable(getattr(web.StreamResponse, "_prepare_headers", None))
    assert callable(getattr(web.Response, "_prepare_headers", None))


@pytest.mark.parametrize("version", [aiohttp.__version__])
def test_aiohttp_is_within_the_pinned_minor(version: str) -> None:
    """The installed aiohttp is the minor the private names were checked against (3.14)."""
    assert version.startswith("3.14."), f"aiohttp {version}: re-check proxy/server.py, then widen the pin"


PREFILLED = ("headers", "raw_headers", "method", "version", "raw_path", "keep_alive", "body_exists", "remote")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n",
        b"POST /p HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"PUT /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
async def test_prefilled_request_properties_are_what_aiohttp_computes(head: bytes) -> None:
    """Every property proxy.server.prefill_request sets holds what aiohttp's own property returns for the same
    parsed message and body stream, so the fast listener's requests read exactly as aiohttp's do."""
    from proxy.server import peer_address, prefill_request

    loop = asyncio.get_running_loop()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handle)
    protocol = web_protocol.RequestHandler(server, loop=loop)
    parser = http_parser.HttpRequestParser(protocol, loop, 2**16)
    [(message, payload)], _, _ = parser.feed_data(head)
    task = loop.create_task(asyncio.sleep(0))
    plain = web.BaseRequest(message, payload, protocol, protocol, task, loop)  # type: ignore[arg-type]
    filled = web.BaseRequest(message, payload, protocol, protocol, task, loop)  # type: ignore[arg-type]
    prefill_request(filled, message, payload, peer_address(protocol.peername))
    assert set(PREFILLED) <= set(filled._cache)
    for name in PREFILLED:
        assert getattr(filled, name) == getattr(plain, name), name
    await task
    await server.shutdown(0)


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_peer_address_is_what_aiohttp_gives_as_remote(family: str, tmp_path: Path) -> None:
    """proxy.server.peer_address of a real connection's peername is aiohttp's own `request.remote` on it, over
    loopback TCP and over a unix socket (where the peername is a string)."""
    from proxy.server import peer_address

    seen: list[tuple[str | None, str | None]] = []

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        seen.append((request.remote, peer_address(transport.get_extra_info("peername"))))
        return web.Response()

    runner = web.ServerRunner(web.Server(handle))
    await runner.setup()
    path = str(tmp_path / "s.sock")
    site = web.TCPSite(runner, "127.0.0.1", 0) if family == "tcp" else web.UnixSite(runner, path)
    await site.start()
    try:
        if family == "tcp":
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 200
        else:
            connector = aiohttp.UnixConnector(path=path)
            async with aiohttp.ClientSession(connector=connector) as session, session.get("http://x/") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
    [(remote, ours)] = seen
    assert ours == remote
    assert (remote == "127.0.0.1") if family == "tcp" else remote is not None
