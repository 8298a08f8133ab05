"""The admin API: health, readiness, metrics (Prometheus text), live figures (JSON, /stats), active routes and config,
an authenticated reload, and an authenticated store snapshot (`proxy.admin_store`).

A separate aiohttp application on its own listener (config.admin, 127.0.0.1:8081 by default), never on the proxy
port: every path on the proxy port belongs to the back ends. Reads are open; writes and store snapshots need
`Authorization: Bearer <token>` with the token from the environment variable named by admin.token_env, and are
disabled (403) when that variable is unset or empty.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.admin_store import add_store_routes
from proxy.config.model import Config, Route
from proxy.modes import mirror_target
from proxy.state import ReloadResult, RuntimeState
from proxy.stats import stats_document

log = logging.getLogger("strangler.admin")

Reload = Callable[[str], Awaitable[ReloadResult]]

STATE_KEY = web.AppKey("state", RuntimeState)
RELOAD_KEY: web.AppKey[Reload] = web.AppKey("reload")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_token(config: Config) -> str | None:
    """The configured write token, or None when writes are disabled."""
    return os.environ.get(config.admin.token_env) or None


def warn_if_exposed(config: Config, host: str) -> None:
    """Log loudly when the admin API listens beyond loopback without a token (reads then leak to the network)."""
    if not is_loopback(host) and admin_token(config) is None:
        log.warning(
            "ADMIN API EXPOSED: listening on %s without a token; set %s to protect it, or bind 127.0.0.1",
            host,
            config.admin.token_env,
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_admin_endpoints(app: web.Application, **replaced: Handler) -> None:
    """The admin API's endpoints, listed once: a lone proxy serves these handlers; `serve --workers N`'s
    supervisor (`proxy.supervisor_admin`) serves the same paths and replaces the handlers that merge or fan out
    (named by function name: readyz, metrics, stats, reload)."""
    handlers: dict[str, Handler] = {"readyz": readyz, "metrics": metrics, "stats": stats, "reload": reload_view}
    unknown = replaced.keys() - handlers.keys()
    if unknown:
        raise TypeError(f"no admin endpoint named {', '.join(sorted(unknown))}")
    handlers |= replaced
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", handlers["readyz"])
    app.router.add_get("/metrics", handlers["metrics"])
    app.router.add_get("/stats", handlers["stats"])
    app.router.add_get("/routes", routes)
    app.router.add_get("/config", config_view)
    app.router.add_post("/reload", handlers["reload"])


def create_admin_app(state: RuntimeState, reload: Reload) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    app[RELOAD_KEY] = reload
    add_admin_endpoints(app)
    add_store_routes(app, state, lambda request: _authorize(request, "store snapshots"))
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.draining:
        return web.Response(status=503, text="draining")
    if not state.ready:
        return web.Response(status=503, text="starting")
    return web.Response(text="ready")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE_KEY].metrics.render()
    return web.Response(body=body.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def stats(request: web.Request) -> web.Response:
    """The live figures as JSON (`proxy.stats`; docs/stats.schema.json), from the registry /metrics renders."""
    return web.json_response(stats_document(request.app[STATE_KEY]))


def route_view(route: Route) -> dict[str, Any]:
    return {
        "id": route.id,
        "mode": route.mode,
        "upstream": route.upstream,
        "legacy": route.legacy,
        "methods": sorted(route.match.methods) if route.match.methods is not None else None,
        "path": route.match.path,
        "weight": route.canary.weight if route.canary is not None else None,
        "fallback": route.fallback,
        # Where copies go (`proxy.modes`): legacy-served traffic to new under shadow/canary, new-served to legacy
        # under new + verify; None when the route mirrors nothing.
        "mirror_to": mirror_target(route, "legacy") or mirror_target(route, "new"),
    }


async def routes(request: web.Request) -> web.Response:
    snapshot = request.app[STATE_KEY].snapshot
    return web.json_response(
        {"generation": snapshot.generation, "routes": [route_view(r) for r in snapshot.config.routes]}
    )


def reload_view_data(result: ReloadResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "time": result.time,
        "generation": result.generation,
        "errors": list(result.errors),
        "trigger": result.trigger,
    }


async def config_view(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    snapshot = state.snapshot
    return web.json_response(
        {
            "source": str(snapshot.config.source),
            "generation": snapshot.generation,
            "last_reload": reload_view_data(state.last_reload),
        }
    )


def _authorize(request: web.Request, what: str = "writes") -> web.Response | None:
    """None when the request carries the admin token; else the refusal: 403 when no token is configured (`what`,
    e.g. writes, is then disabled), 401 for a missing or wrong token."""
    config = request.app[STATE_KEY].snapshot.config
    token = admin_token(config)
    if token is None:
        hint = f"set the environment variable {config.admin.token_env} (admin.token_env) on the proxy to enable them"
        return web.json_response({"error": f"{what} disabled", "hint": hint}, status=403)
    given = request.headers.get("Authorization", "")
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return web.json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": 'Bearer realm="strangler"'}
        )
    return None


async def reload_view(request: web.Request) -> web.Response:
    refusal = _authorize(request)
    if refusal is not None:
        return refusal
    result = await request.app[RELOAD_KEY]("admin")
    return web.json_response(reload_view_data(result), status=200 if result.ok else 422)
