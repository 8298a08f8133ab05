"""Request bodies with a Content-Encoding pass through byte for byte (the proxy never decodes them)."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest

from proxy.config.model import SERVERS, Server
from tests.proxy.app_fixtures import running_proxy, write_config
from tests.proxy.fwd_fixtures import RawBackend

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_gzip_request_body_reaches_the_back_end_still_compressed(
    tmp_path: Path, server: Server, framing: str
) -> None:
    """A POST with Content-Encoding: gzip reaches the back end as the same compressed bytes, with its header."""
    backend = await RawBackend(OK).start()
    try:
        port = backend.url.port
        assert port is not None
        path = write_config(tmp_path / "routes.yaml", legacy=port, new=port)
        body = gzip.compress(b'{"name": "x"}' * 50)
        async with running_proxy(path, server=server) as running:
            reader, writer = await asyncio.open_connection("127.0.0.1", running.proxy_port)
            head = b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nConnection: close\r\n"
            if framing == "length":
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            else:
                writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert backend.bodies == [body]
        assert b"content-encoding: gzip" in backend.heads[0].lower()
    finally:
        await backend.close()
