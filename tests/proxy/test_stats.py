"""GET /stats on the admin API: the live figures as JSON, the same counters /metrics renders."""

from __future__ import annotations

import json
import math
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from proxy.metrics import LATENCY_BUCKETS, WORKER_RESTARTS, Histogram
from proxy.percentiles import nearest_rank
from shadow.worker.bridge import RESTART_METRIC
from tests.proxy.stats_fixtures import ITEMS, proxy_with_traffic
from tests.reports.test_export import schema_errors
from tests.shadow.shadow_fixtures import backends, json_handler
from tests.shadow.worker_fixtures import until, worker_proxy

SCHEMA = Path(__file__).parents[2] / "docs" / "stats.schema.json"
_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def readme_example() -> dict[str, Any]:
    """The example /stats document in README's Admin API section."""
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**`GET /stats`**") :]
    found = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert found is not None
    example: dict[str, Any] = json.loads(found.group(1))
    return example


def samples(text: str) -> Samples:
    """The samples of a /metrics text with plain label values (enough for these tests; the proxy reads none)."""
    out: Samples = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found is None:
            continue
        labels = frozenset(_LABEL.findall(found.group(2) or ""))
        out.setdefault(found.group(1), {})[labels] = float(found.group(3))
    return out


def where(s: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for k, v in s.get(name, {}).items() if wanted <= k)


async def read_both(admin: str) -> tuple[dict[str, Any], Samples]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{admin}/stats") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            doc = await resp.json()
        async with session.get(f"{admin}/metrics") as resp:
            text = await resp.text()
    return doc, samples(text)


def bucket_bound_holds_rank(s: Samples, route: str, upstream: str, q: float, estimate_ms: float) -> bool:
    """The estimate is the first bucket bound whose cumulative count reaches the nearest rank (from /metrics)."""
    name = "strangler_request_duration_seconds_bucket"
    total = where(s, "strangler_request_duration_seconds_count", route=route, upstream=upstream)
    rank = nearest_rank(q, int(total))
    for bound in LATENCY_BUCKETS:
        if where(s, name, route=route, upstream=upstream, le=repr(bound) if bound % 1 else str(int(bound))) >= rank:
            return math.isclose(bound * 1000, estimate_ms)
    return math.isclose(LATENCY_BUCKETS[-1] * 1000, estimate_ms)


async def test_stats_agree_with_metrics_on_a_running_proxy(tmp_path: Path, aiohttp_server: AiohttpServer) -> None:
    """Per route: requests by side and status class, shadow outcomes by pair, compared and match rate, latency
    estimates, queues, breakers and rejections in /stats are the figures /metrics shows at the same moment."""
    async with proxy_with_traffic(tmp_path, aiohttp_server) as running:
        doc, s = await read_both(f"http://127.0.0.1:{running.admin_port}")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema_errors(doc, schema, schema) == []
    routes = {r["id"]: r for r in doc["routes"]}
    assert list(routes) == ["items", "search", "boom"]  # config order
    for rid, route in routes.items():
        for side in ("legacy", "new"):
            upstream = route["upstreams"][side]
            assert route["requests"][side] == where(s, "strangler_requests_total", route=rid, upstream=upstream)
            for klass, n in route["status"][side].items():
                assert n == where(s, "strangler_requests_total", route=rid, upstream=upstream, **{"class": klass})
            latency = route["latency_ms"][side]
            count = where(s, "strangler_request_duration_seconds_count", route=rid, upstream=upstream)
            if latency is None:
                assert count == 0
                continue
            assert latency["count"] == count
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                assert bucket_bound_holds_rank(s, rid, upstream, q, latency[name]), (rid, side, name)
        for pair, figures in route["shadow"].items():
            for outcome, n in figures["outcomes"].items():
                assert n == where(s, "strangler_shadow_total", route=rid, pair=pair, outcome=outcome)
    items, search, boom = routes["items"], routes["search"], routes["boom"]
    assert (items["mode"], items["requests"]) == ("shadow", {"legacy": ITEMS, "new": 0, "total": ITEMS})
    assert (search["mode"], search["requests"]) == ("new", {"legacy": 0, "new": 3, "total": 3})
    assert (boom["status"]["legacy"], boom["errors"]) == ({"5xx": 2}, 2)
    candidate, noise = items["shadow"]["candidate"]["outcomes"], items["shadow"]["noise"]["outcomes"]
    # new differs on items 0, 3, 6, 9; legacy's nonce on 0, 4, 8 makes those differ from new and from itself
    assert candidate == {"match": 6, "mismatch": 6}
    assert noise == {"match": 9, "mismatch": 3}
    assert (items["compared"], items["match_rate"]) == (12, 0.5)  # candidate pairs only, as the report counts
    assert search["shadow"]["candidate"]["outcomes"] == {}
    assert search["match_rate"] is None
    assert doc["unrouted"]["requests"] == where(s, "strangler_requests_total", route="unmatched") == 1
    assert doc["queues"] == {
        k["stage"]: v for k, v in ((dict(k), v) for k, v in s["strangler_shadow_queue_depth"].items())
    }
    assert doc["rejected"] == {dict(k)["reason"]: v for k, v in s.get("strangler_rejected_requests_total", {}).items()}
    breaker_names = {0.0: "closed", 0.5: "half_open", 1.0: "open"}
    assert doc["breakers"] == {dict(k)["upstream"]: breaker_names[v] for k, v in s["strangler_breaker_open"].items()}
    assert doc["worker"] == {"restarts": 0}
    # the schema names every field the proxy serves, and the README's example is such a document
    assert set(schema["required"]) == set(doc)
    assert set(schema["$defs"]["route"]["required"]) == set(items)
    example = readme_example()
    assert schema_errors(example, schema, schema) == []
    assert (set(example), set(example["routes"][0]), set(example["unrouted"])) == (
        set(doc),
        set(items),
        set(doc["unrouted"]),
    )


