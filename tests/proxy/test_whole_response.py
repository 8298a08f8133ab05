"""The fast response path: small fixed-length answers written head and body in one go, saying what the slow path
(aiohttp's StreamResponse) says, and handing over to it whenever a head cannot be built safely."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.forwarding import WHOLE_LIMIT
from proxy.headers import end_to_end_response_headers, response_head
from tests.proxy.fwd_fixtures import LOG, ProxyServer, ProxySetup, RawBackend, proxy_app, upstream_at

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Raw = tuple[tuple[bytes, bytes], ...]

NGINX: Raw = (
    (b"Server", b"nginx"),
    (b"Date", b"Mon, 23 Nov 2026 14:34:20 GMT"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"2"),
    (b"Connection", b"keep-alive"),
)


def head_of(raw: Raw, **options: object) -> bytes | None:
    kwargs: dict[str, object] = {
        "status": 200,
        "reason": "OK",
        "version": (1, 1),
        "request_id": "rid-1",
        "extra": (("Via", "1.1 strangler"),),
        "content_length": 2,
        "keep_alive": True,
        "has_content": True,
    }
    kwargs.update(options)
    built = response_head(raw, **kwargs)  # type: ignore[arg-type]
    return None if built is None else built[0]


def test_head_keeps_end_to_end_headers_and_adds_this_hops() -> None:
    """The head carries the upstream's end-to-end headers, Content-Length, Via and X-Request-Id, nothing hop-by-hop."""
    assert head_of(NGINX) == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 23 Nov 2026 14:34:20 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nVia: 1.1 strangler\r\nX-Request-Id: rid-1\r\n\r\n"
    )


def test_kept_pairs_match_end_to_end_response_headers() -> None:
    """The pairs returned beside the head are exactly the end-to-end headers the slow path reports."""
    raw: Raw = (*NGINX, (b"Via", b"1.1 cache"), (b"X-Request-Id", b"theirs"), (b"Keep-Alive", b"timeout=5"))
    built = response_head(
        raw,
        status=200,
        reason="OK",
        version=(1, 1),
        request_id="rid-1",
        extra=(),
        content_length=2,
        keep_alive=True,
        has_content=True,
    )
    assert built is not None
    assert [(n.decode(), v.decode()) for n, v in built[1]] == end_to_end_response_headers(raw)


def test_upstream_via_is_extended_and_request_id_replaced() -> None:
    """The upstream's Via gets this hop appended and its X-Request-Id is replaced by ours, as in the slow path."""
    head = head_of(((b"Via", b"1.1 cache"), (b"X-Request-Id", b"theirs"), (b"Date", b"d"), (b"Server", b"s")))
    assert head is not None
    assert b"Via: 1.1 cache, 1.1 strangler\r\n" in head
    assert b"theirs" not in head
    assert head.count(b"X-Request-Id: rid-1\r\n") == 1


def test_missing_date_and_type_get_aiohttps_defaults_but_no_server() -> None:
    """Without Date or Content-Type from upstream the head adds them as aiohttp's writer would; without a Server
    header it adds none (aiohttp's would name Python and aiohttp)."""
    head = head_of(((b"Content-Length", b"2"),))
    assert head is not None
    assert b"\r\nDate: " in head
    assert b"\r\nServer:" not in head
    assert b"\r\nContent-Type: application/octet-stream\r\n" in head
    bodiless = head_of(((b"Date", b"d"),), has_content=False, content_length=None, status=204, reason="")
    assert bodiless is not None
    assert bodiless.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"Content-Type" not in bodiless
    assert b"Content-Length" not in bodiless


@pytest.mark.parametrize(
    ("version", "keep_alive", "line"),
    [((1, 1), True, None), ((1, 1), False, b"Connection: close"), ((1, 0), True, b"Connection: keep-alive")],
)
def test_connection_header_follows_keep_alive_and_version(
    version: tuple[int, int], keep_alive: bool, line: bytes | None
) -> None:
    """Connection is written as aiohttp does: close for an ending HTTP/1.1 exchange, keep-alive for HTTP/1.0."""
    head = head_of(NGINX, version=version, keep_alive=keep_alive)
    assert head is not None
    assert head.startswith(b"HTTP/%d.%d 200 OK\r\n" % version)
    connection = [h for h in head.split(b"\r\n") if h.lower().startswith(b"connection:")]
    assert connection == ([line] if line else [])


