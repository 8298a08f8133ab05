"""forward() end to end: a test proxy in front of real loopback back ends, through the real UpstreamPool."""

from __future__ import annotations

import asyncio
import hashlib
import io
import resource
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from proxy.config.model import Timeouts
from proxy.responses import error_response
from proxy.upstream.transport import UpstreamConnectError
from tests.proxy.app_fixtures import dead_port
from tests.proxy.fwd_fixtures import (
    LOG,
    LOOPBACK,
    MiB,
    ProxyServer,
    ProxySetup,
    RawBackend,
    Seen,
    count_body,
    proxy_app,
    upstream_at,
)

Client = TestClient[web.Request, web.Application]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MakeServer = Callable[..., Awaitable[TestServer]]
MakeClient = Callable[..., Awaitable[Client]]
StartBackend = Callable[[Handler], Awaitable[tuple[URL, list[Seen]]]]
StartProxy = Callable[[ProxySetup], Awaitable[Client]]


@pytest.fixture
def backend(aiohttp_server: MakeServer) -> StartBackend:
    """Start a real aiohttp back end with one catch-all handler that records what it received."""

    async def start(answer: Handler) -> tuple[URL, list[Seen]]:
        seen: list[Seen] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            seen.append(Seen(request.method, request.path_qs, request.raw_headers, 0))
            return await answer(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        server = await aiohttp_server(app)
        return server.make_url(""), seen

    return start


@pytest.fixture
def through(aiohttp_client: MakeClient) -> StartProxy:
    """Start the test proxy for a setup and return a client pointed at it."""

    async def start(setup: ProxySetup) -> Client:
        return await aiohttp_client(ProxyServer(proxy_app(setup)))

    return start


async def ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def test_hop_by_hop_headers_never_reach_the_backend(backend: StartBackend, through: StartProxy) -> None:
    """Hop-by-hop and Connection-named request headers are stripped before the back end."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url)))
    headers = {
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-End-To-End": "kept",
    }
    resp = await client.get("/a", headers=headers)
    assert resp.status == 200
    names = seen[0].names()
    assert not names & {"x-hop", "keep-alive", "te", "proxy-authorization", "proxy-connection"}
    assert seen[0].header("X-End-To-End") == ["kept"]
    assert "x-hop" not in ",".join(seen[0].header("Connection")).lower()


async def test_hop_by_hop_response_headers_never_reach_the_client(backend: StartBackend, through: StartProxy) -> None:
    """Hop-by-hop and Connection-named response headers from the back end are stripped."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text="hi",
            headers={
                "Connection": "keep-alive, X-Internal",
                "X-Internal": "secret",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "X-Public": "yes",
            },
        )

    url, _ = await backend(answer)
    client = await through(ProxySetup(upstream_at(url)))
    resp = await client.get("/a")
    assert await resp.text() == "hi"
    assert "X-Internal" not in resp.headers
    assert "Keep-Alive" not in resp.headers
    assert "Proxy-Authenticate" not in resp.headers
    assert "x-internal" not in resp.headers.get("Connection", "").lower()
    assert resp.headers["X-Public"] == "yes"


@pytest.mark.parametrize(
    ("data", "framing"),
    [
        (b"x" * 100, [b"content-length: 100"]),
        (b"y" * (200 * 1024), [b"content-length: 204800"]),
        (None, []),
    ],
    ids=["small", "streamed", "none"],
)
async def test_exactly_one_framing_header_at_the_backend(
    through: StartProxy, data: bytes | None, framing: list[bytes]
) -> None:
    """The back end sees exactly the one framing header the body needs (none for a bodyless GET)."""
    raw = await RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        if data is None:
            resp = await client.get("/f")
        else:
            resp = await client.post("/f", data=io.BytesIO(data))
        assert await resp.read() == b"ok"
        lines = raw.header_lines()
        got = [h for h in lines if h.startswith((b"content-length:", b"transfer-encoding:"))]
        assert got == framing
        assert raw.bodies[0] == (data or b"")
    finally:
        await raw.close()


async def test_chunked_request_body_is_sent_chunked_once(through: StartProxy) -> None:
    """A chunked client body reaches the back end with a single Transfer-Encoding: chunked and intact bytes."""
    raw = await RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").start()

    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([65 + i]) * 1000

    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        resp = await client.post("/c", data=parts())
        assert await resp.read() == b"ok"
        got = [h for h in raw.header_lines() if h.startswith((b"content-length:", b"transfer-encoding:"))]
        assert got == [b"transfer-encoding: chunked"]
        assert raw.bodies[0] == b"".join(bytes([65 + i]) * 1000 for i in range(5))
    finally:
        await raw.close()


