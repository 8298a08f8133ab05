"""Run one corpus scenario the way production runs: its two back ends on loopback, the real proxy with the real
shadow listener writing a temp SQLite store, then `strangler report --format json` on that store.

    route = observe(scenario, folder)   # the scenario route's entry of the report JSON
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner, Result

from cli.main import app
from tests.shadow.shadow_fixtures import backends, shadow_proxy
from tests.verdicts.scenarios import Scenario


class HarnessError(RuntimeError):
    """The corpus could not run a scenario (not an AssertionError, so an xfail never hides it)."""


REPORT_FIELDS = 500  # more than any scenario has: the report lists every differing field


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`, mappings key by key (as the config merges a route over defaults)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


def route_block(scenario: Scenario) -> str:
    """The scenario's route as routes.yaml text: the corpus defaults with the scenario's keys over them."""
    base = {
        "id": scenario.name,
        "match": {"path": "/corpus/**"},
        "mode": "shadow",
        "readiness": {"min_compared": 10},
    }
    return yaml.safe_dump([merged(base, scenario.route)], sort_keys=False)


def invoke(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "160"}).invoke(app, list(args))


async def drive(scenario: Scenario, folder: Path) -> Path:
    """Send the scenario's requests through the real proxy (replaying afterwards if asked); the config path."""
    async with backends(scenario.legacy, scenario.new) as (legacy, new):
        async with shadow_proxy(folder, legacy.url, new.url, route_block(scenario)) as sp:
            for send in scenario.sends:
                for _ in range(send.count):
                    body = b'{"qty": 1}' if send.method not in ("GET", "HEAD", "OPTIONS") else None
                    async with sp.session.request(
                        send.method, sp.url + send.path, data=body, allow_redirects=False
                    ) as response:
                        await response.read()
                        if response.status >= 500:
                            raise HarnessError(f"{send.method} {send.path}: the proxy answered {response.status}")
        # The proxy is stopped here, so the store is flushed; the back ends still serve for a replay.
        config = folder / "routes.yaml"
        if scenario.replay:
            args = ("replay", "--route", scenario.name, "-c", str(config), "--format", "json")
            result = await asyncio.to_thread(invoke, *args)
            if result.exit_code != 0:
                raise HarnessError(f"replay failed: {result.output}")
            replayed = sum(r["replayed"] for r in json.loads(result.stdout)["routes"])
            if replayed != scenario.compared:
                raise HarnessError(f"replayed {replayed} requests, not the {scenario.compared} sent")
    return config


def observe(scenario: Scenario, folder: Path) -> dict[str, Any]:
    """The scenario route's entry in the JSON report of a fresh run of the scenario in `folder`."""
    config = asyncio.run(drive(scenario, folder))
    result = invoke("report", "-c", str(config), "--format", "json", "--fields", str(REPORT_FIELDS))
    if result.exit_code != 0:
        raise HarnessError(f"report failed: {result.output}")
    [route] = [r for r in json.loads(result.stdout)["routes"] if r["id"] == scenario.name]
    return dict(route)
