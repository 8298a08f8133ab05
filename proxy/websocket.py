"""WebSocket pass-through: open the upstream socket first, then accept the client and pump messages both ways.

Messages are re-framed rather than bytes spliced, so each side negotiates its own extensions; pings are answered
by aiohttp on each side. Whichever side closes first has its close code and reason passed on to the other.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from yarl import URL

from proxy.config.model import Timeouts, Upstream
from proxy.responses import error_response, kind_response
from proxy.tasks import TaskOwner

MAX_MESSAGE = 4 * 1024 * 1024  # aiohttp's default per message, on both sides

# The handshake headers belong to each connection; ws_connect writes its own.
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "connection",
        "upgrade",
    }
)
# Codes that describe a closure but may not be sent in a close frame (RFC 6455 §7.4.1).
_UNSENDABLE = frozenset({1005, 1006, 1015})
_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})

AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse[Any]
# What aiohttp's client adds to a request unasked; a proxied handshake carries only what the client sent.
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent")


def websocket_session() -> aiohttp.ClientSession:
    """The client session upstream websocket handshakes go through (one per proxy; needs a running loop): no
    cookie jar, no decompression, and none of aiohttp's automatic headers (README, HTTP behaviour: nothing added)."""
    return aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=_AUTO_HEADERS
    )


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    """A GET asking to switch to the websocket protocol (Connection: upgrade + Upgrade: websocket)."""
    if request.method != "GET":
        return False
    upgrade = request.headers.get("Upgrade", "")
    if "websocket" not in upgrade.lower():
        return False
    connection = request.headers.get("Connection", "")
    return any(t.strip().lower() == "upgrade" for t in connection.split(","))


def _requested_protocols(request: web.BaseRequest) -> tuple[str, ...]:
    values = request.headers.getall("Sec-WebSocket-Protocol", [])
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())


def _ws_url(upstream: Upstream, target: str) -> URL:
    scheme = "wss" if upstream.url.scheme in ("https", "wss") else "ws"
    origin = upstream.url.origin().with_scheme(scheme)
    return URL(str(origin) + target, encoded=True)


async def forward_websocket(
    request: web.BaseRequest,
    *,
    upstream: Upstream,
    session: aiohttp.ClientSession,
    target: str,
    headers: list[tuple[str, str]],
    timeouts: Timeouts,
    route_id: str | None,
    request_id: str,
    ssl_context: ssl.SSLContext | None = None,
) -> web.StreamResponse:
    """Proxy one websocket session; returns the client-side response (already finished) for the handler.

    `headers` are the cleaned end-to-end request headers (from `upstream_request_headers`): Cookie,
    Authorization, Host, X-Forwarded-* and X-Request-Id reach the upstream's handshake. An upstream that cannot
    be reached answers 502 (504 on a handshake timeout) before the client is accepted; an upstream that refuses
    the handshake has its status passed on.
    """
    protocols = _requested_protocols(request)
    send_headers = [(n, v) for n, v in headers if n.lower() not in _HANDSHAKE]
    try:
        async with asyncio.timeout(timeouts.connect + timeouts.read):
            up = await session.ws_connect(
                _ws_url(upstream, target),
                protocols=protocols,
                headers=send_headers,
                autoclose=False,
                autoping=True,
                max_msg_size=MAX_MESSAGE,
                ssl=ssl_context or True,  # an https upstream's own context (proxy.tls), else default checks
            )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if 400 <= exc.status < 600 else 502
        return error_response(status, "upstream_websocket_refused", route_id, request_id)
    except TimeoutError:
        return kind_response("timeout", route_id, request_id)
    except aiohttp.ClientSSLError:
        return kind_response("tls", route_id, request_id)
    except (aiohttp.ClientError, OSError):
        return kind_response("connect", route_id, request_id)

    client = web.WebSocketResponse(
        protocols=(up.protocol,) if up.protocol else (),
        autoclose=False,
        autoping=True,
        max_msg_size=MAX_MESSAGE,
    )
    client.headers["X-Request-Id"] = request_id
    owner = TaskOwner("websocket")
    try:
        await client.prepare(request)
        to_client = owner.start(_pump(up, client), name="ws-upstream-to-client")
        to_upstream = owner.start(_pump(client, up), name="ws-client-to-upstream")
        done, _ = await asyncio.wait({to_client, to_upstream}, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        code, message = first.result()
        if first is to_upstream:
            # A client websocket closed from another task while it is reading sends code 1000 instead of
            # ours, so its reader is stopped first.
            to_client.cancel()
            await asyncio.gather(to_client, return_exceptions=True)
        # Upstream first: answering the client closes its transport, after which aiohttp may cancel this handler.
        await up.close(code=code, message=message)
        await client.close(code=code, message=message)
    finally:
        await owner.close()
        await up.close(code=WSCloseCode.GOING_AWAY)  # no-op unless the client vanished mid-session
    return client


async def _pump(src: AnyWebSocket, dst: AnyWebSocket) -> tuple[int, bytes]:
    """Copy messages from src to dst until src ends; returns the close code and reason to pass on."""
    while True:
        msg = await src.receive()
        if msg.type is WSMsgType.TEXT:
            if not await _send(dst.send_str(msg.data)):
                break
        elif msg.type is WSMsgType.BINARY:
            if not await _send(dst.send_bytes(msg.data)):
                break
        elif msg.type is WSMsgType.CLOSE:
            # Not answered here: the caller closes both sides, upstream first.
            message = msg.extra.encode() if isinstance(msg.extra, str) else b""
            return _sendable(msg.data), message
        elif msg.type in _ENDED:
            break
    return _sendable(src.close_code), b""


async def _send(sending: Awaitable[None]) -> bool:
    """Await a send; False when the destination has gone (the session is then closed)."""
    try:
        await sending
    except (ConnectionError, RuntimeError):
        return False
    return True


def _sendable(code: int | None) -> int:
    """A close code that may go in a close frame: abnormal endings become 1001 (going away)."""
    if code is None or code == 1005:
        return WSCloseCode.OK
    if code in _UNSENDABLE:
        return WSCloseCode.GOING_AWAY
    return code
