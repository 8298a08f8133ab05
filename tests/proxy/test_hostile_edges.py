"""Hostile HTTP/1.1 edge cases on a raw socket against the real proxy (issue 10): batches where a bad request
follows a good one, header names and Host values a back end could read another way, transfer codings, upgrades,
early closes, and what the proxy adds to responses. Back ends and helpers are those of test_hostile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.app import RunningProxy
from tests.proxy.app_fixtures import (
    admin_url,
    dead_port,
    read_until_closed,
    running_proxy,
    url,
    wait_until,
    write_config,
)
from tests.proxy.test_hostile import (
    CHUNKED,
    POST,
    SMUGGLED,
    Answer,
    Backends,
    backends,
    get,
    parse_answers,
    proxy,
    until_closed,
)

__all__ = ["backends", "proxy"]  # the fixtures, re-used from test_hostile

GOOD = b"GET /legacy/first HTTP/1.1\r\nHost: a\r\n\r\n"
CL_TE = POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED


def assert_strangler_error(answer: Answer, status: int, error: str) -> None:
    """`answer` is strangler's own JSON error: the status, an X-Request-Id, the error name."""
    assert answer.status == status
    assert len(answer.headers["x-request-id"]) == 32
    assert answer.headers["content-type"].startswith("application/json")
    body = json.loads(answer.body)
    assert body["error"] == error
    assert body["request_id"] == answer.headers["x-request-id"]


async def raw_until_closed(proxy: RunningProxy, data: bytes, *, limit: float = 5.0) -> bytes:
    """The raw bytes the proxy sends back on a fresh connection until it closes it (TimeoutError if it does not)."""
    received, closed = await read_until_closed(proxy.proxy_port, data, limit=limit)
    if not closed:
        raise TimeoutError(f"the proxy kept the connection open past {limit} s")
    return received


# --- 1. a valid request followed by a malformed one in the same read --------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        CL_TE,
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        b"GET /public/x HTTP/1.1\r\n\r\n",
        CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["cl-te", "obs-fold", "no-host", "bad-chunk-size"],
)
async def test_valid_request_before_a_malformed_one_in_one_write_is_served(
    proxy: RunningProxy, backends: Backends, bad: bytes
) -> None:
    """A valid request and a malformed one in the same write: the valid one is forwarded and answered, then the
    malformed one gets strangler's 400, then the connection closes; nothing of the malformed one reaches a back end."""
    answers = await until_closed(proxy, GOOD + bad)
    assert [a.status for a in answers] == [200, 400]
    assert answers[0].body == b"legacy /legacy/first"
    assert_strangler_error(answers[1], 400, "bad_request")
    assert [s.target for s in backends.legacy.requests] == ["/legacy/first"]
    assert backends.admin.untouched
    assert backends.public.untouched


async def test_two_valid_requests_before_a_malformed_one_are_both_served(
    proxy: RunningProxy, backends: Backends
) -> None:
    """Every valid request ahead of the malformed one in the same write is served, in order."""
    data = GOOD + b"GET /admin/second HTTP/1.1\r\nHost: a\r\n\r\n" + CL_TE
    answers = await until_closed(proxy, data)
    assert [a.status for a in answers] == [200, 200, 400]
    assert [s.target for s in backends.admin.requests] == ["/admin/second"]
    assert backends.public.untouched


