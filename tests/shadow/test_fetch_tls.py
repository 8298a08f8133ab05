"""Shadow copies to an https new side: the shadow worker process reaches it with the upstream's own TLS settings (its
`ca`), the same ones the proxy's pools use; without them the copy fails as a tls error and is still recorded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.app import start_proxy
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.worker.bridge import ShadowBridge
from tests.proxy.tls_fixtures import Pki, https_backend
from tests.shadow.shadow_fixtures import backends, exchanges, json_handler

DOC = {"id": 7, "name": "widget"}


def _config(tmp_path: Path, legacy_url: str, new_url: str, new_options: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(
        f"""\
version: 1
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
store: {{path: shadow.db}}
upstreams:
  legacy: {{url: "{legacy_url}"}}
  new:
    url: "{new_url}"
{new_options}
routes:
  - {{id: api, match: {{path: /api/**}}, mode: shadow}}
""",
        encoding="utf-8",
    )
    return path


async def _mirror_once(config: Path) -> None:
    """One GET through the real proxy with the shadow worker process; stopping flushes the store."""

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowBridge.create(state)]

    running = await start_proxy(config, port=0, admin_port=0, listeners_factory=listeners, watch=False)
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{running.proxy_port}/api/items/7") as resp,
        ):
            assert resp.status == 200
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("trusted", "outcome"), [(True, "match"), (False, "candidate_error")], ids=["with-ca", "without-ca"]
)
async def test_shadow_worker_copies_to_an_https_new_side_with_its_ca(
    tmp_path: Path, trusted: bool, outcome: str
) -> None:
    """The worker's copy to an https new side issued by a test CA verifies with the upstream's `ca` and compares
    as a match; without `ca` the copy fails its handshake and the pair is recorded as an error of reason tls."""
    pki = Pki(tmp_path)
    new_side = web.Application()
    new_side.router.add_get("/{tail:.*}", json_handler(DOC))
    async with backends(json_handler(DOC)) as (legacy,), https_backend(new_side, pki.server_context("new")) as new_url:
        options = f"    ca: {pki.ca_file.name}" if trusted else ""
        await _mirror_once(_config(tmp_path, legacy.url, new_url, options))
    (row,) = exchanges(tmp_path / "shadow.db")
    assert row["outcome"] == outcome
    if trusted:
        assert row["new_status"] == 200
    else:
        assert row["reason"] == "tls"