async def test_host_rewritten_to_upstream(backend: StartBackend, through: StartProxy) -> None:
    """With host_header rewrite the back end sees its own host:port."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url)))
    await client.get("/h", headers={"Host": "shop.example"})
    assert seen[0].header("Host") == [f"127.0.0.1:{url.port}"]
    assert seen[0].header("X-Forwarded-Host") == ["shop.example"]


async def test_host_preserved(backend: StartBackend, through: StartProxy) -> None:
    """With host_header preserve the back end sees the client's Host."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url, host_header="preserve")))
    await client.get("/h", headers={"Host": "shop.example"})
    assert seen[0].header("Host") == ["shop.example"]


async def test_spoofed_forwarded_for_dropped_for_untrusted_peer(backend: StartBackend, through: StartProxy) -> None:
    """An untrusted client's X-Forwarded-For is replaced by its real address."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url)))
    await client.get("/x", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    assert seen[0].header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen[0].header("X-Forwarded-Proto") == ["http"]


async def test_forwarded_for_appended_for_trusted_peer(backend: StartBackend, through: StartProxy) -> None:
    """A trusted proxy's X-Forwarded-For chain is kept and extended with its address."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url), trusted=LOOPBACK))
    await client.get("/x", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    assert seen[0].header("X-Forwarded-For") == ["6.6.6.6, 127.0.0.1"]
    assert seen[0].header("X-Forwarded-Proto") == ["https"]


async def test_via_appended_both_ways(backend: StartBackend, through: StartProxy) -> None:
    """Via gets this hop added on the way to the back end and on the way back to the client."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(text="v", headers={"Via": "1.1 backend-cache"})

    url, seen = await backend(answer)
    client = await through(ProxySetup(upstream_at(url)))
    resp = await client.get("/v", headers={"Via": "1.1 cdn"})
    assert seen[0].header("Via") == ["1.1 cdn, 1.1 strangler"]
    assert resp.headers["Via"] == "1.1 backend-cache, 1.1 strangler"


async def test_request_id_generated_when_missing(backend: StartBackend, through: StartProxy) -> None:
    """Without an incoming id one is generated, sent upstream and returned to the client."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url)))
    resp = await client.get("/r")
    rid = resp.headers["X-Request-Id"]
    assert len(rid) == 32
    assert seen[0].header("X-Request-Id") == [rid]


async def test_valid_request_id_kept_and_invalid_replaced(backend: StartBackend, through: StartProxy) -> None:
    """A valid incoming id is kept end to end; an invalid one is replaced."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url)))
    resp = await client.get("/r", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    assert seen[0].header("X-Request-Id") == ["abc-123"]
    resp = await client.get("/r", headers={"X-Request-Id": "x" * 200})
    assert resp.headers["X-Request-Id"] != "x" * 200
    assert seen[1].header("X-Request-Id") == [resp.headers["X-Request-Id"]]


async def test_large_streamed_body_uses_little_memory(aiohttp_server: MakeServer, through: StartProxy) -> None:
    """A 50 MiB chunked upload streams through with peak RSS growth far below the body size."""
    total = 50 * MiB
    received: list[int] = []

    async def sink(request: web.Request) -> web.StreamResponse:
        received.append(await count_body(request))
        return web.Response(text="done")

    app = web.Application()
    app.router.add_post("/upload", sink)
    server = await aiohttp_server(app)
    client = await through(ProxySetup(upstream_at(server.make_url("")), max_body=100 * MiB))
    chunk = b"z" * (64 * 1024)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // len(chunk)):
            yield chunk

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    resp = await client.post("/upload", data=body())
    assert resp.status == 200
    assert await resp.text() == "done"
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert received == [total]
    assert growth_kib < 25 * 1024


async def test_known_length_body_streamed_intact(aiohttp_server: MakeServer, through: StartProxy) -> None:
    """A Content-Length body above the pre-read size arrives byte for byte."""
    payload = bytes(range(256)) * 8192  # 2 MiB
    digests: list[str] = []

    async def sink(request: web.Request) -> web.StreamResponse:
        digests.append(hashlib.sha256(await request.read()).hexdigest())
        return web.Response(text="ok")

    app = web.Application(client_max_size=4 * MiB)
    app.router.add_post("/up", sink)
    server = await aiohttp_server(app)
    client = await through(ProxySetup(upstream_at(server.make_url("")), max_body=4 * MiB))
    resp = await client.post("/up", data=io.BytesIO(payload))  # BytesIO: sent with Content-Length
    assert resp.status == 200
    assert digests == [hashlib.sha256(payload).hexdigest()]


async def test_response_streams_before_backend_finishes(backend: StartBackend, through: StartProxy) -> None:
    """The client gets the first chunk while the back end is still waiting to send the rest (SSE-style)."""
    release = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await release.wait()
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    url, _ = await backend(events)
    client = await through(ProxySetup(upstream_at(url)))
    try:
        resp = await client.get("/events")
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first == b"data: first\n\n"
        assert not release.is_set()
        release.set()
        assert await resp.read() == b"data: second\n\n"
        assert resp.headers["Transfer-Encoding"] == "chunked"
    finally:
        release.set()


async def test_client_gone_mid_stream_is_recorded(backend: StartBackend, through: StartProxy) -> None:
    """A client that hangs up mid-response ends the exchange as client_gone without a complete body."""
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first")
        await release.wait()
        for _ in range(100):
            await resp.write(b"x" * 65536)  # enough for the proxy to notice the closed client socket
        await resp.write_eof()
        return resp

    url, _ = await backend(stream)
    client = await through(ProxySetup(upstream_at(url), capture=10))
    try:
        resp = await client.get("/stream")
        assert await resp.content.readany() == b"first"
        resp.close()  # drops the connection mid-body
        release.set()
        log = client.app[LOG]
        for _ in range(100):
            if log.results:
                break
            await asyncio.sleep(0.05)
        [result] = log.results
        assert result.error == "client_gone"
        assert result.body_complete is False
    finally:
        release.set()


async def test_chunked_response_passes_through(through: StartProxy) -> None:
    """A chunked back-end response is re-chunked to the client with the same bytes."""
    raw = await RawBackend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ).start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        resp = await client.get("/chunked")
        assert await resp.read() == b"hello world"
        assert resp.headers.getall("Transfer-Encoding") == ["chunked"]
    finally:
        await raw.close()


async def test_content_length_over_limit_never_reaches_backend(backend: StartBackend, through: StartProxy) -> None:
    """A declared Content-Length above max_body is answered 413 before the back end is contacted."""
    url, seen = await backend(ok)
    client = await through(ProxySetup(upstream_at(url), max_body=1000))
    resp = await client.post("/big", data=b"x" * 5000)
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "request_too_large"
    assert body["route"] == "test-route"
    assert seen == []


async def test_chunked_body_over_limit_is_413(aiohttp_server: MakeServer, through: StartProxy) -> None:
    """A chunked body that grows past max_body while streaming is answered 413."""

    async def sink(request: web.Request) -> web.StreamResponse:
        await count_body(request)
        return web.Response(text="should not complete")

    app = web.Application()
    app.router.add_post("/big", sink)
    server = await aiohttp_server(app)
    client = await through(ProxySetup(upstream_at(server.make_url("")), max_body=100_000))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"x" * 10_000

    resp = await client.post("/big", data=body())
    assert resp.status == 413
    assert (await resp.json())["error"] == "request_too_large"
    assert client.app[LOG].results[-1].error == "too_large"


async def test_refused_connection_is_502_json(through: StartProxy) -> None:
    """A back end that refuses connections gives 502 with error, route and request id in JSON."""
    client = await through(ProxySetup(upstream_at(f"http://127.0.0.1:{dead_port()}")))
    resp = await client.get("/down", headers={"X-Request-Id": "req-502"})
    assert resp.status == 502
    assert resp.content_type == "application/json"
    assert await resp.json() == {"error": "upstream_unreachable", "route": "test-route", "request_id": "req-502"}
    assert resp.headers["X-Request-Id"] == "req-502"
    result = client.app[LOG].results[-1]
    assert (result.status, result.upstream_status, result.error) == (502, 0, "connect")


async def test_slow_backend_is_504(backend: StartBackend, through: StartProxy) -> None:
    """A back end slower than the read timeout gives 504 upstream_timeout."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    url, _ = await backend(slow)
    client = await through(ProxySetup(upstream_at(url), timeouts=Timeouts(connect=1.0, read=0.2)))
    try:
        resp = await client.get("/slow")
        assert resp.status == 504
        assert (await resp.json())["error"] == "upstream_timeout"
        assert client.app[LOG].results[-1].error == "timeout"
    finally:
        release.set()


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"a" * 5000 + b"\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_mid_body_reset_is_incomplete_for_client(through: StartProxy, head: bytes) -> None:
    """A back end that breaks mid-body makes the client see an incomplete body, never a short complete one."""
    raw = await RawBackend(head, close_after=len(head)).start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        resp = await client.get("/broken")
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        await asyncio.sleep(0.05)
        assert client.app[LOG].results[-1].error == "reset"
    finally:
        await raw.close()


async def test_head_and_bodyless_statuses(backend: StartBackend, through: StartProxy) -> None:
    """HEAD keeps the back end's Content-Length without a body; 204 and 304 pass with no body."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/204":
            return web.Response(status=204)
        if request.path == "/304":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"0123456789")

    url, _ = await backend(answer)
    client = await through(ProxySetup(upstream_at(url)))
    head = await client.head("/thing")
    assert head.status == 200
    assert head.headers["Content-Length"] == "10"
    assert await head.read() == b""
    no_content = await client.get("/204")
    assert no_content.status == 204
    assert await no_content.read() == b""
    not_modified = await client.get("/304")
    assert not_modified.status == 304
    assert not_modified.headers["ETag"] == '"v1"'
    assert await not_modified.read() == b""
    after = await client.get("/thing")  # the connection is still usable after bodyless responses
    assert await after.read() == b"0123456789"


@pytest.mark.parametrize(("capture", "complete"), [(1000, True), (5, False)])
async def test_capture_tees_the_body(backend: StartBackend, through: StartProxy, capture: int, complete: bool) -> None:
    """The client gets the whole body while up to `capture` bytes are kept in the result."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"0123456789" * 10)

    url, _ = await backend(answer)
    client = await through(ProxySetup(upstream_at(url), capture=capture))
    resp = await client.get("/cap")
    assert await resp.read() == b"0123456789" * 10
    result = client.app[LOG].results[-1]
    assert result.body == (b"0123456789" * 10)[:capture]
    assert result.body_complete is complete
    assert (result.status, result.upstream_status, result.error) == (200, 200, None)
    names = {n.decode().lower() for n, _ in result.raw_response_headers}  # a whole answer: kept as sent
    assert "content-type" in names
    assert "content-length" not in names


async def test_fallback_offered_on_refused_connection(through: StartProxy) -> None:
    """With allow_fallback a refused connection raises FallbackAvailable instead of answering 502."""
    setup = ProxySetup(upstream_at(f"http://127.0.0.1:{dead_port()}"), allow_fallback=True, preread=True)
    client = await through(setup)
    resp = await client.post("/f", data=b"payload")
    assert await resp.text() == "fallback"
    [offered] = client.app[LOG].fallbacks
    assert isinstance(offered.error, UpstreamConnectError)


async def test_no_fallback_for_streamed_body(through: StartProxy) -> None:
    """A body already streamed cannot be re-sent, so a failure is answered 502 even with allow_fallback."""
    client = await through(ProxySetup(upstream_at(f"http://127.0.0.1:{dead_port()}"), allow_fallback=True))

    async def body() -> AsyncIterator[bytes]:
        yield b"streamed"

    resp = await client.post("/f", data=body())
    assert resp.status == 502
    assert client.app[LOG].fallbacks == []


def test_error_response_shape() -> None:
    """error_response builds a JSON body with error, route and request id, and the X-Request-Id header."""
    resp = error_response(400, "bad_path", None, "rid-7")
    assert resp.status == 400
    assert resp.content_type == "application/json"
    assert resp.body == b'{"error":"bad_path","route":null,"request_id":"rid-7"}'
    assert resp.headers["X-Request-Id"] == "rid-7"


async def test_stray_bytes_after_a_whole_response_keep_it(through: StartProxy) -> None:
    """An upstream that writes bytes past its Content-Length body in the same packet: the client still gets the
    whole response (they had made it a 502), and the connection is not used again."""
    raw = await RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSTRAY").start()
    try:
        client = await through(ProxySetup(upstream_at(raw.url)))
        resp = await client.get("/s")
        assert (resp.status, await resp.read()) == (200, b"ok")
    finally:
        await raw.close()
