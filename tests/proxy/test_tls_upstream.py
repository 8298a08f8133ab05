"""TLS to upstreams: a custom CA bundle, an untrusted certificate (502 upstream_tls_failed, counted), `verify: false`
and its warning, and mutual TLS to a real aiohttp https back end that requires a client certificate."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.proxy.app_fixtures import HITS, TOKEN_ENV, backend_app, running_proxy
from tests.proxy.tls_fixtures import Pki, https_backend

UNVERIFIED = "TLS verification is off"


def write_upstream_config(path: Path, legacy_url: str, options: str = "") -> Path:
    """A routes.yaml whose only upstream is `legacy_url` with `options` (YAML lines under it, indented 4)."""
    path.write_text(
        f"""\
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0, token_env: {TOKEN_ENV}}}
upstreams:
  legacy:
    url: "{legacy_url}"
{options}
routes: []
""",
        encoding="utf-8",
    )
    return path


async def get(port: int, path: str = "/x") -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.json()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def test_https_upstream_with_its_ca_is_verified_and_served(tmp_path: Path, pki: Pki) -> None:
    """An https upstream whose certificate the configured `ca` issued is reached; the response comes back."""
    app = backend_app("legacy")
    async with https_backend(app, pki.server_context("legacy")) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url, f"    ca: {pki.ca_file.name}")
        async with running_proxy(config) as running:
            status, body = await get(running.proxy_port)
    assert (status, body["side"]) == (200, "legacy")
    assert app[HITS][0].headers["X-Forwarded-Proto"] == "http"


async def test_https_upstream_without_its_ca_fails_with_a_502_counted_as_tls(tmp_path: Path, pki: Pki) -> None:
    """Without `ca` the system trust store does not know the test CA: 502 upstream_tls_failed, nothing reaches the
    back end, and strangler_upstream_errors_total counts a tls error."""
    app = backend_app("legacy")
    async with https_backend(app, pki.server_context("legacy")) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url)
        async with running_proxy(config) as running:
            status, body = await get(running.proxy_port)
            assert running.state.metrics.upstream_errors.get(("legacy", "tls")) == 1
    assert (status, body["error"]) == (502, "upstream_tls_failed")
    assert app[HITS] == []


async def test_verify_false_accepts_any_certificate_and_warns(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """`verify: false` reaches an upstream no trusted CA issued, and the start logs a warning naming it."""
    caplog.set_level(logging.WARNING, logger="strangler.tls")
    async with https_backend(backend_app("legacy"), Pki(tmp_path, "stranger").server_context("legacy")) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url, "    verify: false")
        async with running_proxy(config, watch=False) as running:
            assert (await get(running.proxy_port))[0] == 200
    warnings = [r.getMessage() for r in caplog.records if UNVERIFIED in r.getMessage()]
    assert len(warnings) == 1
    assert "upstream legacy" in warnings[0]


async def test_a_reload_that_turns_verification_off_warns_again(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload that turns `verify` off logs the warning; one that leaves it off does not repeat it."""
    caplog.set_level(logging.WARNING, logger="strangler.tls")
    async with https_backend(backend_app("legacy"), pki.server_context("legacy")) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url, f"    ca: {pki.ca_file.name}")
        async with running_proxy(config, watch=False) as running:
            assert not [r for r in caplog.records if UNVERIFIED in r.getMessage()]
            write_upstream_config(config, url, "    verify: false")
            assert (await running.reload("sighup")).ok
            assert (await running.reload("sighup")).ok
            assert (await get(running.proxy_port))[0] == 200
    assert len([r for r in caplog.records if UNVERIFIED in r.getMessage()]) == 1


def _mtls_app() -> web.Application:
    """A back end answering with the common name of the client certificate it was shown."""

    async def handle(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        peer = transport.get_extra_info("peercert") or {}
        subject = dict(pair[0] for pair in peer.get("subject", ()))
        return web.json_response({"side": "legacy", "client": subject.get("commonName")})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def test_mutual_tls_presents_the_client_certificate(tmp_path: Path, pki: Pki) -> None:
    """A back end requiring a client certificate from its client CA serves strangler when client_cert and client_key
    are set, and sees that certificate."""
    clients = Pki(tmp_path, "clients")
    cert, key = clients.client("strangler")
    options = f"    ca: {pki.ca_file.name}\n    client_cert: {cert.name}\n    client_key: {key.name}"
    async with https_backend(_mtls_app(), pki.server_context("legacy", client_ca=clients)) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url, options)
        async with running_proxy(config) as running:
            status, body = await get(running.proxy_port)
    assert (status, body["client"]) == (200, "strangler")


@pytest.mark.parametrize("max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
async def test_mutual_tls_without_a_client_certificate_fails(
    tmp_path: Path, pki: Pki, max_version: ssl.TLSVersion
) -> None:
    """Without client_cert the same back end refuses the connection: the client gets a 502 and the back end's
    handler never runs. (With TLS 1.2 the refusal is part of the handshake, a tls error; with TLS 1.3 the server
    checks the certificate after the client's handshake has finished, so the refusal arrives as a reset.)"""
    clients = Pki(tmp_path, "clients")
    context = pki.server_context("legacy", client_ca=clients)
    context.maximum_version = max_version
    async with https_backend(_mtls_app(), context) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url, f"    ca: {pki.ca_file.name}")
        async with running_proxy(config) as running:
            status, body = await get(running.proxy_port)
            errors = running.state.metrics.upstream_errors
    assert status == 502
    expected = "tls" if max_version == ssl.TLSVersion.TLSv1_2 else "reset"
    assert body["error"] == f"upstream_{'tls_failed' if expected == 'tls' else 'reset'}"
    assert errors.get(("legacy", expected)) == 1


async def test_websocket_to_an_https_upstream_uses_its_ca(tmp_path: Path, pki: Pki) -> None:
    """A websocket through the proxy to an https (wss) upstream is verified with that upstream's `ca`."""

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    async with https_backend(app, pki.server_context("legacy")) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url, f"    ca: {pki.ca_file.name}")
        async with (
            running_proxy(config) as running,
            aiohttp.ClientSession() as client,
            client.ws_connect(f"http://127.0.0.1:{running.proxy_port}/ws") as ws,
        ):
            await ws.send_str("hi")
            assert await ws.receive_str(timeout=5) == "echo:hi"


async def test_a_reload_after_the_ca_file_changes_uses_the_new_bundle(tmp_path: Path, pki: Pki) -> None:
    """The `ca` file is rewritten in place (routes.yaml unchanged): a reload replaces the upstream's pool, so new
    connections verify against the new bundle (here one that does not trust the upstream, then the right one)."""
    bundle = tmp_path / "legacy-ca.pem"
    bundle.write_bytes(pki.ca_file.read_bytes())
    async with https_backend(backend_app("legacy"), pki.server_context("legacy")) as url:
        config = write_upstream_config(tmp_path / "routes.yaml", url, f"    ca: {bundle.name}")
        async with running_proxy(config, watch=False) as running:
            assert (await get(running.proxy_port))[0] == 200
            bundle.write_bytes(Pki(tmp_path, "stranger").ca_file.read_bytes())
            assert (await running.reload("sighup")).ok
            status, body = await get(running.proxy_port)
            assert (status, body["error"]) == (502, "upstream_tls_failed")
            bundle.write_bytes(pki.ca_file.read_bytes())
            assert (await running.reload("sighup")).ok
            assert (await get(running.proxy_port))[0] == 200
