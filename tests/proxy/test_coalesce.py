"""Write coalescing (`proxy.coalesce`): an iteration's first write goes out at once, later ones at its end, in
order; a connection holding a write flushes before it closes; and through the fast listener every client gets every
answer whole and in order, also one that half-closes right after its requests."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from proxy.coalesce import HOLD_LIMIT, WriteCoalescer, coalescer
from tests.proxy.app_fixtures import running_proxy, write_config

CLIENTS = 24  # connections sending at once: their answers are written in the same loop iterations


Links = list[tuple[asyncio.Transport, socket.socket]]


@pytest.fixture
async def links() -> AsyncIterator[Links]:
    """Three connected socket pairs, each as a transport on this loop (written by the test) and its peer socket
    (read by the test, without blocking)."""
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(3)]
    made: Links = []
    for ours, peer in pairs:
        peer.setblocking(False)
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        made.append((transport, peer))
    yield made
    for transport, _ in made:
        transport.abort()
    await asyncio.sleep(0)  # the transports' closing callbacks run
    for ours, peer in pairs:
        ours.close()
        peer.close()


@dataclass
class _Conn:
    """What a connection keeps for the coalescer: its transport and the round its write is held in."""

    transport: asyncio.Transport
    held: int


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b"(nothing yet)"


async def test_first_write_of_an_iteration_goes_out_at_once_later_ones_at_its_end(
    links: Links,
) -> None:
    """The first write reaches its peer before the loop runs again; the second waits for the iteration's end."""
    one, two, _ = (transport for transport, _ in links)
    writes = WriteCoalescer(asyncio.get_running_loop())
    assert writes.write(one, b"first") == 0
    assert writes.write(two, b"second") > 0
    assert _received(links[0][1]) == b"first"
    assert _received(links[1][1]) == b"(nothing yet)"
    await asyncio.sleep(0)  # the callbacks due now, the flush among them, run
    assert _received(links[1][1]) == b"second"
    assert writes.write(two, b"third") == 0  # a new iteration: its first write goes out at once
    assert _received(links[1][1]) == b"third"


async def test_writes_held_past_the_limit_go_out_while_the_iteration_goes_on(links: Links) -> None:
    """In an iteration that runs long, a write made after HOLD_LIMIT sends what the round held, and itself, at once;
    writes after it are held in a new round."""
    one, two, three = (transport for transport, _ in links)
    writes = WriteCoalescer(asyncio.get_running_loop())
    writes.write(one, b"x")
    assert writes.write(two, b"held") > 0
    time.sleep(HOLD_LIMIT * 4)  # noqa: ASYNC251 - the iteration's work goes on, blocking as a request's Python does
    assert writes.write(three, b"late") == 0
    assert _received(links[1][1]) == b"held"
    assert _received(links[2][1]) == b"late"
    assert writes.write(two, b"next") > 0
    assert _received(links[1][1]) == b"(nothing yet)"
    await asyncio.sleep(0)
    assert _received(links[1][1]) == b"next"


async def test_held_writes_keep_their_order_and_a_flush_before_close_sends_them_first(
    links: Links,
) -> None:
    """Writes held for one transport go out in the order made, and flushing before a close puts them ahead of EOF."""
    one, two, _ = (transport for transport, _ in links)
    writes = WriteCoalescer(asyncio.get_running_loop())
    writes.write(one, b"x")
    held = writes.write(two, b"a")
    assert held > 0
    assert writes.write(two, b"b") == held
    conn = _Conn(two, held)
    writes.release(conn)
    assert conn.held == 0
    two.close()
    await asyncio.sleep(0.05)
    peer = links[1][1]
    assert _received(peer) == b"ab"
    assert _received(peer) == b""  # then EOF


async def test_flushing_a_round_already_sent_sends_no_other_connections_writes_early(links: Links) -> None:
    """A connection whose held write went out with its round's flush does not, by flushing that old round before
    its next write, send a write another connection holds in the current round."""
    one, two, three = (transport for transport, _ in links)
    writes = WriteCoalescer(asyncio.get_running_loop())
    writes.write(one, b"x")
    old = writes.write(two, b"two")
    await asyncio.sleep(0)  # the round's flush
    assert _received(links[1][1]) == b"two"
    writes.write(one, b"y")
    assert writes.write(three, b"three") > old
    writes.release(_Conn(two, old))
    assert _received(links[2][1]) == b"(nothing yet)"
    await asyncio.sleep(0)
    assert _received(links[2][1]) == b"three"


