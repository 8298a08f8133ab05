"""Read a store and a config into the migration report's values: per-route figures, top fields and the traffic header.

Counts come from the store's rollups (outcomes, field groups, per-minute traffic), so a report over a million exchanges
is a handful of aggregate queries, plus one indexed count per route whose mismatches are part noise, part real; latency
percentiles are exact, by nearest rank over the window's stored latencies (`Store.latency_percentiles`). Only live pairs
("candidate", "noise") feed the figures and verdicts; replays get their own before → after section. Verdicts come from
`reports.readiness`, field classes from `shadow.judge.noise`, so the report shows exactly what the flip gate enforces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from proxy.config.model import MODES, Config, Noise, Readiness
from proxy.modes import unmirrored_reason
from reports.contract import Contract
from reports.contract_section import report_contracts
from reports.readiness import Check, RouteFigures, Verdict, readiness_checks, verdict, verdict_reason
from reports.replay_changes import ReplaySummary
from reports.replay_changes import summarize as summarize_replays
from shadow.judge.noise import FieldVerdict, classify_fields
from shadow.store.database import Store, count_noise_only
from shadow.store.types import FieldStat, Percentiles, RouteStats, TrafficRow, UnroutedPath
from shadow.values import FieldKind

FIELD_SAMPLES = 20  # difference values read per field group to judge whether it looks volatile
NOT_IN_CONFIG = "removed"  # the mode shown for a route the store knows but routes.yaml no longer has

Reasons = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class FieldSummary:
    """One grouped field path that differed between legacy and new on a route."""

    path: str  # grouped: $.items[*].price, header.content-type, status, body
    count: int  # candidate pairs that differed in this field
    rate: float  # count / compared
    noise_count: int  # legacy↔legacy pairs that differed in it
    noise_rate: float  # noise_count / noise pairs compared
    real: bool  # raw clears noise by the route's margins, or new changed the field's structure (shadow.judge.noise)
    volatile: bool  # values look generated (timestamps, ids) or legacy itself varies here
    kind: FieldKind | None = None  # added, removed, changed, type_changed, order, or mixed; None: unknown
    kinds: tuple[tuple[FieldKind, int], ...] = ()  # candidate pairs per kind, busiest first
    structure: str | None = None  # the structural change new made ("removed by new"), which is never noise
    suggested_ignore: bool = False  # worth a `compare.ignore_fields` rule (shadow.judge.noise.FieldVerdict.ignorable)

    @property
    def noise(self) -> bool:
        return not self.real

    @property
    def kind_text(self) -> str:
        """The kind as the tables print it: "removed", "type changed", "mixed", "–" when unknown."""
        return "–" if self.kind is None else self.kind.replace("_", " ")

    @property
    def noise_share(self) -> float:
        """How much of this field's difference rate legacy shows against itself (0..1)."""
        if self.rate <= 0:
            return 1.0 if self.noise_rate > 0 else 0.0
        return min(1.0, self.noise_rate / self.rate)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles (ms, nearest rank) of both sides over the candidate pairs; None for a side never measured."""

    legacy: Percentiles | None
    new: Percentiles | None

    def ratio(self, which: str) -> float | None:
        """new / legacy at "p50", "p95" or "p99"; None when either side is missing or legacy is zero."""
        if self.legacy is None or self.new is None:
            return None
        base: float = getattr(self.legacy, which)
        return getattr(self.new, which) / base if base > 0 else None


@dataclass(frozen=True, slots=True)
class RouteSummary:
    """Everything the report says about one route."""

    id: str
    mode: str  # the route's mode in routes.yaml now, or NOT_IN_CONFIG
    template: str  # the route's path template ("" when not in the config)
    served_legacy: int  # requests the legacy side answered (traffic rollup)
    served_new: int
    figures: RouteFigures  # compared / matched / real mismatches / noise-only / candidate errors, p99s
    dropped: int
    skipped: int
    dropped_by_reason: Reasons
    skipped_by_reason: Reasons
    errors_by_reason: Reasons
    noise_compared: int  # legacy↔legacy pairs compared
    latency: LatencySummary
    fields: tuple[FieldSummary, ...]  # busiest first, at most the report's field limit
    field_groups: int  # how many field groups differed in all (fields may be cut short)
    verdict: Verdict
    verdict_reason: str  # why, when the verdict needs saying why (`not mirrored`); "" otherwise
    checks: tuple[Check, ...]

    @property
    def compared(self) -> int:
        return self.figures.compared

    @property
    def matched(self) -> int:
        """Compared pairs without a real difference: exact matches plus noise-only mismatches."""
        return self.figures.matched

    @property
    def mismatched(self) -> int:
        return self.figures.mismatched

    @property
    def noise_only(self) -> int:
        return self.figures.noise_only

    @property
    def candidate_errors(self) -> int:
        return self.figures.candidate_errors

    @property
    def requests(self) -> int:
        return self.served_legacy + self.served_new

    @property
    def suggested_ignores(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.fields if f.suggested_ignore)


@dataclass(frozen=True, slots=True)
class ModeTraffic:
    """Requests served by routes in one mode (the mode they had when served) and routes on it now."""

    mode: str
    routes: int
    requests: int
    share: float  # of all requests, unrouted ones included


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: datetime
    since: datetime | None
    config: str
    sources: tuple[str, ...]  # the store files read
    routes: tuple[RouteSummary, ...]
    modes: tuple[ModeTraffic, ...]
    total_requests: int
    unrouted_requests: int  # fell through to the default legacy upstream
    unrouted: tuple[UnroutedPath, ...]  # busiest first
    # Pairs made by `strangler replay` in the window: shown apart, never counted in the routes' figures above.
    replay: ReplaySummary
    contracts: tuple[Contract, ...] = ()  # routes with stored JSON bodies: their shapes and drift

    def with_verdict(self, wanted: Verdict) -> tuple[RouteSummary, ...]:
        return tuple(r for r in self.routes if r.verdict == wanted)


class UnknownRouteError(LookupError):
    """`--route` names a route neither routes.yaml nor the store knows."""


def build_report(
    store: Store,
    config: Config,
    *,
    since: float | None = None,
    route_id: str | None = None,
    now: float | None = None,
    field_limit: int | None = 10,
    unrouted_limit: int = 10,
    sources: Iterable[str] = (),
) -> Report:
    """The report over exchanges at or after `since` (epoch seconds; None: everything kept)."""
    stamp = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    stats = {s.route_id: s for s in store.route_stats(since, route_id)}
    traffic = store.traffic_by_mode(since)
    raw = _by_route(store.field_stats(since, route_id, "candidate"))
    noise = _by_route(store.field_stats(since, route_id, "noise"))
    latency = store.latency_percentiles(since, route_id, "candidate")
    served: dict[tuple[str, str], int] = {}
    for row in traffic:
        if row.route_id:
            served[(row.route_id, row.served_by)] = served.get((row.route_id, row.served_by), 0) + row.count

    ids = [r.id for r in config.routes]
    known = set(ids)
    ids += sorted(({*stats, *(rid for rid, _ in served)}) - known)
    if route_id is not None:
        if route_id not in ids:
            raise UnknownRouteError(f"unknown route '{route_id}' (known: {', '.join(ids) or 'none'})")
        ids = [route_id]

    routes = []
    for rid in ids:
        route = config.route(rid)
        routes.append(
            summarize_route(
                store,
                rid,
                mode=route.mode if route else NOT_IN_CONFIG,
                unmirrored=unmirrored_reason(route) if route else None,
                template=route.match.path if route else "",
                stats=stats.get(rid) or _empty_stats(rid),
                raw=raw.get(rid, {}),
                noise=noise.get(rid, {}),
                latency=LatencySummary(latency.get((rid, "legacy")), latency.get((rid, "new"))),
                served=(served.get((rid, "legacy"), 0), served.get((rid, "new"), 0)),
                noise_opts=route.noise if route else config.defaults.noise,
                readiness=route.readiness if route else config.defaults.readiness,
                since=since,
                now=now,
                field_limit=field_limit,
            )
        )
    total, unrouted_total, modes = _mode_traffic(traffic, config)
    return Report(
        generated_at=stamp,
        since=datetime.fromtimestamp(since, UTC) if since is not None else None,
        config=str(config.source),
        sources=tuple(sources),
        routes=tuple(routes),
        modes=modes,
        total_requests=total,
        unrouted_requests=unrouted_total,
        unrouted=tuple(store.unrouted(since, unrouted_limit)),
        replay=summarize_replays(store.replay_pairs(since, route_id)),
        contracts=report_contracts(store, [r.id for r in routes], since, config.store.sample_matches),
    )


def summarize_route(
    store: Store,
    route_id: str,
    *,
    mode: str,
    template: str,
    stats: RouteStats,
    unmirrored: str | None = None,
    raw: Mapping[str, FieldStat],
    noise: Mapping[str, FieldStat],
    latency: LatencySummary,
    served: tuple[int, int],
    noise_opts: Noise,
    readiness: Readiness,
    since: float | None,
    now: float | None,
    field_limit: int | None,
) -> RouteSummary:
    """One route's summary from its rollup figures; reads raw exchanges only to split noise-only mismatches."""
    # Volatility needs sampled values: read them only for the fields that will be shown (raw is busiest first).
    shown = list(raw)[:field_limit] if field_limit is not None else list(raw)
    samples = {g: _flatten(store.field_samples(route_id, g, FIELD_SAMPLES)) for g in shown}
    verdicts = _classify(raw, noise, stats, noise_opts, samples, now)
    noise_groups = sorted(g for g in raw if not verdicts[g].real)
    noise_only = 0
    if stats.mismatch and noise_groups:
        noise_only = count_noise_only(store, route_id, noise_groups, since)
    figures = RouteFigures(
        route_id=route_id,
        compared=stats.compared,
        matched=stats.compared - (stats.mismatch - noise_only),
        mismatched=stats.mismatch - noise_only,
        noise_only=noise_only,
        candidate_errors=stats.candidate_error,
        p99_legacy_ms=latency.legacy.p99 if latency.legacy else None,
        p99_new_ms=latency.new.p99 if latency.new else None,
        skipped_by_reason=stats.skipped_by_reason,
        unmirrored=unmirrored,
    )
    fields = tuple(_field(verdicts[g], raw[g]) for g in shown)
    return RouteSummary(
        id=route_id,
        mode=mode,
        template=template,
        served_legacy=served[0],
        served_new=served[1],
        figures=figures,
        dropped=stats.dropped,
        skipped=stats.skipped,
        dropped_by_reason=stats.dropped_by_reason,
        skipped_by_reason=stats.skipped_by_reason,
        errors_by_reason=stats.errors_by_reason,
        noise_compared=stats.noise_compared,
        latency=latency,
        fields=fields,
        field_groups=len(raw),
        verdict=verdict(figures, readiness),
        verdict_reason=verdict_reason(figures, readiness),
        checks=readiness_checks(figures, readiness),
    )


