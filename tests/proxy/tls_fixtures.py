"""Certificates made in the test (trustme): a CA, server certificates for 127.0.0.1 and localhost, client
certificates; the PEM files a routes.yaml names; client contexts that trust that CA; and https back ends on loopback,
optionally requiring a client certificate (mutual TLS).

    pki = Pki(tmp_path)
    cert, key = pki.server("proxy")              # files for listen.tls
    async with https_backend(pki, backend_app("legacy")) as url: ...
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import trustme
from aiohttp import web


class Pki:
    """One test CA and the files it issues, written under `directory`."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        self.ca = trustme.CA(organization_name=f"strangler test {name}")
        self.ca_file = directory / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self._issued: dict[str, trustme.LeafCert] = {}

    def server(self, name: str, stem: str | None = None) -> tuple[Path, Path]:
        """A certificate `name` for 127.0.0.1 and localhost, as (chain file, key file) `stem`.pem / `stem`.key
        (`stem` defaults to `name`; an existing pair is overwritten, as a certificate rotation does)."""
        return self._write(name, self.ca.issue_cert("127.0.0.1", "localhost", common_name=name), stem)

    def client(self, name: str) -> tuple[Path, Path]:
        """A client certificate (for mutual TLS), as (chain file, key file)."""
        return self._write(name, self.ca.issue_cert(f"{name}@clients.test", common_name=name))

    def _write(self, name: str, leaf: trustme.LeafCert, stem: str | None = None) -> tuple[Path, Path]:
        self._issued[name] = leaf
        cert, key = self.directory / f"{stem or name}.pem", self.directory / f"{stem or name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        return cert, key

    def leaf_der(self, name: str) -> bytes:
        """The DER form of an issued leaf certificate, to compare with what a handshake presented."""
        return ssl.PEM_cert_to_DER_cert(self._issued[name].cert_chain_pems[0].bytes().decode())

    def client_context(self, *, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
        """A client context trusting this CA only, offering `alpn`."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.set_alpn_protocols(list(alpn))
        return ctx

    def server_context(self, name: str, *, client_ca: Pki | None = None) -> ssl.SSLContext:
        """A server context with a new certificate `name`; with `client_ca`, a client certificate it issued is
        required (mutual TLS)."""
        cert, key = self.server(name)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(client_ca.ca_file))
        return ctx


@contextlib.asynccontextmanager
async def https_backend(app: web.Application, context: ssl.SSLContext) -> AsyncIterator[str]:
    """Serve `app` over TLS on a free loopback port; yields its base URL https://127.0.0.1:PORT."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def tls_listen(cert: Path, key: Path, min_version: str = "1.2") -> str:
    """The `listen:` line of a routes.yaml serving TLS with these files (ports 0: the test binds any)."""
    return f'listen: {{host: 127.0.0.1, port: 0, tls: {{cert: "{cert}", key: "{key}", min_version: "{min_version}"}}}}'