@pytest.mark.unit
def test_estimate_is_the_bound_of_the_bucket_holding_the_nearest_rank() -> None:
    """A histogram estimate is the upper bound of the bucket holding the nearest rank, over the series asked for;
    past the last finite bound it is that bound; None with no observations."""
    h = Histogram("h", "help", ("side",), buckets=(0.1, 0.2))
    for _ in range(50):
        h.observe(("a",), 0.05)
    for _ in range(50):
        h.observe(("b",), 0.15)
    assert h.estimate(0.5, [("a",), ("b",)]) == 0.1  # rank 50: the last sample of the first bucket
    assert h.estimate(0.51, [("a",), ("b",)]) == 0.2
    assert h.estimate(0.99, [("a",)]) == 0.1
    h.observe(("c",), 7.0)
    assert h.estimate(0.5, [("c",)]) == 0.2  # past the last bound
    assert h.estimate(0.5, [("d",)]) is None
    assert h.estimate(0.5, []) is None


async def test_stats_show_worker_restarts_and_drop_reasons_from_a_real_worker(tmp_path: Path) -> None:
    """With the shadow side in a worker process that is killed: /stats counts the restart and the copies dropped
    while it was down (by reason), as /metrics does, and the worker's own figures (match) reach /stats too."""
    async with (
        backends(json_handler({"v": 1}), json_handler({"v": 1})) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url) as wp,
    ):
        first = await wp.worker_started()
        for i in range(3):
            await wp.get(f"/api/before/{i}")
        await until(lambda: wp.shadow("match") == 3, "the first worker's report")
        os.kill(first, signal.SIGKILL)
        await until(lambda: wp.bridge.worker_pid is None, "the bridge to notice the dead worker")
        while wp.bridge.worker_pid is None and wp.shadow("dropped", "worker_down") < 2:
            await wp.get("/api/down")
        await wp.worker_started(other_than=first)
        doc, s = await read_both(wp.admin_url)
    assert WORKER_RESTARTS == RESTART_METRIC  # the name shadow.worker.bridge counts restarts under
    assert doc["worker"] == {"restarts": 1} == {"restarts": where(s, RESTART_METRIC)}
    [api] = doc["routes"]
    candidate = api["shadow"]["candidate"]
    assert candidate["outcomes"]["match"] == where(s, "strangler_shadow_total", route="api", outcome="match") == 3
    dropped = where(s, "strangler_shadow_total", route="api", outcome="dropped", reason="worker_down")
    assert candidate["reasons"] == {"dropped": {"worker_down": dropped}}
    assert dropped >= 1
    assert "worker_stream" in doc["queues"]
