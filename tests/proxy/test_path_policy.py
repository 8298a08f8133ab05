"""The path policy (issue 10): no spelling of a route's path reaches another upstream. Case, `;` parameters (raw or
`%3B`) and trailing dots or spaces are matched away; segments that would read as a dot segment are refused; and,
as properties over arbitrary paths, canonicalisation is idempotent and what is forwarded routes like what matched.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.config.model import Match, Route
from proxy.paths import PathError, canonical_path
from proxy.routing import AmbiguousRoutesError, RouteTable
from proxy.templates import TemplateError, parse_template

TEMPLATES = ("/admin/**", "/api/orders/{id:int}", "/api/orders", "/Files/{name}", "/static/*/x", "/a/b")


def build(*templates: str) -> RouteTable:
    return RouteTable.build(
        [
            Route(id=t, index=i, match=Match(path=t), mode="new", legacy="legacy", upstream=f"up{i}")
            for i, t in enumerate(templates)
        ]
    )


TABLE = build(*TEMPLATES)


def routed(raw: str) -> str | None:
    """The id of the route `raw` reaches (None: the default upstream); PathError when it is refused."""
    canon = canonical_path(raw)
    found = TABLE.match("GET", canon.segments, {}, {})
    return found.route.id if found is not None else None


@pytest.mark.parametrize(
    ("raw", "route_id"),
    [
        ("/admin", "/admin/**"),
        ("/ADMIN", "/admin/**"),
        ("/Admin/x", "/admin/**"),
        ("/admin;x/secret", "/admin/**"),
        ("/admin%3Bx", "/admin/**"),
        ("/admin%3bx/y", "/admin/**"),
        ("/admin.", "/admin/**"),
        ("/admin...", "/admin/**"),
        ("/admin%2e", "/admin/**"),
        ("/admin%20", "/admin/**"),
        ("/aDmIn;jsessionid=1./x", "/admin/**"),
        ("/API/Orders/42", "/api/orders/{id:int}"),
        ("/api/orders/42;v=1", "/api/orders/{id:int}"),
        ("/api/orders/42.", "/api/orders/{id:int}"),
        ("/api/orders;x", "/api/orders"),
        ("/files/a.txt", "/Files/{name}"),
        ("/STATIC/q/X", "/static/*/x"),
        ("/adminx", None),
        ("/admi", None),
    ],
)
def test_variants_of_a_routed_path_reach_its_route(raw: str, route_id: str | None) -> None:
    """Case, `;params`, `%3B`, trailing dots and spaces never move a request off the route of its plain path."""
    assert routed(raw) == route_id


@pytest.mark.parametrize("raw", ["/admin/..;/x", "/x/..;/admin", "/;x/admin", "/%3B/admin", "/.../admin", "/.%20/a"])
def test_segments_that_read_as_dot_segments_or_nothing_are_refused(raw: str) -> None:
    """A segment that is empty or a dot segment once `;...` and trailing dots go is refused, never routed."""
    with pytest.raises(PathError) as info:
        routed(raw)
    assert info.value.reason == "ambiguous_segment"


def test_routes_differing_only_in_case_are_ambiguous() -> None:
    """Two routes whose literals differ only in case match the same requests: the config is refused."""
    with pytest.raises(AmbiguousRoutesError):
        build("/Admin/x", "/admin/X")


@pytest.mark.parametrize("template", ["/admin;x", "/admin%3Bx", "/admin.", "/a/b./c", "/a%20"])
def test_templates_no_request_could_match_are_refused(template: str) -> None:
    """A literal holding ';' or ending in a dot or space could never match (requests are matched without them)."""
    with pytest.raises(TemplateError):
        parse_template(template)


# --- properties ---------------------------------------------------------------------------------------------------

SEGMENT_CHARS = st.sampled_from(
    ["a", "A", "d", "M", "i", "n", "x", "0", "4", "2", ".", ";", "=", "~", "-", "_", " ", "%", "%3B", "%2e", "%2E",
     "%20", "%41", "%2F", "%25", "%zz", "é", "\\", "#", "?", ":", "@"]
)  # fmt: skip
SEGMENT = st.lists(SEGMENT_CHARS, max_size=6).map("".join)
WORDS = st.sampled_from(
    ["admin", "ADMIN", "api", "orders", "Orders", "42", "files", "static", "x", "a", "b", ".", ".."]
)
RAW_PATH = st.lists(st.one_of(SEGMENT, WORDS), min_size=0, max_size=6).map(lambda segs: "/" + "/".join(segs))


@settings(max_examples=400, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(RAW_PATH)
@example("/admin;x/..;/y")
@example("/a/%2e%2E/b.")
def test_canonical_path_is_idempotent(raw: str) -> None:
    """Canonicalising the canonical path gives the same canonical path, keys and flag (or the raw path is refused)."""
    try:
        once = canonical_path(raw)
    except PathError:
        return
    assert canonical_path(once.path) == once


@settings(max_examples=400, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(RAW_PATH)
@example("/ADMIN;x.")
@example("/api/orders/42;v=1/..")
def test_forwarded_path_routes_like_the_matched_one(raw: str) -> None:
    """The path the proxy forwards (the canonical one) is matched to the same route as the request was."""
    try:
        canon = canonical_path(raw)
    except PathError:
        return
    matched = TABLE.match("GET", canon.segments, {}, {})
    again = TABLE.match("GET", canonical_path(canon.path).segments, {}, {})
    assert (matched.route.id if matched else None) == (again.route.id if again else None)


VARIANTS = st.sampled_from(["upper", "title", "params", "encoded-params", "dot", "dots", "space", "encoded-dot"])


def _vary(segment: str, how: str) -> str:
    return {
        "upper": segment.upper(),
        "title": segment.title(),
        "params": segment + ";p=1",
        "encoded-params": segment + "%3Bp",
        "dot": segment + ".",
        "dots": segment + "..",
        "space": segment + "%20",
        "encoded-dot": segment + "%2E",
    }[how]


@settings(max_examples=300, database=None)
@given(
    st.sampled_from(["/admin/x", "/api/orders/42", "/api/orders", "/files/n", "/static/s/x", "/a/b", "/elsewhere"]),
    st.lists(st.tuples(st.integers(min_value=0, max_value=3), VARIANTS), max_size=4),
)
def test_no_variant_of_a_path_reaches_another_route(path: str, changes: list[tuple[int, str]]) -> None:
    """Any mix of case, `;params`, `%3B`, trailing dots and spaces on any segments: the request reaches the route
    its plain path reaches, or none other (an unrouted plain path stays unrouted)."""
    segments = path[1:].split("/")
    for index, how in changes:
        if index < len(segments):
            segments[index] = _vary(segments[index], how)
    assert routed("/" + "/".join(segments)) == routed(path)