async def test_a_held_write_to_a_transport_closed_meanwhile_is_dropped_quietly(
    links: Links, caplog: pytest.LogCaptureFixture
) -> None:
    """A transport aborted while its write is held gets nothing and logs nothing; the others get theirs."""
    one, two, three = (transport for transport, _ in links)
    writes = WriteCoalescer(asyncio.get_running_loop())
    writes.write(one, b"x")
    writes.write(two, b"lost")
    writes.write(three, b"kept")
    two.abort()
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        await asyncio.sleep(0.05)
    assert _received(links[2][1]) == b"kept"
    assert _received(links[1][1]) in (b"", b"(nothing yet)")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class _Refusing(asyncio.WriteTransport):
    """A stand-in for a broken transport (no real one refuses bytes on demand): write raises, abort is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("broken transport")

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


async def test_a_transport_that_refuses_its_held_write_is_aborted_and_the_others_still_get_theirs(
    links: Links, caplog: pytest.LogCaptureFixture
) -> None:
    """One failing write in a flush neither stops the writes after it nor leaves its connection hanging."""
    one, _, three = (transport for transport, _ in links)
    broken = _Refusing()
    writes = WriteCoalescer(asyncio.get_running_loop())
    writes.write(one, b"x")
    writes.write(broken, b"lost")
    writes.write(three, b"kept")
    with caplog.at_level(logging.ERROR, logger="strangler.proxy"):
        await asyncio.sleep(0)
    assert broken.aborted
    assert _received(links[2][1]) == b"kept"
    assert "a coalesced write failed" in caplog.text


async def test_one_coalescer_per_loop() -> None:
    """Client connections and upstream pools on one loop share its coalescer (one flush per iteration)."""
    loop = asyncio.get_running_loop()
    assert coalescer(loop) is coalescer(loop)


def _answers(data: bytes) -> list[tuple[int, dict[str, str]]]:
    """The status and JSON body of each response in `data`, in order (each with a Content-Length)."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), head[:80]
        length = next(int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        answers.append((int(head[9:12]), json.loads(rest[:length])))
        data = rest[length:]
    return answers


def _request(client: int, n: int) -> bytes:
    return b"GET /c%d/r%d HTTP/1.1\r\nHost: x\r\n\r\n" % (client, n)


async def _pipelined(port: int, requests: list[bytes], *, half_close: bool = False) -> bytes:
    count = len(requests)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(requests))
        if half_close:
            writer.write_eof()
        await writer.drain()
        data = b""
        async with asyncio.timeout(10):
            while len(_split(data)) < count:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
        return data
    finally:
        writer.close()


def _split(data: bytes) -> list[tuple[int, dict[str, str]]]:
    try:
        return _answers(data)
    except (AssertionError, StopIteration, ValueError):
        return []


@pytest.mark.parametrize("half_close", [False, True], ids=["keep-alive", "half-closed-after-requests"])
async def test_many_clients_at_once_get_every_answer_whole_and_in_order(
    legacy: TestServer, tmp_path: Path, half_close: bool
) -> None:
    """24 connections each pipeline 3 requests at once (and, half-closed, end their side right after): every
    connection reads its 3 answers whole, in request order, though most were held to an iteration's end."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    async with running_proxy(path, server="fast") as running:
        got = await asyncio.gather(
            *(
                _pipelined(running.proxy_port, [_request(client, n) for n in range(3)], half_close=half_close)
                for client in range(CLIENTS)
            )
        )
    for client, data in enumerate(got):
        assert [(status, body["path"]) for status, body in _answers(data)] == [
            (200, f"/c{client}/r{n}") for n in range(3)
        ]


async def test_an_answer_written_directly_after_a_held_one_comes_after_it(legacy: TestServer, tmp_path: Path) -> None:
    """A refusal (written by aiohttp's writer, not held) pipelined behind a proxied answer (held while other
    connections' answers go out) reaches the client after that answer, on every one of 24 connections."""
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port)
    refused = b"GET /c/a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n"  # an encoded slash: 400 encoded_slash
    async with running_proxy(path, server="fast") as running:
        got = await asyncio.gather(
            *(_pipelined(running.proxy_port, [_request(client, 0), refused]) for client in range(CLIENTS))
        )
    for client, data in enumerate(got):
        answers = _answers(data)
        assert [status for status, _ in answers] == [200, 400]
        assert answers[0][1]["path"] == f"/c{client}/r0"
