"""The endpoint inventory: the paths the proxy served, clustered into path templates, with their traffic, legacy
latency, status mix and the route (if any) that covers each; and `routes.yaml` entries proposed for the rest.

`cluster_paths` is the pure heart: concrete paths in, one template per path out. A segment position becomes a
parameter where its values vary: two or more distinct integers become `{id:int}`, any UUID `{id:uuid}`, two or more
hex ids (8+ hex digits with a digit and a letter) or `SLUG_MIN` or more distinct other values one untyped `{name}`.
Fewer distinct values stay literal (`/api/orders`, `/db/users.json`), so nothing is guessed from one sample.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from proxy.config.model import Route
from proxy.paths import PathError, canonical_path
from proxy.routing import RouteTable
from proxy.templates import Template, TemplateError, parse_template, typed_matchers
from shadow.store.types import PathTraffic, histogram_percentile

SLUG_MIN = 10  # distinct non-id values at one position before it becomes a parameter
_HEX_MIN = 8
_HEX = frozenset("0123456789abcdefABCDEF")
_SPECIAL = re.compile(r"[{}*]")  # template syntax in a literal value: written percent-encoded
_is_int = typed_matchers["int"]
_is_uuid = typed_matchers["uuid"]


def _is_hex_id(value: str) -> bool:
    return (
        len(value) >= _HEX_MIN
        and _HEX.issuperset(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def _segments(path: str) -> tuple[str, ...]:
    return tuple(path[1:].split("/")) if path != "/" else ()


def cluster_paths(paths: Iterable[str]) -> dict[str, str]:
    """Each concrete path (starting with '/') mapped to its template; paths with as many segments cluster together."""
    by_length: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for path in set(paths):
        segments = _segments(path)
        by_length.setdefault(len(segments), []).append((path, segments))
    out: dict[str, str] = {}
    for items in by_length.values():
        _cluster(items, 0, (), out)
    return out


def _cluster(
    items: list[tuple[str, tuple[str, ...]]], depth: int, prefix: tuple[str, ...], out: dict[str, str]
) -> None:
    if depth == len(items[0][1]):
        out.update(dict.fromkeys((path for path, _ in items), "/" + "/".join(prefix)))
        return
    # Decide on the distinct values first, then split the items once by the segment each value becomes.
    values = {segments[depth] for _, segments in items}
    plan = _collapse(list(values), prefix)
    for value in values:
        if value not in plan and _SPECIAL.search(value):
            plan[value] = _SPECIAL.sub(lambda m: f"%{ord(m.group()):02X}", value)
    merged: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for item in items:
        value = item[1][depth]
        segment = plan.get(value, value)
        group = merged.get(segment)
        if group is None:
            merged[segment] = [item]
        else:
            group.append(item)
    for segment, group in merged.items():
        _cluster(group, depth + 1, (*prefix, segment), out)


def _collapse(values: list[str], prefix: tuple[str, ...]) -> dict[str, str]:
    """The values at one position that become a parameter, each mapped to the parameter's segment text."""
    ints: list[str] = []
    uuids: list[str] = []
    rest: list[str] = []
    hexes: list[str] = []
    for v in values:
        if _is_int(v):
            ints.append(v)
        elif len(v) == 36 and _is_uuid(v):
            uuids.append(v)
        else:
            rest.append(v)
            if _is_hex_id(v):
                hexes.append(v)
    plan: dict[str, str] = {}
    if len(ints) >= 2:
        plan.update(dict.fromkeys(ints, f"{{{_param_name('id', prefix)}:int}}"))
    if uuids:
        plan.update(dict.fromkeys(uuids, f"{{{_param_name('id', prefix)}:uuid}}"))
    untyped = rest if len(rest) >= SLUG_MIN else hexes if len(hexes) >= 2 else []
    if untyped:
        name = _param_name("id" if len(hexes) == len(untyped) else "name", prefix)
        plan.update(dict.fromkeys(untyped, f"{{{name}}}"))
    return plan


def _param_name(base: str, prefix: tuple[str, ...]) -> str:
    """`id`, else (taken by an earlier segment) `<singular of the previous literal>_id`, else `id2`, `id3`..."""
    taken = {s[1:-1].partition(":")[0] for s in prefix if s.startswith("{") and s.endswith("}")}
    candidates = [base]
    if prefix and not prefix[-1].startswith("{"):
        word = re.sub(r"\W+", "_", prefix[-1]).strip("_").lower()
        if word and not word[0].isdigit():
            candidates.append(f"{word.removesuffix('s') or word}_{base}")
    candidates += [f"{base}{n}" for n in range(2, 100)]
    return next(c for c in candidates if c not in taken)


# --- the inventory ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Legacy latency percentiles in ms (from the hourly histogram: within one bucket, ~25%); None when unknown."""

    p50: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One template of the inventory. `route` is the id of the route taking its busiest method when every method
    seen is taken by a route (None when some is not); `uncovered` the methods no route takes. `example` is a path
    it was made from (the template itself for routed traffic)."""

    template: str
    example: str
    by_method: tuple[tuple[str, int], ...]  # (method, requests) busiest first
    requests: int
    share: float
    route: str | None
    uncovered: tuple[str, ...]
    latency: Latency
    statuses: tuple[tuple[int, int], ...]  # (status, requests) busiest first; status 0: no response

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods seen, busiest first."""
        return tuple(m for m, _ in self.by_method)


@dataclass(frozen=True, slots=True)
class Inventory:
    endpoints: tuple[Endpoint, ...]  # busiest first
    requests: int


