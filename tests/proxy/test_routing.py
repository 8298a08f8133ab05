"""Route templates, precedence, ambiguity detection, lookup and explain."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.config.model import Match, Route
from proxy.paths import canonical_path
from proxy.routing import AmbiguousRoutesError, RouteMatch, RouteTable
from proxy.templates import TemplateError, parse_template, typed_matchers

UUID = "3f2b8c1e-9a4d-4e6f-8b2a-1c0d9e8f7a6b"


def route(
    rid: str,
    path: str,
    methods: set[str] | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    index: int = 0,
) -> Route:
    match = Match(
        path=path,
        methods=frozenset(methods) if methods is not None else None,
        headers=tuple((headers or {}).items()),
        query=tuple((query or {}).items()),
    )
    return Route(id=rid, index=index, match=match, mode="legacy", legacy="legacy", upstream="new")


def table(*routes: Route) -> RouteTable:
    return RouteTable.build([Route(r.id, i, r.match, r.mode, r.legacy, r.upstream) for i, r in enumerate(routes)])


def lookup(
    tbl: RouteTable,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> RouteMatch | None:
    return tbl.match(method, canonical_path(path).segments, CIMultiDict(headers or {}), query or {})


def routed_id(tbl: RouteTable, method: str, path: str, headers: dict[str, str] | None = None) -> str | None:
    found = lookup(tbl, method, path, headers)
    return found.route.id if found else None


# --- templates -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "kinds"),
    [
        ("/", ()),
        ("/api/orders", ("literal", "literal")),
        ("/api/orders/", ("literal", "literal")),
        ("/api/orders/{id}", ("literal", "literal", "param")),
        ("/api/orders/{id:int}", ("literal", "literal", "typed")),
        ("/u/{u:uuid}/*", ("literal", "typed", "star")),
        ("/static/**", ("literal", "doublestar")),
        ("/**", ("doublestar",)),
    ],
)
def test_parse_template_kinds(template: str, kinds: tuple[str, ...]) -> None:
    """Each template segment is parsed into its kind; a trailing slash adds none."""
    assert tuple(s.kind for s in parse_template(template).segments) == kinds


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("api/orders", "must start with '/'"),
        ("/a/{id:float}", "unknown parameter type 'float'"),
        ("/a/{}", "empty parameter name"),
        ("/a/{:int}", "empty parameter name"),
        ("/a/{id}/b/{id:int}", "duplicate parameter 'id'"),
        ("/a/**/b", "'**' must be the last segment"),
        ("/a//b", "empty segment"),
        ("/a/../b", "dot segment"),
        ("/files/{a}{b}.json", "no literal text between them"),
        ("/files/{a.json", "unbalanced braces"),
        ("/files/a*", "mixes text"),
        ("/a/{1x}", "bad parameter name"),
    ],
)
def test_parse_template_rejects(template: str, needle: str) -> None:
    """Malformed templates raise TemplateError with a message and a hint."""
    with pytest.raises(TemplateError) as info:
        parse_template(template)
    assert needle in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    ("type_name", "value", "ok"),
    [
        ("int", "42", True),
        ("int", "-7", True),
        ("int", "007", True),
        ("int", "", False),
        ("int", "-", False),
        ("int", "4.2", False),
        ("int", "+4", False),
        ("int", "\u00b2", False),
        ("int", "1_000", False),
        ("uuid", UUID, True),
        ("uuid", UUID.upper(), True),
        ("uuid", UUID.replace("-", ""), False),
        ("uuid", UUID[:-1] + "g", False),
        ("uuid", UUID + "0", False),
        ("uuid", "3f2b8c1e-9a4d-4e6f-8b2a_1c0d9e8f7a6b", False),
    ],
)
def test_typed_matchers(type_name: str, value: str, ok: bool) -> None:
    """int accepts optional '-' then ASCII digits; uuid accepts canonical 8-4-4-4-12 hex in any case."""
    assert typed_matchers[type_name](value) is ok


def test_template_match_binds_params() -> None:
    """A template binds its named parameters to the decoded segments."""
    tpl = parse_template("/u/{user}/o/{order:int}/**")
    assert tpl.match(("u", "ann", "o", "5", "x", "y")) == {"user": "ann", "order": "5"}
    assert tpl.match(("u", "ann", "o", "five")) is None


# --- precedence ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("winner", "loser", "request_path"),
    [
        (route("export", "/api/orders/export"), route("one", "/api/orders/{id}"), "/api/orders/export"),
        (route("int", "/api/orders/{id:int}"), route("any", "/api/orders/{id}"), "/api/orders/42"),
        (route("uuid", "/api/orders/{id:uuid}"), route("any", "/api/orders/{id}"), f"/api/orders/{UUID}"),
        (route("param", "/api/orders/{id}"), route("star", "/api/orders/*"), "/api/orders/x"),
        (route("star", "/api/orders/*"), route("rest", "/api/orders/**"), "/api/orders/x"),
        (route("api", "/api/**"), route("all", "/**"), "/api/x/y"),
        (route("exact", "/api/orders"), route("rest", "/api/orders/**"), "/api/orders"),
        (route("longer", "/a/*/**"), route("shorter", "/a/**"), "/a/b/c"),
        (route("left", "/a/b/**"), route("right", "/a/{x}/c"), "/a/b/c"),
        (route("get", "/api/orders", {"GET"}), route("any", "/api/orders"), "/api/orders"),
        (route("tenant", "/api/orders", headers={"x-tenant": "acme"}), route("plain", "/api/orders"), "/api/orders"),
        (route("beta", "/api/orders", query={"beta": "1"}), route("plain", "/api/orders"), "/api/orders"),
        (
            route("two", "/api", headers={"x-tenant": "acme"}, query={"v": "2"}),
            route("one", "/api", headers={"x-tenant": "acme"}),
            "/api",
        ),
        (route("get-plain", "/api", {"GET"}), route("any-header", "/api", headers={"x-tenant": "acme"}), "/api"),
    ],
)
def test_precedence(winner: Route, loser: Route, request_path: str) -> None:
    """The more specific route wins whichever order the routes are configured in."""
    headers, query = {"X-Tenant": "acme"}, {"beta": "1", "v": "2"}
    for order in ((winner, loser), (loser, winner)):
        found = lookup(table(*order), "GET", request_path, headers, query)
        assert found is not None
        assert found.route.id == winner.id


def test_fall_through_to_less_specific_route() -> None:
    """When the specific route refuses the request (method, header) the next one in precedence serves it."""
    tbl = table(
        route("get", "/api/orders/{id}", {"GET"}),
        route("tenant", "/api/orders/{id}", headers={"x-tenant": "acme"}),
        route("rest", "/api/**"),
    )
    assert routed_id(tbl, "GET", "/api/orders/1") == "get"
    assert routed_id(tbl, "POST", "/api/orders/1", {"x-tenant": "acme"}) == "tenant"
    assert routed_id(tbl, "POST", "/api/orders/1", {"x-tenant": "other"}) == "rest"
    assert lookup(tbl, "GET", "/other") is None


def test_backtracking_across_levels() -> None:
    """A literal branch that dead-ends deeper gives way to a parameter branch."""
    tbl = table(route("lit", "/a/b/c"), route("par", "/a/{x}/d"))
    assert (m := lookup(tbl, "GET", "/a/b/d")) is not None
    assert m.route.id == "par"
    assert m.params == {"x": "b"}


def test_match_params_and_trailing_slash() -> None:
    """Params are decoded segment values; a trailing slash does not change the match."""
    tbl = table(route("one", "/api/orders/{id}"), route("root", "/"))
    assert (m := lookup(tbl, "GET", "/api/orders/a%20b/")) is not None
    assert m.params == {"id": "a b"}
    assert routed_id(tbl, "GET", "/") == "root"
    assert lookup(tbl, "GET", "/api/orders/") is None


def test_header_match_is_case_insensitive_on_name_exact_on_value() -> None:
    """Header names match in any case (CIMultiDict); values must be equal exactly."""
    tbl = table(route("t", "/x", headers={"x-tenant": "Acme"}))
    assert lookup(tbl, "GET", "/x", {"X-TENANT": "Acme"}) is not None
    assert lookup(tbl, "GET", "/x", {"x-tenant": "acme"}) is None


def test_encoded_slash_cannot_reach_other_routes() -> None:
    """A '..%2F' segment is one opaque segment: it matches a one-segment param, never a sibling route."""
    tbl = table(route("public", "/public/{file}"), route("admin", "/admin"))
    assert (m := lookup(tbl, "GET", "/public/..%2Fadmin")) is not None
    assert m.route.id == "public"
    assert m.params == {"file": "../admin"}


# --- ambiguity -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "needle"),
    [
        (route("a", "/api/orders/{id}"), route("b", "/api/orders/{key}"), "any method /api/orders/{id}"),
        (route("a", "/x", {"GET", "POST"}), route("b", "/x", {"GET"}), "GET /x"),
        (route("a", "/x/{n:int}"), route("b", "/x/{m:int}"), "/x/{n:int}"),
        (route("a", "/x/*"), route("b", "/x/*"), "/x/*"),
        (route("a", "/x/**"), route("b", "/x/**/"), "/x/**"),
        (route("a", "/x", headers={"x-t": "1"}), route("b", "/x", query={"q": "1"}), "header x-t='1' and query q='1'"),
        (route("a", "/x", headers={"x-t": "1"}), route("b", "/x", headers={"x-u": "2"}), "header x-t='1'"),
    ],
)
def test_ambiguous_routes(a: Route, b: Route, needle: str) -> None:
    """Routes that can match the same request with equal precedence are refused, naming both."""
    with pytest.raises(AmbiguousRoutesError) as info:
        table(a, b)
    ((first, second, why),) = info.value.conflicts
    assert (first.id, second.id) == ("a", "b")
    assert needle in why
    assert "equal precedence" in why


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (route("a", "/x", {"GET"}), route("b", "/x", {"POST"})),
        (route("a", "/x/{n:int}"), route("b", "/x/{u:uuid}")),
        (route("a", "/x/one"), route("b", "/x/two")),
        (route("a", "/x", headers={"x-t": "1"}), route("b", "/x", headers={"x-t": "2"})),
        (route("a", "/x", query={"v": "1"}), route("b", "/x", query={"v": "2"})),
        (route("a", "/x/{id}"), route("b", "/x/*")),
        (route("a", "/x"), route("b", "/x/**")),
        (route("a", "/x", {"GET"}), route("b", "/x")),
    ],
)
def test_not_ambiguous(a: Route, b: Route) -> None:
    """Disjoint methods, typed params, literals or matcher values, or different ranks, build fine."""
    assert table(a, b).routes[0].id == "a"


def test_all_conflicts_are_reported() -> None:
    """Every ambiguous pair is listed, not just the first."""
    with pytest.raises(AmbiguousRoutesError) as info:
        table(route("a", "/x"), route("b", "/x"), route("c", "/y/{p}"), route("d", "/y/{q}"), route("e", "/x"))
    pairs = {(a.id, b.id) for a, b, _ in info.value.conflicts}
    assert pairs == {("a", "b"), ("a", "e"), ("b", "e"), ("c", "d")}
    assert "routes[2] (c)" in str(info.value)


def test_build_names_route_with_bad_template() -> None:
    """A bad template in the table is reported with the route's position and id."""
    with pytest.raises(TemplateError, match=r"routes\[1\] \(bad\)"):
        table(route("ok", "/ok"), route("bad", "/x/{id:float}"))


