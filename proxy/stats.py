"""The live figures the admin API serves as JSON at GET /stats, read from the in-memory metrics registry.

The same counters /metrics renders for Prometheus, arranged per route for people and tools (`strangler watch` reads
this document; nothing parses the Prometheus text back). The document is a dict of sections, each built by one
function of the running state (`SECTIONS`): a new figure is one function and one entry there. Its shape is
docs/stats.schema.json.

Latencies are client-facing (time to the last response byte) since the proxy started, estimated from the histogram
buckets: the upper bound of the bucket holding the nearest rank (`Histogram.estimate`), so at most one bucket above
the exact value. `strangler report` has exact percentiles of the stored pairs over a window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from proxy.config.model import Config, Route
from proxy.handler import UNMATCHED
from proxy.metrics import STORE_FAILING, STORE_ROWS_LOST, STORE_WRITE_ERRORS, WORKER_RESTARTS, Histogram, Metrics
from proxy.state import Snapshot

STATS_VERSION: Final = 1
QUANTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
PAIRS: Final = ("candidate", "noise")  # always present in a route's shadow section, zero when nothing was mirrored
ERROR_CLASSES: Final = ("5xx", "0xx")  # 5xx answers and upstream failures (0xx: no response at all)
LATENCY_NOTE: Final = (
    "client-facing, since the proxy started; estimates from histogram buckets (the upper bound of the bucket holding"
    " the nearest rank)"
)
_BREAKER: Final = {0.0: "closed", 0.5: "half_open", 1.0: "open"}


class StatsSource(Protocol):
    """What /stats reads: a registry and the serving snapshot (a `RuntimeState`, or `serve --workers`'s merged view)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def config(self) -> Config: ...


Section = Callable[[StatsSource], Any]


def _side(route: Route, upstream: str) -> str:
    """Which side of the route an upstream label is: the route's new upstream is "new", anything else "legacy"."""
    return "new" if upstream == route.upstream and route.upstream != route.legacy else "legacy"


def _latency(latency: Histogram, series: Iterable[tuple[str, ...]]) -> dict[str, Any] | None:
    wanted = list(series)
    count = sum(latency.count(labels) for labels in wanted)
    if not count:
        return None
    figures: dict[str, Any] = {}
    for name, q in QUANTILES:
        bound = latency.estimate(q, wanted)
        figures[name] = round(bound * 1000, 3) if bound is not None else None
    return {**figures, "count": count}


def _traffic(metrics: Metrics, route_id: str, side_of: Callable[[str], str]) -> dict[str, Any]:
    """Requests, status classes, errors and latency of one route label, by side."""
    requests = {"legacy": 0, "new": 0}
    status: dict[str, dict[str, int]] = {"legacy": {}, "new": {}}
    errors = 0
    for (rid, upstream, klass), value in sorted(metrics.requests.values.items()):
        if rid != route_id:
            continue
        side, n = side_of(upstream), int(value)
        requests[side] += n
        status[side][klass] = status[side].get(klass, 0) + n
        errors += n if klass in ERROR_CLASSES else 0
    series: dict[str, list[tuple[str, ...]]] = {"legacy": [], "new": []}
    for rid, upstream in metrics.latency.series:
        if rid == route_id:
            series[side_of(upstream)].append((rid, upstream))
    return {
        "requests": {**requests, "total": requests["legacy"] + requests["new"]},
        "status": status,
        "errors": errors,
        "latency_ms": {
            "all": _latency(metrics.latency, [*series["legacy"], *series["new"]]),
            "legacy": _latency(metrics.latency, series["legacy"]),
            "new": _latency(metrics.latency, series["new"]),
        },
    }


def _shadow(metrics: Metrics, route_id: str) -> dict[str, Any]:
    """Shadow outcomes by pair, with their reasons; compared and match rate of candidate pairs (as the report)."""
    pairs: dict[str, dict[str, Any]] = {p: {"outcomes": {}, "reasons": {}} for p in PAIRS}
    for (rid, pair, outcome, reason), value in sorted(metrics.shadow.values.items()):
        if rid != route_id:
            continue
        doc = pairs.setdefault(pair, {"outcomes": {}, "reasons": {}})
        doc["outcomes"][outcome] = doc["outcomes"].get(outcome, 0) + int(value)
        if reason:
            by_reason = doc["reasons"].setdefault(outcome, {})
            by_reason[reason] = by_reason.get(reason, 0) + int(value)
    outcomes = pairs["candidate"]["outcomes"]
    matched = outcomes.get("match", 0)
    compared = matched + outcomes.get("mismatch", 0)
    return {"shadow": pairs, "compared": compared, "match_rate": matched / compared if compared else None}


def _labelled(values: Mapping[tuple[str, ...], float], prefix: tuple[str, ...] = ()) -> dict[str, int]:
    """A counter's values under a label prefix, keyed by the next label."""
    out: dict[str, int] = {}
    for labels, value in sorted(values.items()):
        if labels[: len(prefix)] == prefix:
            key = labels[len(prefix)]
            out[key] = out.get(key, 0) + int(value)
    return out


def route_stats(metrics: Metrics, route: Route) -> dict[str, Any]:
    """One route's live figures."""
    return {
        "id": route.id,
        "mode": route.mode,
        "weight": route.canary.weight if route.canary is not None else None,
        "upstreams": {"legacy": route.legacy, "new": route.upstream},
        **_traffic(metrics, route.id, lambda upstream: _side(route, upstream)),
        **_shadow(metrics, route.id),
        "fallbacks": _labelled(metrics.fallbacks.values, (route.id,)),
    }


def _routes(state: StatsSource) -> list[dict[str, Any]]:
    return [route_stats(state.metrics, r) for r in state.config.routes]


def _unrouted(state: StatsSource) -> dict[str, Any]:
    """Requests no route matched (served by the default upstream, or refused)."""
    traffic = _traffic(state.metrics, UNMATCHED, lambda _: "legacy")
    return {
        "requests": traffic["requests"]["total"],
        "status": traffic["status"]["legacy"],
        "errors": traffic["errors"],
        "latency_ms": traffic["latency_ms"]["all"],
    }


def _queues(state: StatsSource) -> dict[str, int]:
    return {stage: int(v) for (stage,), v in sorted(state.metrics.shadow_queue.values.items())}


def _worker(state: StatsSource) -> dict[str, int]:
    restarts = state.metrics.find_counter(WORKER_RESTARTS)  # created by the bridge; absent with an in-process shadow
    return {"restarts": int(restarts.get()) if restarts is not None else 0}


def _store(state: StatsSource) -> dict[str, Any]:
    """The shadow store's write health (counted by the shadow side's writer; zero before its first report)."""
    metrics = state.metrics
    failing, errors, lost = (metrics.find_counter(n) for n in (STORE_FAILING, STORE_WRITE_ERRORS, STORE_ROWS_LOST))
    return {
        "failing": bool(failing is not None and sum(failing.values.values()) > 0),
        "write_errors": int(sum(errors.values.values())) if errors is not None else 0,
        "rows_lost": _labelled(lost.values) if lost is not None else {},
    }


def _breakers(state: StatsSource) -> dict[str, str]:
    return {up: _BREAKER.get(v, "open") for (up,), v in sorted(state.metrics.breaker_state.values.items())}


def _upstream_errors(state: StatsSource) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (upstream, kind), value in sorted(state.metrics.upstream_errors.values.items()):
        out.setdefault(upstream, {})[kind] = int(value)
    return out


SECTIONS: dict[str, Section] = {
    "routes": _routes,
    "unrouted": _unrouted,
    "queues": _queues,
    "worker": _worker,
    "store": _store,
    "breakers": _breakers,
    "rejected": lambda state: _labelled(state.metrics.rejected.values),
    "upstream_errors": _upstream_errors,
    "reloads": lambda state: _labelled(state.metrics.reloads.values),
    "access_log": lambda state: {
        "enabled": state.config.access_log is not None,
        "dropped": int(state.metrics.access_log_dropped.get()),
    },
}


def stats_document(state: StatsSource) -> dict[str, Any]:
    """Everything /stats serves, read in one go on the event loop (so one consistent instant)."""
    buckets = [round(b * 1000, 3) for b in state.metrics.latency.buckets]
    head = {
        "version": STATS_VERSION,
        "generation": state.snapshot.generation,
        "latency": {"unit": "ms", "estimate": LATENCY_NOTE, "buckets_ms": buckets},
    }
    return {**head, **{name: build(state) for name, build in SECTIONS.items()}}
