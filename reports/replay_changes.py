"""Before → after for replayed exchanges: per route, how many were replayed and how many former mismatches now
match, and per field group how many differed before and after.

One summary for both places that show it: `strangler replay` (from the pairs it just made) and the report's replay
section (from the pairs stored as "replay", `Store.replay_pairs`). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shadow.store.types import ReplayPair


@dataclass(frozen=True, slots=True)
class RouteChange:
    """Before → after for one route's replayed exchanges."""

    route_id: str
    replayed: int
    mismatched_before: int
    mismatched_after: int
    fixed: int  # mismatch (or candidate error) before, match now
    regressed: int  # match before, mismatch or candidate error now
    errors_after: int  # candidate errors now
    skipped_after: int  # not compared now (legacy failed, body too large)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """How many replayed exchanges (of those compared now) differed in one field group, before and after."""

    route_id: str
    group: str
    before: int
    after: int

    @property
    def fixed(self) -> int:
        return max(0, self.before - self.after)


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    routes: tuple[RouteChange, ...]
    fields: tuple[FieldChange, ...]  # per route, most fixed first

    @property
    def fixed(self) -> int:
        return sum(r.fixed for r in self.routes)

    @property
    def replayed(self) -> int:
        return sum(r.replayed for r in self.routes)


_BAD = frozenset({"mismatch", "candidate_error"})
_COMPARED = frozenset({"match", "mismatch"})


def summarize(pairs: Iterable[ReplayPair]) -> ReplaySummary:
    """Group replayed pairs by route and field group."""
    by_route: dict[str, list[ReplayPair]] = {}
    for pair in pairs:
        by_route.setdefault(pair.route_id, []).append(pair)
    routes: list[RouteChange] = []
    fields: list[FieldChange] = []
    for rid in sorted(by_route):
        ps = by_route[rid]
        routes.append(
            RouteChange(
                route_id=rid,
                replayed=len(ps),
                mismatched_before=sum(p.before == "mismatch" for p in ps),
                mismatched_after=sum(p.after == "mismatch" for p in ps),
                fixed=sum(p.before in _BAD and p.after == "match" for p in ps),
                regressed=sum(p.before == "match" and p.after in _BAD for p in ps),
                errors_after=sum(p.after == "candidate_error" for p in ps),
                skipped_after=sum(p.after == "skipped" for p in ps),
            )
        )
        # Per field only the pairs compared now: a candidate error or a skip says nothing about a field.
        compared = [p for p in ps if p.after in _COMPARED]
        groups = sorted({g for p in compared for g in (*p.before_groups, *p.after_groups)})
        changes = [
            FieldChange(rid, g, sum(g in p.before_groups for p in compared), sum(g in p.after_groups for p in compared))
            for g in groups
        ]
        fields.extend(sorted(changes, key=lambda c: (-c.fixed, -c.before, c.group)))
    return ReplaySummary(tuple(routes), tuple(fields))
