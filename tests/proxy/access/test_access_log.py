"""The access log on a running proxy with real loopback back ends: one line per request with the values served,
refusals logged, sampling, redaction, overflow counted, and a reload switching its format."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from proxy.events import ExchangeObserver, ExchangeStart
from tests.proxy.access.test_lines import COMBINED
from tests.proxy.app_fixtures import (
    admin_url,
    backend_app,
    dead_port,
    raw_exchange,
    running_proxy,
    status_of,
    url,
    wait_until,
    write_config,
)

ROUTES = """\
  - {id: orders, match: {path: "/api/orders/**"}, mode: shadow}
  - {id: search, match: {path: /search}, mode: new}
  - {id: flaky, match: {path: /flaky}, mode: new, upstream: dead, fallback: legacy}
"""


class QuietListener:
    """A shadow listener that takes every request and copies nothing: mirroring is on, as with the shadow side."""

    def request_received(self, start: ExchangeStart) -> ExchangeObserver | None:
        return None


@pytest.fixture
async def backends(aiohttp_server: Any) -> tuple[TestServer, TestServer]:
    return await aiohttp_server(backend_app("legacy")), await aiohttp_server(backend_app("new"))


def _config(tmp_path: Path, backends: tuple[TestServer, TestServer], access_log: str) -> Path:
    legacy, new = backends
    assert legacy.port is not None
    assert new.port is not None
    config = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=ROUTES)
    text = config.read_text().replace(
        "upstreams:\n", f"access_log: {access_log}\nupstreams:\n  dead: {{url: 'http://127.0.0.1:{dead_port()}'}}\n"
    )
    config.write_text(text)
    return config


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


async def _get(client: aiohttp.ClientSession, target: str, **kwargs: Any) -> int:
    async with client.get(target, **kwargs) as resp:
        await resp.read()
        return resp.status


async def test_json_line_per_request_has_every_key_with_the_served_values(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """Each request gives one JSON line: its status, bytes in and out as sent, route, mode, serving upstream,
    fallback true when legacy answered for a failed new side, shadow "mirrored" or the skip reason."""
    log = tmp_path / "access.log"
    config = _config(tmp_path, backends, f'{{path: "{log}"}}')
    async with running_proxy(config, listeners=[QuietListener()], watch=False) as running:
        port = running.proxy_port
        raw_get = await raw_exchange(port, b"GET /api/orders/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b"hello world"
        raw_post = await raw_exchange(
            port,
            b"POST /api/orders/7 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body),
        )
        async with aiohttp.ClientSession() as client:
            assert await _get(client, url(running, "/search")) == 200
            assert await _get(client, url(running, "/flaky")) == 200
            assert await _get(client, url(running, "/nowhere"), headers={"X-Request-Id": "req-42"}) == 200
        await wait_until(lambda: len(_lines(log)) == 5)
    docs = [orjson.loads(line) for line in _lines(log)]
    keys = ["time", "request_id", "client", "method", "path", "route", "mode", "upstream", "status", "bytes_in"]
    keys += ["bytes_out", "duration_us", "fallback", "shadow"]
    assert all(list(doc) == keys for doc in docs)
    # Lines are written in the order responses finish, which concurrent tasks may swap: found by request here.
    by_request = {(doc["method"], doc["path"]): doc for doc in docs}
    get, post = by_request["GET", "/api/orders/7"], by_request["POST", "/api/orders/7"]
    search, flaky, nowhere = (by_request["GET", path] for path in ("/search", "/flaky", "/nowhere"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", get["time"])
    assert (get["method"], get["path"], get["client"], get["status"]) == ("GET", "/api/orders/7", "127.0.0.1", 200)
    assert (get["route"], get["mode"], get["upstream"], get["fallback"]) == ("orders", "shadow", "legacy", False)
    assert get["shadow"] == "mirrored"
    assert (get["bytes_in"], get["bytes_out"]) == (0, len(raw_get))
    assert get["duration_us"] > 0
    assert len(get["request_id"]) == 32
    assert (post["method"], post["shadow"], post["bytes_in"], post["bytes_out"]) == (
        "POST",
        "method_not_mirrored",
        len(body),
        len(raw_post),
    )
    assert (search["route"], search["mode"], search["upstream"], search["shadow"]) == ("search", "new", "new", None)
    assert (flaky["route"], flaky["upstream"], flaky["fallback"], flaky["status"]) == ("flaky", "legacy", True, 200)
    assert (nowhere["route"], nowhere["mode"], nowhere["upstream"]) == (None, None, "legacy")
    assert nowhere["request_id"] == "req-42"


async def test_requests_refused_before_routing_are_logged(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """Refusals by the parser (malformed line, over-long header line) and by the handler (head past max_header_size,
    bad Host, HTTP/2.0) each log a line with their status and route null; an unparsed request logs method and path
    null."""
    log = tmp_path / "access.log"
    config = _config(tmp_path, backends, f'{{path: "{log}"}}')
    config.write_text(config.read_text() + "limits: {max_header_size: 4KiB}\n")
    async with running_proxy(config, watch=False) as running:
        port = running.proxy_port
        sent = {
            b"GARBAGE\r\n\r\n": 400,
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n": 400,  # a line past max_line_size
            b"GET /a HTTP/1.1\r\nHost: x\r\n" + (b"X-Big: " + b"a" * 1000 + b"\r\n") * 6 + b"\r\n": 431,
            b"GET /api/orders/1 HTTP/1.1\r\nHost: bad host\r\n\r\n": 400,
            b"GET /api/orders/1 HTTP/2.0\r\nHost: x\r\n\r\n": 505,
        }
        for data, status in sent.items():
            assert status_of(await raw_exchange(port, data)) == status
        await wait_until(lambda: len(_lines(log)) == len(sent))
    docs = [orjson.loads(line) for line in _lines(log)]
    assert sorted(doc["status"] for doc in docs) == sorted(sent.values())  # lines come in the order answers finish
    assert all(doc["route"] is None and doc["upstream"] is None and doc["shadow"] is None for doc in docs)
    unparsed = [(doc["path"], doc["status"]) for doc in docs if doc["method"] is None]
    assert unparsed == [(None, 400), (None, 400)]  # the malformed line and the over-long header line
    (version,) = (doc for doc in docs if doc["status"] == 505)
    assert (version["method"], version["path"]) == ("GET", "/api/orders/1")
    assert all(len(doc["request_id"]) == 32 and doc["bytes_out"] > 0 and doc["duration_us"] > 0 for doc in docs)


async def test_secret_query_values_never_reach_the_log(tmp_path: Path, backends: tuple[TestServer, TestServer]) -> None:
    """Values of redact.query parameters (built-in and added) are redacted in both formats; others are kept."""
    log = tmp_path / "access.log"
    config = _config(tmp_path, backends, f'{{path: "{log}", format: combined}}')
    config.write_text(config.read_text() + "store: {redact: {query: [session_key]}}\n")
    async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as client:
        target = url(running, "/api/orders/1?user=ann&token=s3cr3t&session_key=k3y")
        assert await _get(client, target) == 200
        await wait_until(lambda: len(_lines(log)) == 1)
    text = log.read_text()
    assert "s3cr3t" not in text
    assert "k3y" not in text
    assert '"GET /api/orders/1?user=ann&token=<redacted>&session_key=<redacted> HTTP/1.1" 200 ' in text


@pytest.mark.parametrize(("sample", "low", "high"), [(0.0, 0, 0), (0.5, 110, 290), (1.0, 400, 400)])
async def test_sample_logs_that_share_of_requests(
    tmp_path: Path, backends: tuple[TestServer, TestServer], sample: float, low: int, high: int
) -> None:
    """sample 0 logs nothing, 0.5 about half (binomial, n=400: the bounds are 9 standard deviations apart), 1 all."""
    log = tmp_path / "access.log"
    config = _config(tmp_path, backends, f'{{path: "{log}", sample: {sample}}}')
    async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as client:
        for _ in range(400):
            assert await _get(client, url(running, "/api/orders/1")) == 200
    # stopped: everything buffered is written
    assert low <= len(_lines(log)) <= high


async def test_lines_past_the_buffer_are_dropped_and_counted(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """A writer stuck on a full pipe never stalls requests: lines past the buffer are dropped and counted in
    /metrics and /stats; what was buffered is written once the pipe drains."""
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read yet
    fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)
    received = bytearray()
    drain = threading.Thread(target=_drain, args=(reader, received), daemon=True)
    try:
        config = _config(tmp_path, backends, f'{{path: "{fifo}"}}')
        async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as client:
            access = running.state.access_log
            assert access is not None
            access.sink.max_pending = 5
            for _ in range(60):  # about 15 lines fill the pipe; 5 more wait; the rest are dropped
                assert await _get(client, url(running, "/api/orders/1")) == 200
            async with client.get(admin_url(running, "/metrics")) as resp:
                metrics = await resp.text()
            async with client.get(admin_url(running, "/stats")) as resp:
                stats = await resp.json()
            dropped = stats["access_log"]["dropped"]
            assert stats["access_log"]["enabled"] is True
            assert dropped >= 60 - 5 - 4096 // 200
            assert f"strangler_access_log_dropped_total {dropped}\n" in metrics
            drain.start()  # the pipe drains: the writer finishes on stop
    finally:
        drain.join(10)
        with contextlib.suppress(OSError):
            os.close(reader)
    lines = bytes(received).splitlines()
    assert len(lines) == 60 - dropped
    assert all(orjson.loads(line)["status"] == 200 for line in lines)  # whole lines only


def _drain(fd: int, into: bytearray) -> None:
    os.set_blocking(fd, True)
    while chunk := os.read(fd, 65536):
        into += chunk


async def test_reload_switches_the_format_without_restart(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """A reload applies the new format to the next request; the lines before keep theirs, in the same file."""
    log = tmp_path / "access.log"
    config = _config(tmp_path, backends, f'{{path: "{log}", format: json}}')
    async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as client:
        assert await _get(client, url(running, "/api/orders/1")) == 200
        config.write_text(config.read_text().replace("format: json", "format: combined"))
        result = await running.reload("admin")
        assert result.ok, result.errors
        assert await _get(client, url(running, "/api/orders/2")) == 200
        await wait_until(lambda: len(_lines(log)) == 2)
    json_lines = [line for line in _lines(log) if line.startswith(b"{")]
    combined = [line for line in _lines(log) if not line.startswith(b"{")]
    assert [orjson.loads(line)["path"] for line in json_lines] == ["/api/orders/1"]
    assert len(combined) == 1
    found = COMBINED.match(combined[0].decode() + "\n")
    assert found is not None
    assert found["request"] == "GET /api/orders/2 HTTP/1.1"


async def test_no_access_log_section_writes_nothing_and_reports_it_off(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """Without access_log: the state holds no access log and /stats says so."""
    legacy, new = backends
    assert legacy.port is not None
    assert new.port is not None
    config = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port)
    async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as client:
        assert running.state.access_log is None
        assert await _get(client, url(running, "/x")) == 200
        async with client.get(admin_url(running, "/stats")) as resp:
            assert (await resp.json())["access_log"] == {"enabled": False, "dropped": 0}


async def test_a_path_that_cannot_be_opened_fails_the_start_and_a_reload_keeps_the_old_log(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """At start an unopenable access_log.path is an OSError naming it; on reload the previous log keeps going."""
    missing = tmp_path / "missing" / "access.log"
    config = _config(tmp_path, backends, f'{{path: "{missing}"}}')
    with pytest.raises(OSError, match=r"access_log\.path: cannot open"):
        async with running_proxy(config, watch=False):
            pass
    log = tmp_path / "access.log"
    config = _config(tmp_path, backends, f'{{path: "{log}"}}')
    async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as client:
        config.write_text(config.read_text().replace(str(log), str(missing)))
        assert (await running.reload("admin")).ok
        assert await _get(client, url(running, "/api/orders/1")) == 200
        await wait_until(lambda: len(_lines(log)) == 1)


async def test_reload_moves_the_log_to_a_new_path_and_applies_a_new_sample(
    tmp_path: Path, backends: tuple[TestServer, TestServer]
) -> None:
    """A reload with a new path writes the next lines to the new file (the old one keeps its lines); a reload with
    sample 0 stops logging; removing the block turns the log off."""
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    config = _config(tmp_path, backends, f'{{path: "{first}"}}')
    async with running_proxy(config, watch=False) as running, aiohttp.ClientSession() as client:
        assert await _get(client, url(running, "/api/orders/1")) == 200
        config.write_text(config.read_text().replace(str(first), str(second)))
        assert (await running.reload("admin")).ok
        assert await _get(client, url(running, "/api/orders/2")) == 200
        await wait_until(lambda: len(_lines(first)) == 1 and len(_lines(second)) == 1)
        config.write_text(config.read_text().replace(f'{{path: "{second}"}}', f'{{path: "{second}", sample: 0}}'))
        assert (await running.reload("admin")).ok
        assert await _get(client, url(running, "/api/orders/3")) == 200
        config.write_text(config.read_text().replace(f'access_log: {{path: "{second}", sample: 0}}\n', ""))
        assert (await running.reload("admin")).ok
        assert running.state.access_log is None
        assert await _get(client, url(running, "/api/orders/4")) == 200
    assert [orjson.loads(line)["path"] for line in _lines(first)] == ["/api/orders/1"]
    assert [orjson.loads(line)["path"] for line in _lines(second)] == ["/api/orders/2"]
