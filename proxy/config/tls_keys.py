"""The TLS keys of routes.yaml (`listen.tls`, and `ca`, `client_cert`, `client_key`, `verify` on an upstream): their
paths resolved against the config file's directory and, when the caller serves traffic (start, reload, `validate`,
`replay`), every file loaded once by `proxy.tls`, so a missing, unreadable, non-PEM or mismatched file is a config
error at the line that names it. Commands that only read the config (report, explain, flip) skip the files: they
may run on a machine or as a user that cannot read the service's keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from proxy.config.files import resolve
from proxy.config.model import ListenTLS, TLSVersionName, Upstream
from proxy.config.yaml_walk import Issues, Table
from proxy.tls import TLSFileError, server_context, upstream_context

_UPSTREAM_KEYS = ("ca", "client_cert", "client_key", "verify")


def _report(exc: TLSFileError, block: Table, issues: Issues) -> None:
    if "does not match" in exc.reason:
        hint = "use the key issued with that certificate"
    elif "cannot read" in exc.reason:
        hint = "check the path (relative paths start at this file's directory) and that strangler may read it"
    else:
        hint = "give a PEM file"
    issues.add(block.at(exc.field), f"{exc.path}: {exc.reason}", hint, block.line_of(exc.field))


def _try_loading(load: Callable[[], object], block: Table, issues: Issues) -> None:
    """Load the files a TLS block names (the context is thrown away: this is the check); a refusal is an issue."""
    try:
        load()
    except TLSFileError as exc:
        _report(exc, block, issues)


def listen_tls(listen: Table, source: Path, issues: Issues, files: bool) -> ListenTLS | None:
    """`listen.tls`, its certificate and key checked by loading them; None when the listener is clear text."""
    if "tls" not in listen.lines:
        return None
    block = listen.table("tls")
    cert, key = block.get("cert", str), block.get("key", str)
    if cert is None or key is None:
        return None  # reported by the key table (required keys)
    version: TLSVersionName = "1.3" if block.get("min_version", str) == "1.3" else "1.2"
    tls = ListenTLS(resolve(cert, source), resolve(key, source), version)
    if files:
        _try_loading(lambda: server_context(tls), block, issues)
    return tls


def upstream_tls(upstream: Upstream, spec: Table, source: Path, issues: Issues, files: bool) -> Upstream:
    """`upstream` with its TLS file paths resolved, checked against its scheme and loaded once."""
    # `verify: true` is the default, so writing it on an http upstream changes nothing and is no mistake.
    given = [key for key in _UPSTREAM_KEYS if key in spec.lines and spec.values.get(key) is not True]
    if not given:
        return upstream
    if upstream.url.scheme != "https":
        hint = f"use an https:// url, or remove {', '.join(given)}"
        issues.add(spec.at(given[0]), "TLS options only apply to https:// upstreams", hint, spec.line_of(given[0]))
        return upstream
    paths = {key: resolve(value, source) for key in _UPSTREAM_KEYS[:3] if (value := spec.get(key, str)) is not None}
    built = replace(
        upstream, ca=paths.get("ca"), client_cert=paths.get("client_cert"), client_key=paths.get("client_key")
    )
    if (built.client_cert is None) != (built.client_key is None):
        missing = "client_key" if built.client_key is None else "client_cert"
        present = "client_cert" if missing == "client_key" else "client_key"
        issues.add(
            spec.at(present), f"{present} needs {missing}", f"add {missing}: to this upstream", spec.line_of(present)
        )
        return built
    if files:
        _try_loading(lambda: upstream_context(built), spec, issues)
    return built
