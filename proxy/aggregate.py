"""Several proxy workers' metrics as one: each worker's registry as a JSON document (`registry_document`), read back
(`registry_from_document`) and merged (`merge_registries`) into one `Metrics`, which renders /metrics and feeds
/stats exactly as a single process does.

How each family merges (`GAUGE_MERGE`): counters are summed; histograms are summed bucket by bucket (every worker
runs the same code, so the same bounds), with their sums; gauges are summed unless their meaning says otherwise:
a circuit breaker is as open as its most open worker (max), the config is good only when every worker's last
reload was good (min), the store is failing when any worker's writer says so (max). Queue depths add up (sum).
Pure functions: no I/O here; `proxy.supervisor_admin` fetches the documents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from proxy.metrics import STORE_FAILING, Counter, Gauge, Histogram, Metric, Metrics

Merge = Callable[[float, float], float]
SUM: Final[Merge] = lambda a, b: a + b  # noqa: E731 - a named table entry
GAUGE_MERGE: Final[Mapping[str, Merge]] = {
    "strangler_breaker_open": max,
    "strangler_config_last_reload_ok": min,
    STORE_FAILING: max,
    "strangler_shadow_queue_depth": SUM,
}
REGISTRY_VERSION: Final = 1


def gauge_merge(name: str) -> Merge:
    """How a gauge family merges across workers: by `GAUGE_MERGE`, summed when not listed."""
    return GAUGE_MERGE.get(name, SUM)


def _metric_document(metric: Metric) -> dict[str, Any]:
    if isinstance(metric, Histogram):
        return {
            "name": metric.name,
            "kind": "histogram",
            "help": metric.help,
            "labels": list(metric.labelnames),
            "buckets": list(metric.buckets),
            "series": [[list(k), list(v)] for k, v in metric.series.items()],
        }
    return {
        "name": metric.name,
        "kind": "gauge" if isinstance(metric, Gauge) else "counter",
        "help": metric.help,
        "labels": list(metric.labelnames),
        "values": [[list(k), v] for k, v in metric.values.items()],
    }


def registry_document(metrics: Metrics) -> dict[str, Any]:
    """Every metric of one process as JSON: what a worker's private admin listener serves to the supervisor."""
    return {"version": REGISTRY_VERSION, "metrics": [_metric_document(m) for m in metrics.all()]}


def _find(metrics: Metrics, name: str) -> Metric | None:
    return next((m for m in metrics.all() if m.name == name), None)


def _target(metrics: Metrics, doc: Mapping[str, Any]) -> Metric | None:
    """The metric of `metrics` a document entry adds to: the first-class one of that name, or one made in `extra`
    (the shadow side's metrics). None when the kinds disagree (a document from other code: skipped)."""
    name, kind, labels = str(doc["name"]), str(doc["kind"]), tuple(doc["labels"])
    found = _find(metrics, name)
    if found is None:
        if kind == "histogram":
            found = Histogram(name, str(doc["help"]), labels, tuple(float(b) for b in doc["buckets"]))
            metrics.extra.append(found)
        elif kind == "gauge":
            found = metrics.extra_gauge(name, str(doc["help"]), labels)
        else:
            found = metrics.extra_counter(name, str(doc["help"]), labels)
    expected = {"histogram": Histogram, "gauge": Gauge, "counter": Counter}.get(kind)
    if expected is None or type(found) is not expected:
        return None
    if isinstance(found, Histogram) and list(found.buckets) != [float(b) for b in doc["buckets"]]:
        return None
    return found


def _add(target: Metric, doc: Mapping[str, Any], first: set[tuple[str, tuple[str, ...]]]) -> None:
    if isinstance(target, Histogram):
        for labels, row in doc["series"]:
            key = tuple(str(v) for v in labels)
            mine = target.series.get(key)
            target.series[key] = (
                [float(x) for x in row] if mine is None else [a + b for a, b in zip(mine, row, strict=True)]
            )
        return
    merge = gauge_merge(target.name) if isinstance(target, Gauge) else SUM
    for labels, value in doc["values"]:
        key = tuple(str(v) for v in labels)
        seen = (target.name, key)
        if seen in first:  # not yet set by any worker: a fresh registry may hold a start-up value (config_ok = 1)
            target.values[key] = merge(target.values[key], float(value))
        else:
            target.values[key] = float(value)
            first.add(seen)


def merge_registries(documents: Iterable[Mapping[str, Any]]) -> Metrics:
    """One `Metrics` holding the workers' figures merged family by family (module docstring); a series only some
    workers have is merged over those."""
    merged = Metrics()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for document in documents:
        for doc in document.get("metrics", ()):
            target = _target(merged, doc)
            if target is not None:
                _add(target, doc, seen)
    return merged


def registry_from_document(document: Mapping[str, Any]) -> Metrics:
    """One worker's registry read back (a merge of one)."""
    return merge_registries([document])
