"""A store filled the way production fills it: the demo legacy and new apps, the real proxy with the real shadow
listener, and the demo's traffic plan driven through the proxy port. Shared by the report, rollout and replay tests.

    config_path, db_path = await fill_store(tmp_path, requests=300)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from cli.demo.driver import drive, plan_requests
from cli.demo.legacy_app import make_legacy_app
from cli.demo.new_app import make_new_app
from proxy.app import start_proxy
from proxy.config.loader import load_config
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener

REPO_CONFIG = Path(__file__).resolve().parent.parent / "routes.yaml"
# The upstream addresses in routes.yaml (and expected in `config_text`): replaced by the apps' real ports.
LEGACY_URL = "http://127.0.0.1:9001"
NEW_URL = "http://127.0.0.1:9002"


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def write_config(tmp_path: Path, legacy_url: str, new_url: str, config_text: str | None = None) -> Path:
    """routes.yaml (or `config_text`) with the demo upstream URLs pointed at the running apps, in tmp_path.

    The store path in it (`store.path`, relative) then resolves inside tmp_path too.
    """
    text = config_text if config_text is not None else REPO_CONFIG.read_text()
    text = text.replace(LEGACY_URL, legacy_url).replace(NEW_URL, new_url)
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


async def fill_store(
    tmp_path: Path,
    *,
    requests: int = 300,
    config_text: str | None = None,
    plan_seed: int | None = None,
) -> tuple[Path, Path]:
    """Run `requests` demo requests through the real proxy + shadow pipeline; returns (config_path, db_path).

    `config_text` replaces the repository's routes.yaml; write the upstreams as http://127.0.0.1:9001 (legacy) and
    http://127.0.0.1:9002 (new). The proxy is stopped before returning, which flushes everything to the store.
    """
    runners: list[web.AppRunner] = []
    try:
        legacy_runner, legacy_url = await _start(make_legacy_app())
        runners.append(legacy_runner)
        new_runner, new_url = await _start(make_new_app())
        runners.append(new_runner)
        config_path = write_config(tmp_path, legacy_url, new_url, config_text)
        db_path = load_config(config_path).store.path

        def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
            return [ShadowListener.create(state.config, state.metrics, db_path)]

        running = await start_proxy(
            config_path, host="127.0.0.1", port=0, admin_port=0, listeners_factory=listeners, watch=False
        )
        try:
            plan = plan_requests(requests) if plan_seed is None else plan_requests(requests, plan_seed)
            await drive(f"http://127.0.0.1:{running.proxy_port}", plan)
        finally:
            await running.stop()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
    return config_path, db_path
