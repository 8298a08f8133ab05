"""Merging workers' registries (`proxy.aggregate`): counters and histograms add up as if one process had seen it all;
gauges merge by their meaning."""

from __future__ import annotations

import json

from proxy.aggregate import gauge_merge, merge_registries, registry_document, registry_from_document
from proxy.metrics import STORE_FAILING, STORE_ROWS_LOST, Metrics


def _observe(metrics: Metrics, latencies: list[float], route: str = "orders") -> None:
    for value in latencies:
        metrics.requests.inc((route, "legacy", "2xx"))
        metrics.latency.observe((route, "legacy"), value)


def _documents(*registries: Metrics) -> list[dict[str, object]]:
    """Each registry as the worker serves it: through JSON, as on the wire."""
    return [json.loads(json.dumps(registry_document(m))) for m in registries]


def test_one_registry_round_trips_to_the_same_text() -> None:
    """A registry read back from its document renders exactly as the original (labels, order, extras)."""
    metrics = Metrics()
    _observe(metrics, [0.002, 0.03, 7.0])
    metrics.shadow.inc(("orders", "candidate", "mismatch", ""), 3)
    metrics.breaker_state.set(("new",), 0.5)
    metrics.extra_counter(STORE_ROWS_LOST, "Rows lost.", ("reason",)).inc(("disk_full",), 2)
    assert registry_from_document(_documents(metrics)[0]).render() == metrics.render()


def test_counters_and_histograms_merge_as_if_one_process_saw_everything() -> None:
    """Two workers' requests and latencies merged render the same text as one registry fed both workers' traffic:
    counters summed, histograms summed bucket by bucket with their sums."""
    first, second, whole = Metrics(), Metrics(), Metrics()
    a, b = [0.0004, 0.004, 0.2, 0.2], [0.004, 1.5, 45.0]
    _observe(first, a)
    _observe(second, b)
    _observe(second, [0.01], route="users")  # a series only one worker has
    _observe(whole, a + b)
    _observe(whole, [0.01], route="users")
    merged = merge_registries(_documents(first, second))
    assert merged.requests.values == whole.requests.values
    assert merged.latency.series == whole.latency.series
    assert merged.render() == whole.render()


def test_gauges_merge_by_meaning() -> None:
    """A breaker is as open as its most open worker, the config is good only when every worker's is, queue depths
    add up, and the store is failing when any worker's writer says so."""
    first, second = Metrics(), Metrics()
    first.breaker_state.set(("new",), 0.0)
    second.breaker_state.set(("new",), 1.0)
    first.config_ok.set((), 1)
    second.config_ok.set((), 0)
    first.shadow_queue.set(("bridge",), 3)
    second.shadow_queue.set(("bridge",), 4)
    first.extra_gauge(STORE_FAILING, "Failing.").set((), 0)
    second.extra_gauge(STORE_FAILING, "Failing.").set((), 1)
    merged = merge_registries(_documents(first, second))
    assert merged.breaker_state.get(("new",)) == 1.0
    assert merged.config_ok.get() == 0
    assert merged.shadow_queue.get(("bridge",)) == 7
    failing = merged.find_counter(STORE_FAILING)
    assert failing is not None
    assert failing.get() == 1
    assert gauge_merge("strangler_some_new_gauge")(2, 3) == 5  # not listed: summed


def test_shadow_side_metrics_are_merged_into_extras() -> None:
    """Metrics only the shadow side creates (in `extra`) come back under their names, summed, with their help."""
    first, second = Metrics(), Metrics()
    first.extra_counter(STORE_ROWS_LOST, "Rows lost.", ("reason",)).inc(("disk_full",), 2)
    second.extra_counter(STORE_ROWS_LOST, "Rows lost.", ("reason",)).inc(("disk_full",), 5)
    merged = merge_registries(_documents(first, second))
    lost = merged.find_counter(STORE_ROWS_LOST)
    assert lost is not None
    assert lost.get(("disk_full",)) == 7
    assert "# HELP strangler_store_rows_lost_total Rows lost." in merged.render()


def test_no_documents_merge_to_an_empty_registry() -> None:
    """With no worker reporting, the merge is an empty registry (every family, no series)."""
    assert merge_registries([]).render() == Metrics().render()
