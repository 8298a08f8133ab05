"""Network faults between strangler and its back ends, injected by a real TCP relay (tests/faults/tcp.py): resets,
silence, slow drips, delays and answers cut short reach the client as clean 502/504s or complete answers, and a
candidate's faults never reach the client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import RunningProxy
from proxy.events import ExchangeListener
from proxy.state import RuntimeState
from shadow.runner import ShadowListener
from tests.faults.tcp import Fault, FaultProxy
from tests.proxy.app_fixtures import backend_app, running_proxy, url, wait_until, write_config

ROUTES = """\
  - id: api
    match: {path: "/api/**"}
    mode: shadow
    shadow: {timeout: 1s}
"""
SETTINGS = "defaults: {timeouts: {connect: 1s, read: 500ms}}\n"


@dataclass
class Rig:
    running: RunningProxy
    legacy: FaultProxy
    new: FaultProxy
    session: aiohttp.ClientSession


@pytest.fixture
async def rig(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Rig]:
    """The proxy (with the shadow side in-process) whose legacy and new back ends sit behind fault relays."""
    legacy_app: TestServer = await aiohttp_server(backend_app("legacy"))
    new_app: TestServer = await aiohttp_server(backend_app("new"))
    assert legacy_app.port is not None
    assert new_app.port is not None
    legacy, new = await FaultProxy.start(legacy_app.port), await FaultProxy.start(new_app.port)
    path = write_config(tmp_path / "routes.yaml", legacy=legacy.port, new=new.port, routes=ROUTES, settings=SETTINGS)

    def listeners(state: RuntimeState) -> Sequence[ExchangeListener]:
        return [ShadowListener.create(state.config, state.metrics, tmp_path / "shadow.db")]

    try:
        async with (
            running_proxy(path, watch=False, listeners_factory=listeners) as running,
            aiohttp.ClientSession() as session,
        ):
            yield Rig(running, legacy, new, session)
    finally:
        await legacy.close()
        await new.close()


async def _get(rig: Rig, path: str) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with rig.session.get(url(rig.running, path)) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body, resp.headers


async def test_legacy_reset_is_a_502_with_request_id(rig: Rig) -> None:
    """A legacy that resets the connection: the client gets a JSON 502 with X-Request-Id, counted as reset."""
    rig.legacy.fault = Fault("reset")
    status, body, headers = await _get(rig, "/api/x")
    assert status == 502
    assert "error" in body
    assert "X-Request-Id" in headers
    errors = rig.running.state.metrics.upstream_errors.values
    assert sum(v for (up, _), v in errors.items() if up == "legacy") >= 1


async def test_legacy_blackhole_is_a_504(rig: Rig) -> None:
    """A legacy that accepts and never answers: a JSON 504 once the read timeout passes."""
    rig.legacy.fault = Fault("blackhole")
    status, body, _ = await _get(rig, "/api/x")
    assert status == 504
    assert "error" in body


async def test_legacy_drip_and_delay_still_answer_whole(rig: Rig) -> None:
    """A legacy answering 7 bytes at a time, or after 0.2 s: the client gets the complete answer."""
    rig.legacy.fault = Fault("drip", seconds=0.001, n=7)
    status, body, _ = await _get(rig, "/api/drip")
    assert (status, body["side"], body["path"]) == (200, "legacy", "/api/drip")
    rig.legacy.fault = Fault("delay", seconds=0.2)
    status, body, _ = await _get(rig, "/api/delay")
    assert (status, body["path"]) == (200, "/api/delay")


async def test_legacy_cut_short_is_a_502(rig: Rig) -> None:
    """A legacy whose answer stops after 20 bytes (mid-head): a clean 502, the proxy keeps serving."""
    rig.legacy.fault = Fault("close_after", n=20)
    status, _, _ = await _get(rig, "/api/cut")
    assert status == 502
    rig.legacy.fault = Fault("pass")
    status, body, _ = await _get(rig, "/api/after")
    assert (status, body["side"]) == (200, "legacy")


async def test_candidate_faults_never_reach_the_client(rig: Rig) -> None:
    """A candidate that resets, cuts its answer short or goes silent: clients get legacy's 200s, and each copy is
    counted as a candidate error."""
    shadow = rig.running.state.metrics.shadow
    for i, fault in enumerate((Fault("reset"), Fault("close_after", n=30), Fault("blackhole"))):
        rig.new.fault = fault
        status, body, _ = await _get(rig, f"/api/{i}")
        assert (status, body["side"]) == (200, "legacy")

        def errors(n: int = i + 1) -> bool:
            return sum(v for (_, _, outcome, _), v in shadow.values.items() if outcome == "candidate_error") >= n

        await wait_until(errors)