def noise_verdicts(store: Store, config: Config, route_id: str, since: float | None = None) -> list[FieldVerdict]:
    """Every field group of a route (candidate or noise pair) classed, with volatility judged on samples."""
    stats = next(iter(store.route_stats(since, route_id)), None) or _empty_stats(route_id)
    raw = _by_route(store.field_stats(since, route_id, "candidate")).get(route_id, {})
    noise = _by_route(store.field_stats(since, route_id, "noise")).get(route_id, {})
    samples = {g: _flatten(store.field_samples(route_id, g, FIELD_SAMPLES)) for g in {*raw, *noise}}
    route = config.route(route_id)
    opts = route.noise if route else config.defaults.noise
    return list(_classify(raw, noise, stats, opts, samples, None).values())


def _classify(
    raw: Mapping[str, FieldStat],
    noise: Mapping[str, FieldStat],
    stats: RouteStats,
    opts: Noise,
    samples: Mapping[str, Iterable[str]],
    now: float | None,
) -> dict[str, FieldVerdict]:
    """`shadow.judge.noise.classify_fields` on a route's field stats: counts, samples and kinds of both pairs."""
    return classify_fields(
        {g: s.count for g, s in raw.items()},
        {g: s.count for g, s in noise.items()},
        stats.compared,
        stats.noise_compared,
        opts,
        samples,
        now,
        kinds={g: [k for k, _ in s.kinds] for g, s in raw.items()},
        noise_kinds={g: [k for k, _ in s.kinds] for g, s in noise.items()},
    )