@dataclass(slots=True)
class _Sum:
    example: str
    methods: Counter[str]
    covered: dict[str, str | None]  # method -> the route taking it
    statuses: dict[int, int]
    buckets: dict[int, int]


def build_inventory(rows: Sequence[PathTraffic], routes: Sequence[Route]) -> Inventory:
    """Cluster the traffic's unrouted paths, keep routed traffic under its route's template (while that route
    exists), and look up which current route takes each unrouted template's methods (matching its example path).

    An unrouted path that a route's template matches (a method the route does not take, or a route added since)
    is put under that template, the most specific first; only the rest are clustered."""
    templates = _route_templates(routes, {r.path for r in rows if not r.route_id})
    templates.update(cluster_paths(r.path for r in rows if not r.route_id and r.path not in templates))
    table = RouteTable.build(routes)
    known = {route.id for route in routes}
    sums: dict[str, _Sum] = {}
    for r in rows:
        template = r.path if r.route_id else templates[r.path]
        s = sums.get(template)
        if s is None:
            s = sums[template] = _Sum(r.path, Counter(), {}, {}, {})
        s.methods[r.method] += r.requests
        if r.route_id:
            s.covered[r.method] = r.route_id if r.route_id in known else None
        elif r.method not in s.covered:
            s.covered[r.method] = _covering_route(table, r.path, r.method)
        for status, n in r.statuses:
            s.statuses[status] = s.statuses.get(status, 0) + n
        for bucket, n in r.legacy_buckets:
            s.buckets[bucket] = s.buckets.get(bucket, 0) + n
    total = sum(r.requests for r in rows)
    endpoints = []
    for template, s in sums.items():
        requests = sum(s.methods.values())
        by_method = tuple(s.methods.most_common())
        methods = tuple(m for m, _ in by_method)
        uncovered = tuple(m for m in methods if s.covered.get(m) is None)
        histogram = [s.buckets.get(b, 0) for b in range(max(s.buckets, default=-1) + 1)]
        endpoints.append(
            Endpoint(
                template=template,
                example=s.example,
                by_method=by_method,
                requests=requests,
                share=requests / total if total else 0.0,
                route=None if uncovered else s.covered[methods[0]],
                uncovered=uncovered,
                latency=Latency(histogram_percentile(histogram, 0.5), histogram_percentile(histogram, 0.99)),
                statuses=tuple(sorted(s.statuses.items(), key=lambda item: (-item[1], item[0]))),
            )
        )
    endpoints.sort(key=lambda e: (-e.requests, e.template))
    return Inventory(tuple(endpoints), total)


def _route_templates(routes: Sequence[Route], paths: set[str]) -> dict[str, str]:
    """Unrouted paths a route's template matches, each mapped to the most specific such template."""
    parsed = sorted({parse_template(r.match.path) for r in routes}, key=lambda t: t.path_key)
    # Most paths match no template: look only at templates whose first segment could match the path's.
    by_first: dict[str, list[Template]] = {}
    for template in parsed:
        first = template.segments[0] if template.segments else None
        key = first.value if first is not None and first.kind == "literal" else ""
        by_first.setdefault(key, []).append(template)
    anywhere = by_first.pop("", [])
    found: dict[str, str] = {}
    for path in paths:
        near = by_first.get(unquote(path[1:].partition("/")[0]), [])
        if not near and not anywhere:
            continue
        try:
            segments = canonical_path(path).segments
        except PathError:
            continue
        for template in sorted([*near, *anywhere], key=lambda t: t.path_key) if anywhere else near:
            if template.match(segments) is not None:
                found[path] = template.source
                break
    return found


def _covering_route(table: RouteTable, path: str, method: str) -> str | None:
    try:
        segments = canonical_path(path).segments
    except PathError:
        return None
    match = table.match(method, segments, {}, {})
    return None if match is None else match.route.id


# --- proposals --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposal:
    """A `routes.yaml` entry for an uncovered template: mode shadow, the methods no route takes."""

    id: str
    template: str
    methods: tuple[str, ...]

    def yaml(self, indent: str = "  ") -> str:
        """The entry as block YAML lines, the list dash at `indent`."""
        methods = ", ".join(self.methods)
        return (
            f"{indent}- id: {self.id}\n"
            f"{indent}  match:\n"
            f"{indent}    path: {self.template}\n"
            f"{indent}    methods: [{methods}]\n"
            f"{indent}  mode: shadow\n"
        )


def propose_routes(inventory: Inventory, taken_ids: Iterable[str]) -> list[Proposal]:
    """Entries for the templates with uncovered methods whose template a route may use as it is, busiest first;
    ids from the path (`/users/{id:int}` → `users-id`), made unique against `taken_ids` and each other."""
    taken = set(taken_ids)
    proposals = []
    for e in inventory.endpoints:
        if not e.uncovered or not _plain_scalar(e.template):
            continue
        try:
            parse_template(e.template)
        except TemplateError:
            continue
        base = route_id_for(e.template)
        rid, n = base, 2
        while rid in taken:
            rid, n = f"{base}-{n}", n + 1
        taken.add(rid)
        proposals.append(Proposal(rid, e.template, tuple(sorted(e.uncovered))))
    return proposals


def _plain_scalar(template: str) -> bool:
    """Whether the template can be written as a plain block YAML scalar (canonical paths hold no spaces)."""
    return not any(c in template for c in " #'\"\t")


def route_id_for(template: str) -> str:
    """A route id from a template: its words joined by '-', lower case (`/db/orders.json` → `db-orders-json`)."""
    words = re.findall(r"[a-z0-9]+", re.sub(r":\w+\}", "}", template).lower())
    return "-".join(words) or "root"