@pytest.mark.parametrize("path", [b"/public/x", b"/buffered/x"], ids=["streamed", "buffered-for-fallback"])
@pytest.mark.parametrize(
    ("first", "rest"),
    [
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"0\r\n\r\n"),
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", b"\r\n"),
        (b"Content-Length: 10\r\n\r\nhello", b"world"),
    ],
    ids=["chunked-last-chunk", "chunked-final-crlf", "content-length"],
)
async def test_request_pipelined_behind_a_body_finished_in_a_later_read_is_served(
    proxy: RunningProxy, backends: Backends, path: bytes, first: bytes, rest: bytes
) -> None:
    """A body completed by a later read that also carries the next request: both requests are answered (the
    parser stops after each request, so the rest of that read must still be parsed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: a\r\n" + first)
        await writer.drain()
        await asyncio.sleep(0.1)  # a separate read for the proxy (nothing to observe from outside)
        writer.write(rest + get(b"/public/two"))
        await writer.drain()
        async with asyncio.timeout(5.0):
            answers = parse_answers(await reader.read())
    finally:
        writer.close()
    assert [a.status for a in answers] == [200, 200]
    assert answers[1].body == b"public /public/two"


# --- 2. underscore header names, X-Real-IP ----------------------------------------------------------------------


async def test_header_names_with_underscores_are_dropped(proxy: RunningProxy, backends: Backends) -> None:
    """`X_Forwarded_For` (read as X-Forwarded-For by CGI/WSGI back ends) and every other header name holding an
    underscore never reach the back end (nginx's `underscores_in_headers off`); the request itself is served."""
    answers = await until_closed(proxy, get(b"/public/x", b"X_Forwarded_For: 6.6.6.6\r\n", b"My_Header: v\r\n"))
    assert [a.status for a in answers] == [200]
    (seen,) = backends.public.requests
    assert not [n for n, _ in seen.headers if "_" in n]
    assert b"6.6.6.6" not in backends.public.received
    assert seen.values("x-forwarded-for") == ["127.0.0.1"]


async def test_client_x_real_ip_is_replaced_by_the_peer_address(proxy: RunningProxy, backends: Backends) -> None:
    """An X-Real-IP from a client outside trusted_proxies is overridden with the peer's address, as X-Forwarded-For."""
    answers = await until_closed(proxy, get(b"/public/x", b"X-Real-IP: 6.6.6.6\r\n"))
    assert [a.status for a in answers] == [200]
    (seen,) = backends.public.requests
    assert seen.values("x-real-ip") == ["127.0.0.1"]
    assert b"6.6.6.6" not in backends.public.received


# --- 3. invalid Host values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [b"a@b", b"a b", b"evil.example/admin?x", b"a#b", b"a:b:c", b"a:8x", b"[::1", b"a\\b", b'a"b'],
    ids=["at", "space", "path-and-query", "hash", "two-colons", "bad-port", "open-bracket", "backslash", "quote"],
)
async def test_invalid_host_is_refused(proxy: RunningProxy, backends: Backends, host: bytes) -> None:
    """A Host that is not `host[:port]` (RFC 9112 3.2, RFC 3986 3.2.2) is a 400 JSON error reaching no back end."""
    answers = await until_closed(proxy, b"GET /public/x HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert [a.status for a in answers] == [400]
    assert_strangler_error(answers[0], 400, "bad_host")
    assert all(b.untouched for b in backends.all)


@pytest.mark.parametrize(
    "host", [b"a", b"example.com:8080", b"127.0.0.1", b"[::1]:80", b"xn--bcher-kva.example", b"a-b_c.example:"]
)
async def test_valid_host_is_served(proxy: RunningProxy, backends: Backends, host: bytes) -> None:
    """Names, IPv4, bracketed IPv6, ports and an empty port are valid Host values and are served."""
    answers = await until_closed(proxy, b"GET /public/x HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert [a.status for a in answers] == [200]
    (seen,) = backends.public.requests
    assert seen.values("x-forwarded-host") == [host.decode()]


# --- 8. the smaller ones ----------------------------------------------------------------------------------------


async def test_parser_rejection_uses_an_http11_status_line(proxy: RunningProxy) -> None:
    """aiohttp's parser refusals go out on an HTTP/1.1 status line, like every other answer."""
    received = await raw_until_closed(proxy, CL_TE)
    assert received.startswith(b"HTTP/1.1 400 ")


async def test_malformed_chunk_mid_stream_gets_a_json_error(proxy: RunningProxy, backends: Backends) -> None:
    """A chunked body that breaks after its head was forwarded is answered with strangler's JSON 400 (with an
    X-Request-Id), not a bare one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(CHUNKED + b"5\r\nhello\r\n")
        await writer.drain()
        await wait_until(lambda: b"hello" in backends.public.received)
        writer.write(b"zz\r\n")
        await writer.drain()
        async with asyncio.timeout(5.0):
            received = await reader.read()
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 400 ")
    (answer,) = parse_answers(received)
    assert_strangler_error(answer, 400, "bad_body")


async def test_a_chunk_refused_in_the_same_read_as_its_head_is_answered_at_once(
    proxy: RunningProxy, backends: Backends
) -> None:
    """A chunked request whose bad chunk arrives in the same read as its head, before any handler runs, is refused
    400 at once by both listeners (strangler's JSON answer); nothing waits for limits.body_timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(CHUNKED + b"5\r\nhello\r\nzz\r\n")
        await writer.drain()
        async with asyncio.timeout(5.0):
            received = await reader.read()
    finally:
        writer.close()
    (answer,) = parse_answers(received)
    assert_strangler_error(answer, 400, "bad_request")


@pytest.mark.parametrize("te", [b"gzip, chunked", b"deflate, chunked", b"x-custom, chunked", b"gzip,chunked"])
async def test_unsupported_transfer_coding_is_501(proxy: RunningProxy, backends: Backends, te: bytes) -> None:
    """A transfer coding other than chunked (gzip, deflate, anything) before the final chunked is not decoded by
    the proxy, so it is answered 501 (RFC 9112 6.1) and closed; nothing reaches a back end."""
    data = POST + b"Transfer-Encoding: " + te + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    answers = await until_closed(proxy, data)
    assert [a.status for a in answers] == [501]
    assert_strangler_error(answers[0], 501, "unsupported_transfer_coding")
    assert answers[0].headers["connection"] == "close"
    assert all(b.untouched for b in backends.all)


@pytest.mark.parametrize(
    "upgrade",
    [
        b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n",
    ],
    ids=["h2c", "websocket-refused"],
)
async def test_request_pipelined_after_an_ignored_upgrade_does_not_hang(
    proxy: RunningProxy, backends: Backends, upgrade: bytes
) -> None:
    """An Upgrade request that is not switched (h2c, which the proxy does not speak, or a websocket handshake the
    back end refuses) with a request pipelined behind it: the first is answered with Connection: close and the
    connection closes at once, instead of hanging on pipelined bytes the parser dropped."""
    data = b"GET /public/up HTTP/1.1\r\nHost: a\r\n" + upgrade + b"\r\n" + get(b"/public/after")
    answers = await until_closed(proxy, data, limit=4.0)
    assert answers[0].status != 101
    assert answers[-1].headers["connection"] == "close"
    assert all(b.untouched for b in (backends.admin, backends.legacy))


@pytest.mark.parametrize("path", [b"/public/x", b"/buffered/x"], ids=["streamed", "buffered-for-fallback"])
async def test_chunked_upload_over_max_body_closes_at_once(
    proxy: RunningProxy, backends: Backends, path: bytes
) -> None:
    """A chunked upload past limits.max_body (streamed on, or read whole for a fallback route) gets 413 and the
    connection is closed right after, while the client keeps the rest of its body unsent (no 10 s lingering)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n"
        with contextlib.suppress(ConnectionError):
            for _ in range(12):  # 12 MiB: past the default max_body of 10 MiB
                writer.write(chunk)
                await writer.drain()
        async with asyncio.timeout(3.0):  # aiohttp's lingering would hold it for 10 s
            received = b""
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    received += data
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 413 ")


async def test_no_server_header_is_added(proxy: RunningProxy, backends: Backends) -> None:
    """A response whose back end sent no Server header reaches the client without one (no Python/aiohttp banner)."""
    (answer,) = await until_closed(proxy, get(b"/public/x"))
    assert answer.status == 200
    assert "server" not in answer.headers


async def test_a_connect_burst_beyond_128_completes_without_syn_retransmits(proxy: RunningProxy) -> None:
    """400 connects arriving while the proxy accepts none (its event loop is busy) all complete their handshake in
    the kernel: the listen backlog is above aiohttp's 128, past which SYNs are dropped and retried after 1 s."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(400):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", proxy.proxy_port))
            sockets.append(sock)
        # The loop is blocked here on purpose (nothing is accepted); loopback handshakes take microseconds, the
        # first SYN retransmit comes after 1 s, so 0.5 s separates "in the backlog" from "dropped".
        pending = list(sockets)
        deadline = time.monotonic() + 0.5
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], 0.05)
            pending = [s for s in pending if s not in writable]
    finally:
        for sock in sockets:
            sock.close()
    assert len(pending) == 0, f"{len(pending)} of 400 connects still waiting for their SYN-ACK"


async def test_breaker_gauge_only_for_upstreams_a_breaker_gates(proxy: RunningProxy) -> None:
    """strangler_breaker_open lists only upstreams used as the new side of a fallback route (here `public`, by the
    `buffered` route), never legacy or an upstream no breaker gates."""
    async with aiohttp.ClientSession() as client, client.get(admin_url(proxy, "/metrics")) as resp:
        text = await resp.text()
    lines = [line for line in text.splitlines() if line.startswith("strangler_breaker_open{")]
    assert lines == ['strangler_breaker_open{upstream="public"} 0']


async def test_breaker_gauge_never_shows_legacy_and_follows_reloads(tmp_path: Path) -> None:
    """Failures of an upstream no breaker gates (legacy, unmatched traffic) make no breaker and no gauge series;
    a reload that removes the last fallback route removes the new side's breaker and its series too."""
    dead = dead_port()
    routes = '  - id: fb\n    match: {path: "/fb/**"}\n    mode: new\n    fallback: legacy\n'
    path = write_config(tmp_path / "routes.yaml", legacy=dead, new=dead, routes=routes)
    async with running_proxy(path, watch=False) as running, aiohttp.ClientSession() as client:
        for _ in range(6):
            async with client.get(url(running, "/elsewhere")) as resp:
                assert resp.status == 502
        state = running.state
        assert set(state.breakers) == {"new"}
        assert ("legacy",) not in state.metrics.breaker_state.values
        assert state.metrics.breaker_state.get(("new",)) == 0.0
        path.write_text(path.read_text().replace("    fallback: legacy\n", ""))
        assert (await running.reload("test")).ok
        assert state.breakers == {}
        assert ("new",) not in state.metrics.breaker_state.values


async def test_a_hundred_pipelined_requests_in_one_write_are_all_answered_in_order(
    proxy: RunningProxy, backends: Backends
) -> None:
    """100 requests written at once (more than the listener queues before it pauses reading) are each answered once,
    in order; only the last asks to close."""
    keep = b"".join(b"GET /public/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(99))
    answers = await until_closed(proxy, keep + get(b"/public/99"), limit=15.0)
    assert [(a.status, a.body) for a in answers] == [(200, b"public /public/%d" % i) for i in range(100)]
    assert [s.target for s in backends.public.requests] == [f"/public/{i}" for i in range(100)]


async def _half_closed(proxy: RunningProxy, data: bytes) -> list[Answer]:
    """Send `data`, half-close (shutdown SHUT_WR, as `nc -N` does) and read until the proxy closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(5.0):
            received = await reader.read()
    finally:
        writer.close()
    return parse_answers(received)


async def test_a_client_that_half_closes_after_its_request_gets_the_answer(
    proxy: RunningProxy, backends: Backends
) -> None:
    """A client that shuts down its sending side right after a request still reads the whole answer."""
    answers = await _half_closed(proxy, b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [(a.status, a.body) for a in answers] == [(200, b"public /public/x")]


async def test_pipelined_requests_before_a_half_close_are_all_answered(proxy: RunningProxy, backends: Backends) -> None:
    """Three keep-alive requests, then a half-close: all three are answered in order, then the connection closes."""
    data = b"".join(b"GET /public/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(3))
    answers = await _half_closed(proxy, data)
    assert [(a.status, a.body) for a in answers] == [(200, b"public /public/%d" % i) for i in range(3)]


async def test_a_half_close_inside_a_body_is_answered_without_reaching_a_back_end(
    proxy: RunningProxy, backends: Backends
) -> None:
    """A body cut short by a half-close (5 of 10 declared bytes) is answered 400 without waiting for body_timeout
    (30 s here; `_half_closed` gives up after 5), and no back end sees the request."""
    answers = await _half_closed(proxy, POST + b"Content-Length: 10\r\n\r\nhello")
    assert [a.status for a in answers] == [400]
    assert backends.public.untouched


async def test_a_head_answer_followed_by_a_body_is_served(proxy: RunningProxy, backends: Backends) -> None:
    """A back end that sends a body after its HEAD answer (the raw back end does): the client gets the answer's
    head (200, its Content-Length, no body), and the back end's connection is not used again."""
    [answer] = await until_closed(proxy, b"HEAD /public/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (answer.status, answer.headers["content-length"], answer.body) == (200, str(len(b"public /public/x")), b"")
    [after] = await until_closed(proxy, get(b"/public/y"))
    assert (after.status, after.body) == (200, b"public /public/y")
    assert backends.public.connections == 2
