"""The route table: precedence between route templates, the lookup that picks one route per request, and explain.

The templates themselves (parsing, typed matchers, `TemplateError`) live in `proxy.templates`. Exceptions:
`TemplateError` (a template cannot be parsed, re-raised here naming the route) and `AmbiguousRoutesError` (two
routes can match the same request with equal precedence), both `ValueError`s raised while a config is loaded,
never per request.

Precedence, most specific first: compare templates segment by segment from the left, literal > mixed (`{name}.json`,
`v{n:int}`; the one with more literal characters first) > `{name:type}` > `{name}` > `*` > end of template > `**` (so
a longer template beats a shorter one, except that `/a` beats `/a/**`); at equal path rank a method-restricted route
beats an any-method one, then more header/query matchers beat fewer. Two mixed segments after the same leading
segments with as many literal characters are ambiguous (a config error) unless their literal prefixes or suffixes
tell them apart (`{t}.json` and `{t}.csv`; not `{a}.x` and `x.{b}`, which both match `x.x`).
Lookup walks a segment trie depth-first in exactly that order, so the first route accepted is the winner.
Trailing slashes are not significant for matching (the canonical path keeps them for the upstream). Literal
segments match case-insensitively, and requests are matched by their segments' keys (`proxy.paths`: cut at ';',
trailing dots and spaces dropped), so `/ADMIN`, `/admin;x` and `/admin.` all reach the route of `/admin`: a back end
that ignores case or strips those parts would otherwise serve its `/admin` to a request routed elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from types import MappingProxyType
from typing import NamedTuple

from proxy.config.model import Route
from proxy.templates import Template, TemplateError, TemplateSegment, parse_template, typed_matchers
from proxy.tuples import new_tuple


class AmbiguousRoutesError(ValueError):
    """Routes that can match the same request with equal precedence; `conflicts` lists every pair found."""

    def __init__(self, conflicts: list[tuple[Route, Route, str]]) -> None:
        self.conflicts = conflicts
        super().__init__("ambiguous routes:\n" + "\n".join(f"  {why}" for _, _, why in conflicts))


class RouteMatch(NamedTuple):  # immutable; built per request, where a frozen dataclass pays a call per field
    route: Route
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class CandidateNote:
    route: Route
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    winner: Route | None
    candidates: tuple[CandidateNote, ...]  # nearby routes that lost, and why
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Entry:
    route: Route
    template: Template
    methods: frozenset[str] | None
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    key: tuple[tuple[int, ...], int, int, int]  # sort key: path rank, any-method, -matchers, index

    @classmethod
    def of(cls, route: Route, template: Template) -> _Entry:
        m = route.match
        restricted = 0 if m.methods is not None else 1
        key = (template.path_key, restricted, -(len(m.headers) + len(m.query)), route.index)
        return cls(route, template, m.methods, m.headers, m.query, key)

    def accepts(self, method: str, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        for name, value in self.headers:
            if headers.get(name) != value:
                return False
        return all(query.get(name) == value for name, value in self.query)

    def refusal(self, method: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """Why this route refuses a request its path matches, or None if it accepts it."""
        if self.methods is not None and method not in self.methods:
            return f"method {method} not allowed (route allows {', '.join(sorted(self.methods))})"
        for what, pairs, given in (("header", self.headers, headers), ("query", self.query, query)):
            for name, value in pairs:
                got = given.get(name)
                if got is None:
                    return f"{what} {name} missing (route wants {value!r})"
                if got != value:
                    return f"{what} {name} is {got!r}, route wants {value!r}"
        return None


class _Node:
    """A trie node during build; children are tried literal, mixed, typed, param, star, then leaf/doublestar."""

    __slots__ = ("doublestar", "leaf", "literal", "mixed", "param", "star", "typed")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.mixed: dict[TemplateSegment, _Node] = {}  # keyed by the first segment of each shape
        self.typed: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.star: _Node | None = None
        self.leaf: list[_Entry] = []
        self.doublestar: list[_Entry] = []

    def insert(self, entry: _Entry) -> None:
        node = self
        for ts in entry.template.segments:
            if ts.kind == "doublestar":
                node.doublestar.append(entry)
                return
            if ts.kind == "literal":
                node = node.literal.setdefault(ts.value.lower(), _Node())
            elif ts.kind == "mixed":
                same = next((k for k in node.mixed if k.shape == ts.shape), ts)
                node = node.mixed.setdefault(same, _Node())
            elif ts.kind == "typed":
                node = node.typed.setdefault(ts.type, _Node())
            elif ts.kind == "param":
                node.param = node.param or _Node()
                node = node.param
            else:
                node.star = node.star or _Node()
                node = node.star
        node.leaf.append(entry)

    def freeze(self) -> _Frozen:
        return _Frozen(
            MappingProxyType({k: v.freeze() for k, v in self.literal.items()}),
            # Mixed segments share the typed slot, ahead of it and most literal first: no extra step per request.
            tuple(
                [(_mixed_check(m), self.mixed[m].freeze()) for m in sorted(self.mixed, key=lambda m: (m.rank, m.shape))]
                + [(typed_matchers[t], self.typed[t].freeze()) for t in sorted(self.typed)]
            ),
            self.param.freeze() if self.param else None,
            self.star.freeze() if self.star else None,
            tuple(sorted(self.leaf, key=lambda e: e.key)),
            tuple(sorted(self.doublestar, key=lambda e: e.key)),
        )


def _mixed_check(segment: TemplateSegment) -> Callable[[str], bool]:
    fullmatch = segment.regex.fullmatch
    return lambda seg: fullmatch(seg.lower()) is not None


@dataclass(frozen=True, slots=True)
class _Frozen:
    literal: Mapping[str, _Frozen]
    typed: tuple[tuple[Callable[[str], bool], _Frozen], ...]  # mixed segments first, then typed parameters
    param: _Frozen | None
    star: _Frozen | None
    leaf: tuple[_Entry, ...]  # pre-sorted: method-restricted, then more matchers, then config order
    doublestar: tuple[_Entry, ...]


def _walk(
    node: _Frozen, segs: tuple[str, ...], i: int, method: str, headers: Mapping[str, str], query: Mapping[str, str]
) -> _Entry | None:
    if i == len(segs):
        for entry in node.leaf:
            if entry.accepts(method, headers, query):
                return entry
    else:
        seg = segs[i]
        child = node.literal.get(seg.lower())
        if child is not None and (found := _walk(child, segs, i + 1, method, headers, query)) is not None:
            return found
        for check, typed_child in node.typed:
            if check(seg) and (found := _walk(typed_child, segs, i + 1, method, headers, query)) is not None:
                return found
        for wild in (node.param, node.star):
            if wild is not None and (found := _walk(wild, segs, i + 1, method, headers, query)) is not None:
                return found
    for entry in node.doublestar:
        if entry.accepts(method, headers, query):
            return entry
    return None


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: tuple[Route, ...]
    _entries: tuple[_Entry, ...]  # every route, in precedence order
    _root: _Frozen

    @classmethod
    def build(cls, routes: Sequence[Route]) -> RouteTable:
        """Index `routes`; raises TemplateError for a bad template, AmbiguousRoutesError listing all conflicts."""
        entries = []
        for route in routes:
            try:
                template = parse_template(route.match.path)
            except TemplateError as exc:
                raise TemplateError(f"routes[{route.index}] ({route.id}): {exc}", exc.hint) from exc
            entries.append(_Entry.of(route, template))
        conflicts = _find_conflicts(entries)
        if conflicts:
            raise AmbiguousRoutesError(conflicts)
        root = _Node()
        for entry in entries:
            root.insert(entry)
        return cls(tuple(routes), tuple(sorted(entries, key=lambda e: e.key)), root.freeze())

    def match(
        self, method: str, segments: tuple[str, ...], headers: Mapping[str, str], query: Mapping[str, str]
    ) -> RouteMatch | None:
        """The most specific route accepting the request, with its bound parameters, or None."""
        entry = _walk(self._root, segments, 0, method, headers, query)
        if entry is None:
            return None
        return new_tuple(RouteMatch, (entry.route, entry.template.bind(segments)))  # fields in order: proxy.tuples

    def explain(
        self, method: str, segments: tuple[str, ...], headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Explanation:
        """Which route wins and why each nearby route does not (for `strangler explain`)."""
        winner = _walk(self._root, segments, 0, method, headers, query)
        accepted: list[CandidateNote] = []
        refused: list[CandidateNote] = []
        missed: list[tuple[int, CandidateNote]] = []
        for entry in self._entries:
            if entry is winner:
                continue
            miss, prefix = _path_miss(entry.template, segments)
            if miss is not None:
                missed.append((prefix, CandidateNote(entry.route, miss)))
                continue
            why = entry.refusal(method, headers, query)
            if why is not None:
                refused.append(CandidateNote(entry.route, why))
            elif winner is not None:
                lost = _precedence_reason(winner, entry)
                accepted.append(CandidateNote(entry.route, f"matches too, but {lost} (winner: {winner.route.id})"))
        # "Nearby" path misses: those sharing a leading segment, or the closest ones when nothing matched.
        best = max((p for p, _ in missed), default=0)
        floor = 1 if winner is not None else best
        near = sorted((n for n in missed if n[0] >= floor or not segments), key=lambda n: -n[0])
        return Explanation(
            winner.route if winner else None,
            (*accepted, *refused, *(note for _, note in near)),
            winner.template.bind(segments) if winner else {},
        )


def _path_miss(template: Template, segments: tuple[str, ...]) -> tuple[str | None, int]:
    """Why the template's path does not match (None if it does), and how many leading segments matched."""
    for i, ts in enumerate(template.segments):
        if ts.kind == "doublestar":
            return None, i
        if i >= len(segments):
            return f"path too short: template needs segment {i + 1} ({ts})", i
        seg = segments[i]
        if ts.kind == "literal" and seg.lower() != ts.value.lower():
            return f"path differs at segment {i + 1}: expected {ts.value!r}, got {seg!r}", i
        if ts.kind == "typed" and not typed_matchers[ts.type](seg):
            return f"path differs at segment {i + 1}: {seg!r} is not {'an' if ts.type == 'int' else 'a'} {ts.type}", i
        if ts.kind == "mixed" and ts.mixed_params(seg) is None:
            return f"path differs at segment {i + 1}: {seg!r} does not match '{ts}'", i
    n = len(template.segments)
    if len(segments) > n:
        return f"path too long: template has {n} segments, request has {len(segments)}", n
    return None, n


