"""benchmarks.bare_proxy, the ceiling `benchmarks.ceiling` measures, is a real proxy: every pipelined request
reaches the back end and every answer comes back whole and in order, with and without coalescing and work."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from benchmarks.bare_proxy import answer_end, serve
from benchmarks.ceiling import setups
from tests.proxy.app_fixtures import backend_app, free_port, wait_until


def test_answer_end_waits_for_the_whole_body() -> None:
    """An answer ends after its Content-Length body; a partial head or body is not an answer yet."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert answer_end(answer + b"HTTP/1.1 2") == len(answer)
    assert answer_end(answer[:-1]) == 0
    assert answer_end(b"HTTP/1.1 200 OK\r\nContent-") == 0
    assert answer_end(b"HTTP/1.1 204 No Content\r\n\r\n") == len(b"HTTP/1.1 204 No Content\r\n\r\n")


def test_every_bare_setup_is_measured_with_and_without_coalescing() -> None:
    """0 µs and each asked work figure, each once plain and once coalesced."""
    assert [(w, c) for _, w, c in setups([30.0])] == [(0.0, False), (0.0, True), (30.0, False), (30.0, True)]
    assert setups([0.0, 30.0]) == setups([30.0])  # 0 asked for again is not measured twice


async def _read_answers(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    buffer, answers = b"", list[bytes]()
    async with asyncio.timeout(10):
        while len(answers) < count:
            while end := answer_end(buffer):
                answers.append(buffer[:end])
                buffer = buffer[end:]
            if len(answers) < count:
                buffer += await reader.read(65536)
    return answers


@pytest.mark.parametrize(("work_us", "coalesce"), [(0.0, False), (0.0, True), (50.0, True)])
async def test_pipelined_requests_from_many_clients_come_back_in_order(
    aiohttp_server: Any, work_us: float, coalesce: bool
) -> None:
    """8 clients pipeline 4 requests each through the bare proxy: each reads its 4 answers, in request order."""
    backend: TestServer = await aiohttp_server(backend_app("legacy"))
    assert backend.port is not None
    port = free_port()
    server = asyncio.create_task(serve(port, backend.port, work_us, coalesce))

    async def listening() -> bool:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        return False

    async def client(n: int) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"GET /c%d/r%d HTTP/1.1\r\nHost: x\r\n\r\n" % (n, r) for r in range(4)))
        answers = await _read_answers(reader, 4)
        writer.close()
        return [json.loads(answer.partition(b"\r\n\r\n")[2])["path"] for answer in answers]

    try:
        await wait_until(listening)
        got = await asyncio.gather(*(client(n) for n in range(8)))
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    assert got == [[f"/c{n}/r{r}" for r in range(4)] for n in range(8)]
