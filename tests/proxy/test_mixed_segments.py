"""Mixed template segments (`{name}.json`, `{id:int}.{format}`, `v{version:int}`): parsing, matching under the path
policy, precedence, ambiguity, explain and config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from proxy.config.loader import parse_config
from proxy.config.model import ConfigError, Route
from proxy.paths import canonical_path
from proxy.routing import AmbiguousRoutesError
from proxy.templates import TemplateError, parse_template
from tests.proxy.test_routing import explain_notes, lookup, route, routed_id, table

UUID = "3f2b8c1e-9a4d-4e6f-8b2a-1c0d9e8f7a6b"


def params(template: str, path: str) -> dict[str, str] | None:
    return parse_template(template).match(canonical_path(path).segments)


@pytest.mark.parametrize(
    ("template", "path", "bound"),
    [
        ("/db/{table}.json", "/db/orders.json", {"table": "orders"}),
        ("/db/{table}.json", "/db/orders.csv", None),
        ("/db/{table}.json", "/db/.json", None),  # a parameter takes at least one character
        ("/db/{table}.json", "/db/a.b.json", {"table": "a.b"}),
        ("/f/{id:int}.{format}", "/f/12.csv", {"id": "12", "format": "csv"}),
        ("/f/{id:int}.{format}", "/f/x.csv", None),
        ("/f/{name}.{ext}", "/f/a.b.c", {"name": "a.b", "ext": "c"}),  # the earlier parameter takes the most
        ("/api/v{version:int}/items", "/api/v3/items", {"version": "3"}),
        ("/api/v{version:int}/items", "/api/vx/items", None),
        ("/o/{id:uuid}.json", f"/o/{UUID}.json", {"id": UUID}),
        ("/o/{id:uuid}.json", "/o/123.json", None),
        ("/r/{a}-{b}/x", "/r/one-two-three/x", {"a": "one-two", "b": "three"}),
    ],
)
def test_mixed_segment_matches_and_binds(template: str, path: str, bound: dict[str, str] | None) -> None:
    """A mixed segment matches literal text around its parameters and binds each parameter's text."""
    assert params(template, path) == bound


def test_mixed_literals_follow_the_path_policy() -> None:
    """Literal parts match case-insensitively (values keep their case); ';params' and trailing dots are cut first."""
    assert params("/db/{table}.json", "/DB/Orders.JSON") == {"table": "Orders"}
    assert params("/db/{table}.json", "/db/orders.json;jsessionid=1") == {"table": "orders"}
    assert params("/db/{table}.json", "/db/orders.json.") == {"table": "orders"}
    assert params("/api/v{n:int}", "/api/V2") == {"n": "2"}


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("/a/{a}{b}", "no literal text between them"),
        ("/a/x{a}{b}.json", "no literal text between them"),
        ("/a/{a.json", "unbalanced braces"),
        ("/a/a}.json", "unbalanced braces"),
        ("/a/{{a}}", "unbalanced braces"),
        ("/a/{name}.", "ends in a dot"),
        ("/a/{name};v", "holds ';'"),
        ("/a/{}.json", "empty parameter name"),
        ("/a/{x:float}.json", "unknown parameter type"),
        ("/a/{x}.{x}", "duplicate parameter 'x'"),
        ("/a/{x}/{x}.json", "duplicate parameter 'x'"),
        ("/a/x*.json", "mixes text with a wildcard"),
    ],
)
def test_malformed_mixed_segments_are_refused(template: str, needle: str) -> None:
    """Malformed mixed segments raise TemplateError with a message and a hint."""
    with pytest.raises(TemplateError) as info:
        parse_template(template)
    assert needle in str(info.value)
    assert info.value.hint


def test_malformed_mixed_segment_is_a_config_error_with_file_line_and_route() -> None:
    """A config with `{a}{b}` fails to load, naming the file, the line of match.path and the route."""
    text = (
        "version: 1\nupstreams:\n  legacy: {url: 'http://127.0.0.1:9001'}\n  new: {url: 'http://127.0.0.1:9002'}\n"
        "routes:\n  - id: tables\n    match: {path: '/db/{a}{b}'}\n    mode: legacy\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("routes.yaml"))
    [issue] = caught.value.issues
    assert (issue.where, issue.line) == ("routes[0] (tables).match.path", 7)
    assert str(issue).startswith("routes.yaml:7: ")
    assert "no literal text between them" in str(issue)


@pytest.mark.parametrize(
    ("winner", "loser", "path"),
    [
        (route("lit", "/db/orders.json"), route("mixed", "/db/{t}.json"), "/db/orders.json"),
        (route("mixed", "/db/{t}.json"), route("param", "/db/{t}"), "/db/orders.json"),
        (route("mixed", "/n/{id}5"), route("typed", "/n/{id:int}"), "/n/15"),
        (route("longer", "/f/{a}.tar.gz"), route("shorter", "/f/{a}.gz"), "/f/x.tar.gz"),
        (route("mixed", "/db/{t}.json"), route("star", "/db/*"), "/db/x.json"),
    ],
)
def test_mixed_precedence(winner: Route, loser: Route, path: str) -> None:
    """Literal > mixed (more literal characters first) > typed > param > star, whatever the config order."""
    for order in ((winner, loser), (loser, winner)):
        assert routed_id(table(*order), "GET", path) == winner.id


def test_table_routes_by_suffix_and_falls_back() -> None:
    """`{table}.json` and `{table}.csv` split requests by suffix; other suffixes fall to the bare parameter."""
    tbl = table(route("json", "/db/{table}.json"), route("csv", "/db/{table}.csv"), route("any", "/db/{table}"))
    assert routed_id(tbl, "GET", "/db/orders.json") == "json"
    assert routed_id(tbl, "GET", "/db/orders.CSV") == "csv"
    assert routed_id(tbl, "GET", "/db/orders.xml") == "any"
    found = lookup(tbl, "GET", "/db/Orders.json")
    assert found is not None
    assert dict(found.params) == {"table": "Orders"}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("/x/{a}.x", "/x/x.{b}"),  # both match 'x.x', one literal character each
        ("/x/{a}-{b}", "/x/{c}_{d}"),
        ("/x/{a}.json", "/x/{b}.json"),  # the same shape
        ("/x/{a}.json/{p}", "/x/{b}.JSON/{q}"),
    ],
)
def test_overlapping_mixed_segments_of_equal_rank_are_ambiguous(a: str, b: str) -> None:
    """Two mixed segments with as many literal characters that may match one text are a config error."""
    with pytest.raises(AmbiguousRoutesError) as info:
        table(route("a", a), route("b", b))
    assert "routes[0] (a) and routes[1] (b)" in str(info.value)


