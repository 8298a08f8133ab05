"""WebSocket pass-through: messages both ways, close codes both ways, subprotocols, unreachable upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from multidict import CIMultiDict

from proxy.websocket import is_websocket_upgrade
from tests.proxy.app_fixtures import dead_port
from tests.proxy.fwd_fixtures import ProxyServer, ProxySetup, proxy_app, upstream_at

Client = TestClient[web.Request, web.Application]
MakeServer = Callable[..., Awaitable[TestServer]]
MakeClient = Callable[..., Awaitable[Client]]


@dataclass(slots=True)
class EchoLog:
    """What the websocket back end saw."""

    close_codes: list[int | None] = field(default_factory=list)
    headers: list[CIMultiDict[str]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def echo(aiohttp_server: MakeServer, aiohttp_client: MakeClient) -> tuple[Client, EchoLog]:
    """A websocket echo back end behind the test proxy; "close-me" makes the back end close with 4001."""
    log = EchoLog()

    async def handle(request: web.Request) -> web.StreamResponse:
        log.headers.append(request.headers.copy())
        ws = web.WebSocketResponse(protocols=("v2.chat",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data == "close-me":
                await ws.close(code=4001, message=b"bye")
            elif msg.type is WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        log.close_codes.append(ws.close_code)
        log.closed.set()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    client = await aiohttp_client(ProxyServer(proxy_app(ProxySetup(upstream_at(server.make_url(""))))))
    return client, log


async def test_text_and_binary_echo_both_ways(echo: tuple[Client, EchoLog]) -> None:
    """Text and binary messages reach the back end and its answers reach the client."""
    client, log = echo
    async with client.ws_connect("/ws?room=1", headers={"Cookie": "sid=abc"}) as ws:
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "echo:hello"
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes(timeout=5) == b"echo:\x00\x01"
    assert log.headers[0]["Cookie"] == "sid=abc"
    assert "X-Request-Id" in log.headers[0]


async def test_upstream_close_code_reaches_client(echo: tuple[Client, EchoLog]) -> None:
    """When the back end closes with a code and reason, the client sees the same code and reason."""
    client, _ = echo
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("close-me")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4001
        assert msg.extra == "bye"


async def test_client_close_code_reaches_upstream(echo: tuple[Client, EchoLog]) -> None:
    """When the client closes with a code, the back end sees that code."""
    client, log = echo
    ws = await client.ws_connect("/ws")
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=5) == "echo:ping"
    await ws.close(code=4002, message=b"done")
    await asyncio.wait_for(log.closed.wait(), 5)
    assert log.close_codes == [4002]


async def test_client_vanishing_closes_upstream(echo: tuple[Client, EchoLog]) -> None:
    """A client that drops its TCP connection without a close frame gets the upstream closed as going away."""
    client, log = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    writer.transport.abort()
    await asyncio.wait_for(log.closed.wait(), 5)
    assert log.close_codes == [1001]


async def test_subprotocol_negotiated(echo: tuple[Client, EchoLog]) -> None:
    """The subprotocol the back end picks from the client's offer is the one the client gets."""
    client, _ = echo
    async with client.ws_connect("/ws", protocols=("v1.chat", "v2.chat")) as ws:
        assert ws.protocol == "v2.chat"


async def test_unreachable_upstream_is_502_before_accepting(aiohttp_client: MakeClient) -> None:
    """A websocket to an upstream that refuses connections is answered 502 JSON, not accepted."""
    client = await aiohttp_client(ProxyServer(proxy_app(ProxySetup(upstream_at(f"http://127.0.0.1:{dead_port()}")))))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/ws")
    assert caught.value.status == 502


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {"Upgrade": "websocket", "Connection": "keep-alive, Upgrade"}, True),
        ("GET", {"Upgrade": "WebSocket", "Connection": "upgrade"}, True),
        ("GET", {"Upgrade": "h2c", "Connection": "Upgrade"}, False),
        ("GET", {"Upgrade": "websocket"}, False),
        ("POST", {"Upgrade": "websocket", "Connection": "Upgrade"}, False),
    ],
)
def test_is_websocket_upgrade(method: str, headers: dict[str, str], expected: bool) -> None:
    """Only a GET with Upgrade: websocket and an upgrade Connection token is a websocket upgrade."""
    assert is_websocket_upgrade(make_mocked_request(method, "/ws", headers=headers)) is expected


async def _raw_handshake(client: Client, extra: bytes = b"") -> bytes:
    """A websocket handshake on a raw socket (no client library adding headers); the proxy's answer head."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_upstream_handshake_adds_no_accept_encoding_or_user_agent(echo: tuple[Client, EchoLog]) -> None:
    """The back end's handshake carries no Accept, Accept-Encoding or User-Agent the client did not send, and the
    client's own User-Agent unchanged (README, HTTP behaviour: nothing added)."""
    client, log = echo
    head = await _raw_handshake(client)
    assert head.startswith(b"HTTP/1.1 101 ")
    head = await _raw_handshake(client, b"User-Agent: my-agent/1\r\nAccept: text/x\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    bare, sent = log.headers
    assert [n for n in ("Accept", "Accept-Encoding", "User-Agent") if n in bare] == []
    assert (sent.getall("User-Agent"), sent.getall("Accept"), "Accept-Encoding" in sent) == (
        ["my-agent/1"],
        ["text/x"],
        False,
    )