def _field(v: FieldVerdict, stat: FieldStat) -> FieldSummary:
    return FieldSummary(
        path=v.group,
        count=v.raw,
        rate=v.raw_rate,
        noise_count=v.noise,
        noise_rate=v.noise_rate,
        real=v.real,
        volatile=v.volatile,
        kind=v.kind,
        kinds=stat.kinds,
        structure=v.structure,
        suggested_ignore=v.ignorable,
    )


def _by_route(stats: Iterable[FieldStat]) -> dict[str, dict[str, FieldStat]]:
    """route -> {group: stat}, keeping the store's busiest-first order."""
    out: dict[str, dict[str, FieldStat]] = {}
    for s in stats:
        out.setdefault(s.route_id, {})[s.group] = s
    return out


def _flatten(pairs: Iterable[tuple[str | None, str | None]]) -> list[str]:
    return [v for pair in pairs for v in pair if v is not None]


def _empty_stats(route_id: str) -> RouteStats:
    return RouteStats(route_id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def _mode_traffic(traffic: Iterable[TrafficRow], config: Config) -> tuple[int, int, tuple[ModeTraffic, ...]]:
    """(all requests, unrouted requests, per mode) — unrouted requests are not counted under any mode."""
    per_mode: dict[str, int] = {}
    unrouted = 0
    for row in traffic:
        if row.route_id:
            per_mode[row.mode] = per_mode.get(row.mode, 0) + row.count
        else:
            unrouted += row.count
    total = sum(per_mode.values()) + unrouted
    route_modes: list[str] = [r.mode for r in config.routes]
    modes = tuple(
        ModeTraffic(
            mode, route_modes.count(mode), per_mode.get(mode, 0), per_mode.get(mode, 0) / total if total else 0.0
        )
        for mode in (*MODES, *sorted(set(per_mode) - set(MODES)))
    )
    return total, unrouted, modes