@pytest.mark.parametrize(
    "raw",
    [
        ((b"X-Split", b"a\rb"),),
        ((b"X-Split", b"a\nInjected: yes"),),
        ((b"X-Nul", b"a\x00b"),),
        ((b"Connection", b"X-Internal"), (b"X-Internal", b"1")),
    ],
    ids=["cr", "lf", "nul", "connection-named"],
)
def test_unsafe_or_unusual_heads_go_to_the_slow_path(raw: Raw) -> None:
    """A control character in a field, or a Connection header naming others, yields None (the slow path)."""
    assert head_of(raw) is None


@pytest.fixture
def through(aiohttp_client: MakeClient) -> Callable[[ProxySetup], Awaitable[Client]]:
    """Start the test proxy for a setup and return a client pointed at it."""

    async def start(setup: ProxySetup) -> Client:
        return await aiohttp_client(ProxyServer(proxy_app(setup)))

    return start


async def raw_exchange(client: Client, request: bytes) -> bytes:
    """Send one raw request to the proxy and read until it closes the connection."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def header_set(response: bytes) -> set[bytes]:
    """Header lines of a raw response, minus those that differ between any two answers (Date, X-Request-Id)."""
    head = response.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")[1:]
    return {line for line in lines if not line.lower().startswith((b"date:", b"x-request-id:"))}


@pytest.mark.parametrize("size", [WHOLE_LIMIT, WHOLE_LIMIT + 1], ids=["whole", "streamed"])
async def test_fast_and_slow_paths_send_the_same_response(
    through: Callable[[ProxySetup], Awaitable[Client]], size: int
) -> None:
    """A response at the size limit (one write) and one just over it (streamed) reach the client alike."""
    body = b"x" * size
    raw = await RawBackend(
        b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-App: 1\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%b" % (size, body)
    ).start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        got = await raw_exchange(client, b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await raw.close()
    assert got.startswith(b"HTTP/1.1 201 Created\r\n")
    assert got.endswith(b"\r\n\r\n" + body)
    assert header_set(got) == {
        b"Content-Type: text/plain",
        b"X-App: 1",
        b"Content-Length: %d" % size,
        b"Via: 1.1 strangler",
        b"Connection: close",
    }


async def test_head_request_keeps_the_declared_length_without_a_body(
    through: Callable[[ProxySetup], Awaitable[Client]],
) -> None:
    """A HEAD answer keeps the upstream's Content-Length and carries no body bytes."""
    raw = await RawBackend(b"HTTP/1.1 200 OK\r\nDate: d\r\nServer: s\r\nContent-Length: 5\r\n\r\n").start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        got = await raw_exchange(client, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await raw.close()
    assert b"\r\nContent-Length: 5\r\n" in got
    assert got.endswith(b"\r\n\r\n")


async def test_keep_alive_connection_carries_several_fast_responses(
    through: Callable[[ProxySetup], Awaitable[Client]],
) -> None:
    """Responses written by the fast path leave the client connection usable for the next request."""
    raw = await RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        reader, writer = await asyncio.open_connection(client.host, client.port)
        try:
            for _ in range(3):
                writer.write(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                assert b"Connection:" not in head
                assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
        finally:
            writer.close()
    finally:
        await raw.close()


async def test_upstream_field_with_a_control_character_never_reaches_the_client(
    through: Callable[[ProxySetup], Awaitable[Client]],
) -> None:
    """A response field holding a bare CR (accepted by the lenient upstream parser) is refused, not passed on."""
    raw = await RawBackend(b"HTTP/1.1 200 OK\r\nX-Bad: a\rInjected: 1\r\nContent-Length: 2\r\n\r\nok").start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        got = await raw_exchange(client, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await raw.close()
    assert b"Injected" not in got
    assert not got.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("keep_headers", [True, False])
async def test_response_headers_are_kept_undecoded_only_when_wanted(
    through: Callable[[ProxySetup], Awaitable[Client]], keep_headers: bool
) -> None:
    """A small answer reaches the client alike either way; its end-to-end headers are in the result only when asked,
    as the upstream sent them (listeners decode them: `ResponseSnapshot.decoded`)."""
    raw = await RawBackend(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-App: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    ).start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url), keep_headers=keep_headers))
        got = await raw_exchange(client, b"GET /w HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await raw.close()
    assert got.endswith(b"\r\n\r\nok")
    assert {b"Content-Type: text/plain", b"X-App: 1", b"Content-Length: 2"} <= header_set(got)
    result = client.app[LOG].results[-1]
    assert (result.status, result.error, result.body_complete) == (200, None, True)
    wanted = ((b"Content-Type", b"text/plain"), (b"X-App", b"1")) if keep_headers else ()
    assert result.raw_response_headers == wanted
    assert result.response_headers == ()