def test_mixed_ambiguity_is_found_even_when_later_segments_differ() -> None:
    """`/x/{a}.x/{p}` and `/x/x.{b}/lit` are ambiguous: lookup could not rank them at segment 2."""
    with pytest.raises(AmbiguousRoutesError, match=r"segment 2 '\{a\}\.x' and 'x\.\{b\}'"):
        table(route("a", "/x/{a}.x/{p}"), route("b", "/x/x.{b}/lit"))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("/x/{a}.json", "/x/{a}.csv"),  # suffixes tell them apart
        ("/x/v{n}", "/x/w{n}"),  # prefixes tell them apart
        ("/x/{a}.tar.gz", "/x/{a}.gz"),  # one is strictly more literal
        ("/x/{a}.json", "/y/{a}.json"),  # different leading segments
    ],
)
def test_distinguishable_mixed_segments_are_not_ambiguous(a: str, b: str) -> None:
    """Mixed segments told apart by a literal prefix or suffix, or by literal length, load."""
    table(route("a", a), route("b", b))


def test_explain_shows_mixed_params_and_why_others_lost() -> None:
    """explain binds the mixed segment's params and says why the sibling suffix and the bare parameter lost."""
    tbl = table(route("json", "/db/{table}.json"), route("csv", "/db/{table}.csv"), route("any", "/db/{table}"))
    exp = tbl.explain("GET", canonical_path("/db/orders.json").segments, CIMultiDict(), {})
    assert exp.winner is not None
    assert exp.winner.id == "json"
    assert dict(exp.params) == {"table": "orders"}
    notes = explain_notes(tbl, "GET", "/db/orders.json")
    assert notes["csv"] == "path differs at segment 2: 'orders.json' does not match '{table}.csv'"
    assert "lower precedence at segment 2: '{table}.json' beats '{table}'" in notes["any"]


def test_trie_lookup_agrees_with_precedence_order_with_mixed_segments() -> None:
    """Over templates mixing literal, mixed, typed and bare segments, the trie picks the first route by precedence."""
    options = ["a.json", "{p}.json", "{p}.tar.json", "v{p:int}", "{p:int}", "{p}"]
    templates = sorted({f"/{x.replace('{p', '{p0')}/{y.replace('{p', '{p1')}" for x in options for y in options})
    routes = [route(f"r{i}", t, index=i) for i, t in enumerate(templates)]
    tbl = table(*routes)
    parsed = {r.id: parse_template(r.match.path) for r in routes}
    ordered = sorted(routes, key=lambda r: (parsed[r.id].path_key, r.index))
    words = ["a.json", "b.JSON", "x.tar.json", "v7", "7", "z"]
    for first in words:
        for second in words:
            segs = (first, second)
            expected = next((r.id for r in ordered if parsed[r.id].match(segs) is not None), None)
            found = tbl.match("GET", segs, CIMultiDict(), {})
            assert (found.route.id if found else None) == expected, segs


def test_ambiguous_mixed_routes_are_a_config_error_on_the_later_route() -> None:
    """Two routes whose mixed segments may match one text with equal precedence fail to load, naming both routes."""
    text = (
        "version: 1\nupstreams:\n  legacy: {url: 'http://127.0.0.1:9001'}\n  new: {url: 'http://127.0.0.1:9002'}\n"
        "routes:\n  - {id: a, match: {path: '/x/{a}.x'}, mode: legacy}\n"
        "  - {id: b, match: {path: '/x/x.{b}'}, mode: legacy}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("routes.yaml"))
    [issue] = caught.value.issues
    assert (issue.where, issue.line) == ("routes[1] (b).match", 7)
    assert "routes[0] (a) and routes[1] (b): segment 2 '{a}.x' and 'x.{b}'" in issue.message
