"""The admin API on its own listener: health, readiness, metrics, routes, config and the token rules for writes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.admin import warn_if_exposed
from proxy.app import RunningProxy
from proxy.config.loader import load_config
from tests.proxy.app_fixtures import (
    TOKEN_ENV,
    admin_url,
    hits,
    running_proxy,
    url,
    write_config,
)

ROUTES = """\
  - id: orders
    match: {path: "/api/orders/{id}", methods: [GET]}
    mode: canary
    canary: {weight: 25}
    fallback: legacy
"""


@pytest.fixture
async def proxy(legacy: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningProxy]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert legacy.port is not None
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=legacy.port, routes=ROUTES)
    async with running_proxy(path, watch=False) as running:
        yield running


async def test_health_and_readiness(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """/healthz answers ok; /readyz is 200 while serving and 503 once draining."""
    async with client.get(admin_url(proxy, "/healthz")) as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"
    async with client.get(admin_url(proxy, "/readyz")) as resp:
        assert resp.status == 200
    proxy.state.draining = True
    async with client.get(admin_url(proxy, "/readyz")) as resp:
        assert resp.status == 503


async def test_metrics_endpoint(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """/metrics renders the Prometheus text format, including requests just served."""
    async with client.get(url(proxy, "/api/orders/1")) as resp:
        assert resp.status == 200
    async with client.get(admin_url(proxy, "/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    # canary at 25% without stickiness: either upstream may have served it
    assert 'strangler_requests_total{route="orders",upstream="' in text
    assert 'class="2xx"} 1' in text
    assert "# TYPE strangler_breaker_open gauge" in text


async def test_metrics_not_served_on_proxy_port(
    proxy: RunningProxy, legacy: TestServer, client: aiohttp.ClientSession
) -> None:
    """/metrics on the proxy port is an ordinary path forwarded to legacy; admin content never comes back."""
    async with client.get(url(proxy, "/metrics")) as resp:
        assert resp.status == 200
        body = await resp.text()
    assert "strangler_requests_total" not in body
    assert '"side": "legacy"' in body
    assert [h.path for h in hits(legacy)] == ["/metrics"]


async def test_routes_lists_active_routes(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """/routes shows each route's id, mode, upstreams, methods, path, weight, fallback and where copies go."""
    async with client.get(admin_url(proxy, "/routes")) as resp:
        data = await resp.json()
    assert data["routes"] == [
        {
            "id": "orders",
            "mode": "canary",
            "upstream": "new",
            "legacy": "legacy",
            "methods": ["GET"],
            "path": "/api/orders/{id}",
            "weight": 25.0,
            "fallback": True,
            "mirror_to": None,
        }
    ]


async def test_config_shows_source_and_generation(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """/config shows the file, the generation and the last reload result."""
    async with client.get(admin_url(proxy, "/config")) as resp:
        data = await resp.json()
    assert data["source"].endswith("routes.yaml")
    assert data["generation"] == 1
    assert data["last_reload"]["ok"] is True
    assert data["last_reload"]["errors"] == []


async def test_reload_disabled_without_token(proxy: RunningProxy, client: aiohttp.ClientSession) -> None:
    """With no token configured every write answers 403, even with an Authorization header."""
    async with client.post(admin_url(proxy, "/reload"), headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "writes disabled"


async def test_reload_token_rules(
    proxy: RunningProxy, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a token set: missing or wrong → 401, right → 200 and a new generation."""
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    async with client.post(admin_url(proxy, "/reload")) as resp:
        assert resp.status == 401
    async with client.post(admin_url(proxy, "/reload"), headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    async with client.post(admin_url(proxy, "/reload"), headers={"Authorization": "Basic s3cret-token"}) as resp:
        assert resp.status == 401
    async with client.post(admin_url(proxy, "/reload"), headers={"Authorization": "Bearer s3cret-token"}) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["ok"] is True
    assert data["generation"] == 2
    assert data["trigger"] == "admin"
    assert proxy.state.snapshot.generation == 2


async def test_reload_with_invalid_file_reports_errors(
    proxy: RunningProxy, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An authorized reload of a broken file answers 422 with the errors and keeps the old generation."""
    monkeypatch.setenv(TOKEN_ENV, "t")
    proxy.state.config.source.write_text("version: 1\nroutes: [{id: x}]\n", encoding="utf-8")
    async with client.post(admin_url(proxy, "/reload"), headers={"Authorization": "Bearer t"}) as resp:
        assert resp.status == 422
        data = await resp.json()
    assert data["ok"] is False
    assert data["errors"]
    assert data["generation"] == 1


def test_warns_when_exposed_without_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binding the admin API beyond loopback without a token logs a loud warning; loopback does not."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = load_config(write_config(tmp_path / "routes.yaml", legacy=1, new=2))
    with caplog.at_level(logging.WARNING, logger="strangler.admin"):
        warn_if_exposed(config, "127.0.0.1")
        assert not caplog.records
        warn_if_exposed(config, "0.0.0.0")
    assert "ADMIN API EXPOSED" in caplog.text
    caplog.clear()
    monkeypatch.setenv(TOKEN_ENV, "t")
    with caplog.at_level(logging.WARNING, logger="strangler.admin"):
        warn_if_exposed(config, "0.0.0.0")
    assert not caplog.records