# --- explain ---------------------------------------------------------------------------------------------------


def explain_notes(tbl: RouteTable, method: str, path: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    exp = tbl.explain(method, canonical_path(path).segments, CIMultiDict(headers or {}), {})
    return {note.route.id: note.reason for note in exp.candidates}


EXPLAIN_ROUTES = (
    route("export", "/api/orders/export"),
    route("by-id", "/api/orders/{id:int}", {"GET"}),
    route("tenant", "/api/orders/{id}", headers={"x-tenant": "acme"}),
    route("orders-any", "/api/orders/{id}"),
    route("users", "/api/users/{id}"),
    route("api", "/api/**"),
    route("health", "/health"),
)


@pytest.mark.parametrize(
    ("method", "path", "headers", "winner", "notes"),
    [
        (
            "GET",
            "/api/orders/42",
            {},
            "by-id",
            {
                "export": "path differs at segment 3: expected 'export', got '42'",
                "tenant": "header x-tenant missing (route wants 'acme')",
                "orders-any": "lower precedence at segment 3: '{id:int}' beats '{id}'",
                "users": "path differs at segment 2: expected 'users', got 'orders'",
                "api": "lower precedence at segment 2: 'orders' beats '**'",
            },
        ),
        (
            "POST",
            "/api/orders/42",
            {"X-Tenant": "other"},
            "orders-any",
            {
                "by-id": "method POST not allowed (route allows GET)",
                "tenant": "header x-tenant is 'other', route wants 'acme'",
            },
        ),
        ("GET", "/health/x", {}, None, {"health": "path too long: template has 1 segments, request has 2"}),
        ("GET", "/api/orders/abc", {}, "orders-any", {"by-id": "path differs at segment 3: 'abc' is not an int"}),
    ],
)
def test_explain(method: str, path: str, headers: dict[str, str], winner: str | None, notes: dict[str, str]) -> None:
    """explain names the winner (the same as match) and says why each nearby route lost."""
    tbl = table(*EXPLAIN_ROUTES)
    segments = canonical_path(path).segments
    exp = tbl.explain(method, segments, CIMultiDict(headers), {})
    found = tbl.match(method, segments, CIMultiDict(headers), {})
    assert (exp.winner.id if exp.winner else None) == winner == (found.route.id if found else None)
    got = explain_notes(tbl, method, path, headers)
    for rid, reason in notes.items():
        assert reason in got[rid]
    assert winner not in got


def test_explain_leaves_out_unrelated_routes() -> None:
    """Routes sharing no leading segment with the request are not listed when a route matched."""
    got = explain_notes(table(*EXPLAIN_ROUTES), "GET", "/api/orders/42")
    assert "health" not in got


def test_explain_lists_closest_routes_when_nothing_matches() -> None:
    """With no winner and no shared prefix, explain still lists the closest routes."""
    exp = table(route("a", "/a"), route("b", "/b/c")).explain("GET", ("z",), CIMultiDict(), {})
    assert exp.winner is None
    assert {n.route.id for n in exp.candidates} == {"a", "b"}


def test_trie_lookup_agrees_with_precedence_order() -> None:
    """Over many templates and requests, the trie picks the first accepting route in precedence order."""
    options = ["a", "b", "{p:int}", "{p}", "*"]
    paths = [""]
    for _ in range(3):
        paths += [f"{p}/{o.replace('{p', '{p' + str(p.count('/')))}" for p in paths for o in options]
    templates = sorted({p or "/" for p in paths} | {f"{p}/**" for p in paths if p.count("/") < 3})
    routes = [route(f"r{i}", t, {"GET"} if i % 3 == 0 else None, index=i) for i, t in enumerate(templates)]
    tbl = RouteTable.build(routes)
    parsed = {r.id: parse_template(r.match.path) for r in routes}
    ordered = sorted(routes, key=lambda r: (parsed[r.id].path_key, r.match.methods is None, r.index))
    words = ["a", "b", "7", "x"]
    requests: list[tuple[str, ...]] = [()]
    for _ in range(4):
        requests += [(*r, w) for r in requests if len(r) == len(requests[-1]) for w in words]
    assert len(routes) == 187
    assert len(set(requests)) == 341
    for method in ("GET", "POST"):
        for segs in requests:
            expected = next(
                (
                    r
                    for r in ordered
                    if parsed[r.id].match(segs) is not None and (r.match.methods is None or method in r.match.methods)
                ),
                None,
            )
            found = tbl.match(method, segs, CIMultiDict(), {})
            assert (found.route if found else None) == expected, (method, segs)
