"""TLS, in one place: the client-facing listener's context (its certificate swapped on reload without dropping a
connection) and the context each https upstream is reached with (the proxy's pools, its websockets, the shadow side).

The listener keeps one `ssl.SSLContext` for its socket for its whole life. Its SNI callback, which OpenSSL runs for
every ClientHello (with or without a server name), hands the handshake the current certificate context, so a
reload only replaces that reference: new handshakes get the new certificate, open connections keep the one they
made theirs with. Files are named in errors by their config field (`TLSFileError`), so the loader can point at the
line that names them.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from proxy.config.model import Config, ListenTLS, TLSVersionName, Upstream

log = logging.getLogger("strangler.tls")

ALPN = ("http/1.1",)  # the only protocol the listener speaks; no HTTP/2
_VERSIONS: dict[TLSVersionName, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSFileError(Exception):
    """A certificate, key or CA file that cannot be used; `field` is its config key (cert, key, ca, client_cert,
    client_key)."""

    def __init__(self, field: str, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.field = field
        self.path = path
        self.reason = reason


def _read(field: str, path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError as exc:
        raise TLSFileError(field, path, f"cannot read the file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TLSFileError(field, path, "not a PEM file (binary content)") from exc


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, fields: tuple[str, str]) -> None:
    """Load a certificate chain and its key, naming the file at fault: unreadable, not PEM, or not a pair."""
    if "-----BEGIN CERTIFICATE-----" not in _read(fields[0], cert):
        raise TLSFileError(fields[0], cert, "not a PEM certificate (no BEGIN CERTIFICATE block)")
    key_text = _read(fields[1], key)
    if "PRIVATE KEY-----" not in key_text:
        raise TLSFileError(fields[1], key, "not a PEM private key (no BEGIN PRIVATE KEY block)")
    if "ENCRYPTED" in key_text:
        raise TLSFileError(fields[1], key, "the key is encrypted; give it unencrypted (openssl pkey -in KEY -out NEW)")
    try:  # a password callback, so an encrypted key that slipped through never prompts on the terminal
        ctx.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TLSFileError(fields[1], key, f"does not match the certificate in {cert}") from exc
        raise TLSFileError(fields[0], cert, f"cannot load it with {key}: {exc.reason or exc}") from exc
    except OSError as exc:
        raise TLSFileError(fields[0], cert, f"cannot load it: {exc.strerror or exc}") from exc


def _no_password() -> bytes:
    return b""


def server_context(tls: ListenTLS) -> ssl.SSLContext:
    """A server context with the listener's certificate, lowest version and ALPN (http/1.1). Raises TLSFileError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.set_alpn_protocols(list(ALPN))
    _load_chain(ctx, tls.cert, tls.key, ("cert", "key"))
    return ctx


def upstream_context(upstream: Upstream) -> ssl.SSLContext | None:
    """The client context for an https upstream (None for http): its `ca` bundle instead of the system's trust
    store, its client certificate for mutual TLS, or no verification at all with `verify: false`. Raises
    TLSFileError."""
    if upstream.url.scheme != "https":
        return None
    if upstream.ca is None:
        ctx = ssl.create_default_context()
    else:
        if "-----BEGIN CERTIFICATE-----" not in _read("ca", upstream.ca):
            raise TLSFileError("ca", upstream.ca, "not a PEM CA bundle (no BEGIN CERTIFICATE block)")
        try:  # the bundle alone is trusted, not the system's store
            ctx = ssl.create_default_context(cafile=str(upstream.ca))
        except (ssl.SSLError, OSError) as exc:
            raise TLSFileError("ca", upstream.ca, f"cannot load it: {exc}") from exc
    if not upstream.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if upstream.client_cert is not None and upstream.client_key is not None:
        _load_chain(ctx, upstream.client_cert, upstream.client_key, ("client_cert", "client_key"))
    ctx.set_alpn_protocols(list(ALPN))
    return ctx


FileSignatures = tuple[tuple[int, int, int] | None, ...]


def _signatures(paths: tuple[Path | None, ...]) -> FileSignatures:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        out.append(None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def listener_files(tls: ListenTLS | None) -> FileSignatures:
    """What the reloader watches besides routes.yaml: the listener's certificate and key files (mtime, size,
    inode: a rotation by rename shows too)."""
    return () if tls is None else _signatures((tls.cert, tls.key))


def upstream_tls_key(upstream: Upstream) -> tuple[object, ...]:
    """What an upstream's connections depend on besides its URL: its TLS settings and the files they name as they
    are now. Pools are kept across reloads only while this stays the same, so a SIGHUP after a CA or client
    certificate rotation reconnects with the new files."""
    files = (upstream.ca, upstream.client_cert, upstream.client_key)
    return (upstream.url, upstream.verify, files, _signatures(files) if upstream.url.scheme == "https" else ())


def warn_unverified(config: Config, before: Config | None = None) -> None:
    """Log a warning for every https upstream with `verify: false`: at start (`before` None), and on a reload for
    each one that this config turns it off for."""
    for name, upstream in config.upstreams.items():
        if upstream.verify or upstream.url.scheme != "https":
            continue
        old = None if before is None else before.upstreams.get(name)
        if old is None or old.verify or old.url.scheme != "https":
            log.warning(
                "upstream %s (%s): TLS verification is off (verify: false): any certificate is accepted, so "
                "traffic to it can be intercepted",
                name,
                upstream.url,
            )


class ListenerTLS:
    """One listener's TLS: `listening` is the context its socket is bound with, for its whole life; its SNI callback
    gives every new handshake `current`. `swap` replaces `current` (a context loaded off the loop), never touching
    connections already made."""

    def __init__(self, tls: ListenTLS) -> None:
        self.settings = tls
        self.current = server_context(tls)
        self.listening = server_context(tls)
        self.listening.sni_callback = self._select

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        ssl_object.context = self.current

    def swap(self, tls: ListenTLS, context: ssl.SSLContext) -> None:
        """Serve new handshakes with `context` (built by `server_context(tls)`). The lowest version is the
        listening context's own (OpenSSL takes it from there before the SNI callback runs), so it is set there."""
        self.settings = tls
        self.current = context
        self.listening.minimum_version = context.minimum_version
        log.info("listener certificate loaded from %s", tls.cert)
