"""TLS on the client-facing listener: HTTPS through the real proxy, X-Forwarded-Proto, ALPN, the lowest version, and
certificate swaps (file change, SIGHUP) that keep open keep-alive connections working."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from proxy.app import RunningProxy
from proxy.banner import startup_lines
from proxy.config.loader import load_config
from tests.proxy.app_fixtures import free_ports, hits, running_proxy, wait_until, write_config
from tests.proxy.tls_fixtures import Pki, tls_listen
from tests.serve_process import SERVE, child_process

CLEAR_LISTEN = "listen: {host: 127.0.0.1, port: 0}"


def write_tls_config(path: Path, legacy: int, cert: Path, key: Path, min_version: str = "1.2") -> Path:
    """A routes.yaml whose listener serves TLS with these files; every request goes to `legacy`."""
    write_config(path, legacy=legacy, new=legacy)
    path.write_text(path.read_text().replace(CLEAR_LISTEN, tls_listen(cert, key, min_version)))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@contextlib.asynccontextmanager
async def tls_proxy(tmp_path: Path, legacy: TestServer, pki: Pki, **kwargs: Any) -> AsyncIterator[RunningProxy]:
    """The real proxy serving TLS with certificate "one" in proxy.pem / proxy.key."""
    cert, key = pki.server("one", stem="proxy")
    assert legacy.port is not None
    config = write_tls_config(tmp_path / "routes.yaml", legacy.port, cert, key, kwargs.pop("min_version", "1.2"))
    async with running_proxy(config, **kwargs) as running:
        yield running


class TLSConnection:
    """One raw keep-alive TLS connection to the proxy: requests are sent on it one after another."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @property
    def ssl_object(self) -> ssl.SSLObject:
        obj = self.writer.get_extra_info("ssl_object")
        assert isinstance(obj, ssl.SSLObject)
        return obj

    @property
    def peer_der(self) -> bytes:
        der = self.ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return der

    async def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of one GET on this connection (kept alive)."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        async with asyncio.timeout(5):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
            return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def connect(port: int, context: ssl.SSLContext, server_hostname: str = "localhost") -> TLSConnection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname)
    return TLSConnection(reader, writer)


async def presented(port: int, pki: Pki) -> bytes:
    """The certificate a new connection is shown."""
    conn = await connect(port, pki.client_context())
    try:
        return conn.peer_der
    finally:
        await conn.close()