def _precedence_reason(winner: _Entry, loser: _Entry) -> str:
    wk, lk = winner.template.path_key, loser.template.path_key
    for i, (w, lo) in enumerate(zip(wk, lk, strict=False)):
        if w != lo:
            return f"lower precedence at segment {i + 1}: {_describe(winner, i)} beats {_describe(loser, i)}"
    if winner.key[1] != loser.key[1]:
        return "lower precedence: a method-restricted route beats an any-method route"
    if winner.key[2] != loser.key[2]:
        return f"lower precedence: {-winner.key[2]} header/query matchers beat {-loser.key[2]}"
    return "lower precedence: later in routes:"


def _describe(entry: _Entry, pos: int) -> str:
    segs = entry.template.segments
    return f"'{segs[pos]}'" if pos < len(segs) else "end of template"


def _find_conflicts(entries: list[_Entry]) -> list[tuple[Route, Route, str]]:
    groups: dict[tuple[tuple[int, ...], int, int], list[_Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.key[:3], []).append(entry)
    conflicts = _mixed_conflicts(entries)
    for group in groups.values():
        for a, b in combinations(sorted(group, key=lambda e: e.route.index), 2):
            why = _overlap(a, b)
            if why is not None:
                conflicts.append((a.route, b.route, why))
    return conflicts


def _overlap(a: _Entry, b: _Entry) -> str | None:
    """A description of a request both routes (of equal precedence) accept, or None if none exists."""
    for sa, sb in zip(a.template.segments, b.template.segments, strict=True):
        if sa.kind == "literal" and sa.value.lower() != sb.value.lower():
            return None
        if sa.kind == "typed" and sa.type != sb.type:
            return None  # int and uuid values never overlap
        if sa.kind == "mixed" and sa.shape != sb.shape:
            return None  # told apart, or reported by _mixed_conflicts
    # Equal precedence implies both restrict methods or neither does.
    if a.methods is None or b.methods is None:
        methods = "any method"
    else:
        shared = a.methods & b.methods
        if not shared:
            return None
        methods = ", ".join(sorted(shared))
    extra = []
    for what, pa, pb in (("header", a.headers, b.headers), ("query", a.query, b.query)):
        wanted = dict(pa)
        for name, value in pb:
            if wanted.setdefault(name, value) != value:
                return None  # same name, different values: no request has both
        extra += [f"{what} {name}={value!r}" for name, value in sorted(wanted.items())]
    tail = f" with {' and '.join(extra)}" if extra else ""
    return (
        f"routes[{a.route.index}] ({a.route.id}) and routes[{b.route.index}] ({b.route.id}) both match "
        f"{methods} {a.route.match.path}{tail} with equal precedence"
    )


def _mixed_conflicts(entries: list[_Entry]) -> list[tuple[Route, Route, str]]:
    """Pairs of routes that reach one trie node and part there at two mixed segments of equal rank that may both
    match one request segment: lookup could not tell which is more specific."""
    conflicts = []
    with_mixed = sorted((e for e in entries if e.template.mixed), key=lambda e: e.route.index)
    for a, b in combinations(with_mixed, 2):
        for i, (sa, sb) in enumerate(zip(a.template.segments, b.template.segments, strict=False)):
            if _trie_key(sa) == _trie_key(sb):
                continue
            if sa.kind == sb.kind == "mixed" and sa.rank == sb.rank and not _disjoint(sa, sb):
                why = (
                    f"routes[{a.route.index}] ({a.route.id}) and routes[{b.route.index}] ({b.route.id}): segment "
                    f"{i + 1} '{sa}' and '{sb}' can match the same text with equal precedence (as many literal "
                    "characters, and no literal prefix or suffix tells them apart)"
                )
                conflicts.append((a.route, b.route, why))
            break
    return conflicts


def _trie_key(segment: TemplateSegment) -> tuple[str, str]:
    if segment.kind == "literal":
        return ("literal", segment.value.lower())
    if segment.kind == "mixed":
        return ("mixed", segment.shape)
    return (segment.kind, segment.type)


def _disjoint(a: TemplateSegment, b: TemplateSegment) -> bool:
    """True when no text matches both mixed segments: their literal prefixes or literal suffixes differ."""
    for pa, pb, fits in ((a.parts[0], b.parts[0], str.startswith), (a.parts[-1], b.parts[-1], str.endswith)):
        if not pa.name and not pb.name:
            ta, tb = pa.text.lower(), pb.text.lower()
            if not fits(ta, tb) and not fits(tb, ta):
                return True
    return False
