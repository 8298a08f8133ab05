"""A small Prometheus registry: counters, gauges and histograms keyed by label tuples, rendered as text.

Hand-rolled on purpose: the per-request cost is a dict lookup on a tuple, and `proxy/` stays free of dependencies.
Metric objects are created once at start-up (`Metrics`) and survive hot reloads, so counters never reset.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import TypeVar

from proxy.percentiles import bucket_of_rank

LabelValues = tuple[str, ...]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


# Metrics the shadow side creates in `Metrics.extra` (the proxy never imports it): named here, once, so /stats can
# read them and the shadow side counts under the same names.
WORKER_RESTARTS = "strangler_shadow_worker_restarts_total"
STORE_WRITE_ERRORS = "strangler_store_write_errors_total"
STORE_ROWS_LOST = "strangler_store_rows_lost_total"
STORE_FAILING = "strangler_store_failing"


class Counter:
    __slots__ = ("help", "labelnames", "name", "values")

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.values: dict[LabelValues, float] = {}

    def inc(self, labels: LabelValues = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, labels: LabelValues = ()) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labelnames, labels)} {_num(value)}"


class Gauge(Counter):
    __slots__ = ()

    def set(self, labels: LabelValues, value: float) -> None:
        self.values[labels] = value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labelnames, labels)} {_num(value)}"


class Histogram:
    __slots__ = ("buckets", "help", "labelnames", "name", "series")

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self.name, self.help, self.labelnames, self.buckets = name, help, labelnames, buckets
        # per label tuple: [count per bucket (non-cumulative, last is +Inf)..., sum]
        self.series: dict[LabelValues, list[float]] = {}

    def observe(self, labels: LabelValues, value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def count(self, labels: LabelValues) -> int:
        row = self.series.get(labels)
        return int(sum(row[:-1])) if row else 0

    def estimate(self, q: float, series: Iterable[LabelValues]) -> float | None:
        """The q-quantile of the named series taken together, by nearest rank (`proxy.percentiles`) on the buckets:
        the upper bound of the bucket holding the rank, at most one bucket above the exact value; past the last
        finite bound, that bound. None when the series hold no observations."""
        counts = [0.0] * (len(self.buckets) + 1)
        for labels in series:
            row = self.series.get(labels)
            if row is not None:
                counts = [a + b for a, b in zip(counts, row[:-1], strict=True)]
        bucket = bucket_of_rank(counts, q)
        if bucket is None:
            return None
        return self.buckets[min(bucket, len(self.buckets) - 1)]

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, row in sorted(self.series.items()):
            cumulative = 0.0
            for bound, n in zip((*self.buckets, math.inf), row[:-1], strict=True):
                cumulative += n
                le = 'le="' + _num(bound) + '"'
                yield f"{self.name}_bucket{_labels(self.labelnames, labels, le)} {_num(cumulative)}"
            yield f"{self.name}_sum{_labels(self.labelnames, labels)} {_num(row[-1])}"
            yield f"{self.name}_count{_labels(self.labelnames, labels)} {_num(cumulative)}"


Metric = Counter | Gauge | Histogram


_C = TypeVar("_C", bound=Counter)  # Counter or Gauge


class Metrics:
    """Every metric strangler exports. One instance per process, shared by the proxy core and listeners."""

    def __init__(self) -> None:
        self.requests = Counter(
            "strangler_requests_total",
            "Requests served, by route, upstream and status class.",
            ("route", "upstream", "class"),
        )
        self.latency = Histogram(
            "strangler_request_duration_seconds", "Time to the last response byte.", ("route", "upstream")
        )
        self.upstream_errors = Counter(
            "strangler_upstream_errors_total",
            "Upstream failures by kind (connect, tls, timeout, reset).",
            ("upstream", "kind"),
        )
        self.fallbacks = Counter(
            "strangler_fallbacks_total",
            "Requests sent to legacy instead of new, by reason.",
            ("route", "reason"),
        )
        self.breaker_state = Gauge(
            "strangler_breaker_open",
            "Circuit breaker state per upstream: 0 closed, 1 open, 0.5 half-open.",
            ("upstream",),
        )
        self.reloads = Counter("strangler_reloads_total", "Config reloads by result (ok, failed).", ("result",))
        self.config_ok = Gauge(
            "strangler_config_last_reload_ok",
            "1 when the config file last loaded is what serves; 0 when the last load failed, was refused "
            "(it would remove every route) or the file is missing: the last good config keeps serving.",
        )
        self.rejected = Counter(
            "strangler_rejected_requests_total",
            "Requests refused before reaching a back end, by reason.",
            ("reason",),
        )
        self.shadow = Counter(
            "strangler_shadow_total",
            "Mirrored exchanges by route, pair (candidate: legacy vs new; noise: legacy vs legacy) and outcome"
            " (match, mismatch, candidate_error, dropped, skipped).",
            ("route", "pair", "outcome", "reason"),
        )
        self.shadow_queue = Gauge("strangler_shadow_queue_depth", "Queued work in the shadow pipeline.", ("stage",))
        self.compare_time = Histogram(
            "strangler_compare_duration_seconds", "Time spent comparing one pair.", ("route",)
        )
        self.access_log_dropped = Counter(
            "strangler_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind (its buffer was full) or a write failed.",
        )
        self.access_log_dropped.values[()] = 0.0  # shown as 0 from the start
        self.extra: list[Metric] = []

    def extra_counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        """A counter in `extra`, created on first use (several listeners may ask for the same one)."""
        return self._extra(Counter, name, help, labels)

    def find_counter(self, name: str) -> Counter | None:
        """A counter (or gauge) by its exported name, first-class or in `extra`; None when none has been created."""
        return next((m for m in self.all() if m.name == name and isinstance(m, Counter)), None)

    def extra_gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A gauge in `extra`, created on first use."""
        return self._extra(Gauge, name, help, labels)

    def _extra(self, kind: type[_C], name: str, help: str, labels: tuple[str, ...]) -> _C:
        for metric in self.extra:
            if metric.name == name and isinstance(metric, kind):
                return metric
        made = kind(name, help, labels)
        self.extra.append(made)
        return made

    def all(self) -> list[Metric]:
        return [
            self.requests,
            self.latency,
            self.upstream_errors,
            self.fallbacks,
            self.breaker_state,
            self.reloads,
            self.config_ok,
            self.rejected,
            self.shadow,
            self.shadow_queue,
            self.compare_time,
            self.access_log_dropped,
            *self.extra,
        ]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