async def test_https_client_is_served_and_forwarded_proto_is_https(
    tmp_path: Path, legacy: TestServer, pki: Pki
) -> None:
    """A request over TLS reaches the back end with X-Forwarded-Proto: https and its answer comes back."""
    async with (
        tls_proxy(tmp_path, legacy, pki) as running,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as client,
        client.get(f"https://localhost:{running.proxy_port}/orders/1") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["side"] == "legacy"
    assert hits(legacy)[-1].headers["X-Forwarded-Proto"] == "https"


async def test_alpn_offers_only_http11(tmp_path: Path, legacy: TestServer, pki: Pki) -> None:
    """A client offering h2 and http/1.1 gets http/1.1: the listener never negotiates HTTP/2."""
    async with tls_proxy(tmp_path, legacy, pki) as running:
        conn = await connect(running.proxy_port, pki.client_context(alpn=("h2", "http/1.1")))
        try:
            assert conn.ssl_object.selected_alpn_protocol() == "http/1.1"
            assert (await conn.get("/x"))[0] == 200
        finally:
            await conn.close()


def _client_capped_at(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = pki.client_context()
    try:
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point of refusing it
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"the local OpenSSL cannot make a {version.name} client: {exc}")
    return ctx


@pytest.mark.parametrize(
    ("min_version", "offered"),
    [("1.3", ssl.TLSVersion.TLSv1_2), ("1.2", ssl.TLSVersion.TLSv1_1), ("1.3", ssl.TLSVersion.TLSv1_1)],
    ids=["tls1.2-under-1.3", "tls1.1-under-1.2", "tls1.1-under-1.3"],
)
async def test_older_versions_than_min_version_are_refused(
    tmp_path: Path, legacy: TestServer, pki: Pki, min_version: str, offered: ssl.TLSVersion
) -> None:
    """A client that speaks at most a version below min_version fails the handshake; none of its requests land."""
    async with tls_proxy(tmp_path, legacy, pki, min_version=min_version) as running:
        capped = _client_capped_at(pki, offered)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await connect(running.proxy_port, capped)
        conn = await connect(running.proxy_port, pki.client_context())
        try:
            allowed = ("TLSv1.3",) if min_version == "1.3" else ("TLSv1.2", "TLSv1.3")
            assert conn.ssl_object.version() in allowed
        finally:
            await conn.close()
    assert hits(legacy) == []


async def test_certificate_file_change_swaps_it_without_dropping_connections(
    tmp_path: Path, legacy: TestServer, pki: Pki
) -> None:
    """Rewriting cert and key: new connections get the new certificate (found by the file watcher), and a
    keep-alive connection opened before keeps working on the old one."""
    async with tls_proxy(tmp_path, legacy, pki, watch_interval=0.05) as running:
        before = await connect(running.proxy_port, pki.client_context())
        try:
            assert before.peer_der == pki.leaf_der("one")
            assert (await before.get("/a"))[0] == 200
            pki.server("two", stem="proxy")
            await wait_until(lambda: _shows(running.proxy_port, pki, "two"), limit=10.0)
            assert running.state.last_reload.ok
            assert running.state.last_reload.trigger == "file"
            assert (await before.get("/b"))[0] == 200  # the same connection, still open
            assert before.peer_der == pki.leaf_der("one")
        finally:
            await before.close()
    assert [hit.path for hit in hits(legacy)] == ["/a", "/b"]


async def _shows(port: int, pki: Pki, name: str) -> bool:
    return await presented(port, pki) == pki.leaf_der(name)


async def test_reload_swaps_the_certificate_and_keeps_open_connections(
    tmp_path: Path, legacy: TestServer, pki: Pki
) -> None:
    """A SIGHUP-triggered reload (file watching off) loads the rewritten certificate for new connections; an open
    keep-alive connection keeps being served."""
    async with tls_proxy(tmp_path, legacy, pki, watch=False) as running:
        before = await connect(running.proxy_port, pki.client_context())
        try:
            assert (await before.get("/a"))[0] == 200
            pki.server("two", stem="proxy")
            assert await presented(running.proxy_port, pki) == pki.leaf_der("one")  # nothing watches the files
            result = await running.reload("sighup")
            assert result.ok, result.errors
            assert await presented(running.proxy_port, pki) == pki.leaf_der("two")
            assert (await before.get("/b"))[0] == 200
        finally:
            await before.close()


async def test_a_bad_key_on_reload_keeps_the_old_certificate(tmp_path: Path, legacy: TestServer, pki: Pki) -> None:
    """A key that no longer matches the certificate fails the reload with the field and file named; the old
    certificate keeps serving new connections."""
    async with tls_proxy(tmp_path, legacy, pki, watch=False) as running:
        pki.server("two", stem="other")
        (tmp_path / "proxy.key").write_bytes((tmp_path / "other.key").read_bytes())
        result = await running.reload("sighup")
        assert not result.ok
        assert any("listen.tls.key" in error and str(tmp_path / "proxy.key") in error for error in result.errors)
        assert running.state.metrics.config_ok.values[()] == 0
        assert await presented(running.proxy_port, pki) == pki.leaf_der("one")


async def test_a_reload_raising_min_version_refuses_older_clients(tmp_path: Path, legacy: TestServer, pki: Pki) -> None:
    """min_version 1.2 -> 1.3 by a reload: a TLS 1.2 client that was served before is refused afterwards."""
    tls12 = _client_capped_at(pki, ssl.TLSVersion.TLSv1_2)
    async with tls_proxy(tmp_path, legacy, pki, watch=False) as running:
        await (await connect(running.proxy_port, tls12)).close()
        config = tmp_path / "routes.yaml"
        config.write_text(config.read_text().replace('min_version: "1.2"', 'min_version: "1.3"'))
        assert (await running.reload("sighup")).ok
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await connect(running.proxy_port, tls12)


async def test_websocket_upgrade_over_tls(tmp_path: Path, aiohttp_server: Any, pki: Pki) -> None:
    """A wss:// client reaches a websocket back end through the TLS listener; messages pass both ways."""

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    backend = await aiohttp_server(app)
    async with (
        tls_proxy(tmp_path, backend, pki) as running,
        aiohttp.ClientSession() as client,
        client.ws_connect(f"wss://localhost:{running.proxy_port}/ws", ssl=pki.client_context()) as ws,
    ):
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo:hi"


def test_banner_says_https_when_the_listener_serves_tls(tmp_path: Path, pki: Pki) -> None:
    """The start-up banner shows the proxy as https://; the admin listener stays http://."""
    cert, key = pki.server("one", stem="proxy")
    config = load_config(write_tls_config(tmp_path / "routes.yaml", 9, cert, key))
    lines = startup_lines(config, host="127.0.0.1", port=8443, admin_host="127.0.0.1", admin_port=8081, store="s.db",
                          shadow="off")  # fmt: skip
    assert "proxy  https://127.0.0.1:8443    admin  http://127.0.0.1:8081" in lines[1]


async def test_serve_reloads_the_certificate_on_sighup(tmp_path: Path, legacy: TestServer, pki: Pki) -> None:
    """The real serve() under uvloop: the banner says https, and SIGHUP swaps the certificate for new connections
    while an open keep-alive connection goes on working."""
    assert legacy.port is not None
    cert, key = pki.server("one", stem="proxy")
    path = write_tls_config(tmp_path / "routes.yaml", legacy.port, cert, key)
    proxy_port, admin_port = free_ports(2)
    command = [sys.executable, "-c", SERVE, str(path), str(proxy_port), str(admin_port)]
    async with child_process(command) as process:
        await wait_until(lambda: _accepts(proxy_port, pki), limit=20.0)
        before = await connect(proxy_port, pki.client_context())
        try:
            assert (await before.get("/a"))[0] == 200
            pki.server("two", stem="proxy")
            process.send_signal(signal.SIGHUP)
            await wait_until(lambda: _shows(proxy_port, pki, "two"), limit=10.0)
            assert (await before.get("/b"))[0] == 200
            async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{admin_port}/config") as resp:
                assert (await resp.json())["last_reload"]["trigger"] == "sighup"  # not the file watcher, later
        finally:
            await before.close()
        process.send_signal(signal.SIGTERM)
        await wait_until(lambda: process.poll() is not None, limit=20.0)
        banner = process.stderr.read().decode() if process.stderr else ""
        assert process.returncode == 0, banner
        assert f"proxy  https://127.0.0.1:{proxy_port}" in banner


async def _accepts(port: int, pki: Pki) -> bool:
    try:
        await presented(port, pki)
    except OSError:
        return False
    return True
