"""The endpoint inventory's clustering, coverage and proposals (pure functions)."""

from __future__ import annotations

import uuid
from pathlib import Path

from proxy.config.loader import parse_config
from reports.inventory import SLUG_MIN, build_inventory, cluster_paths, propose_routes, route_id_for
from shadow.store.types import PathTraffic
from shadow.values import latency_bucket

CONFIG = """
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}
  new: {url: "http://127.0.0.1:9002"}
defaults: {legacy: legacy, new: new}
routes:
  - id: orders
    match:
      path: /api/orders/{id:int}
      methods: [GET]
    mode: shadow
"""


def test_integer_segments_become_an_int_parameter() -> None:
    """Two or more integers at one position become {id:int}; a lone literal sibling stays literal."""
    paths = [f"/users/{n}" for n in range(1, 51)] + ["/users/me"]
    templates = cluster_paths(paths)
    assert templates["/users/7"] == "/users/{id:int}"
    assert templates["/users/me"] == "/users/me"


def test_a_single_integer_stays_literal() -> None:
    """One integer value is no evidence of a parameter."""
    assert cluster_paths(["/v2/items/3"]) == {"/v2/items/3": "/v2/items/3"}


def test_uuids_become_a_uuid_parameter_apart_from_ints() -> None:
    """UUID values become {id:uuid}, even one of them; ints beside them keep their own typed parameter."""
    u = str(uuid.UUID(int=5))
    templates = cluster_paths(["/users/1", "/users/2", f"/users/{u}"])
    assert templates[f"/users/{u}"] == "/users/{id:uuid}"
    assert templates["/users/1"] == "/users/{id:int}"


def test_nested_parameters_get_distinct_names() -> None:
    """A second id parameter is named after the literal before it."""
    paths = [f"/users/{u}/orders/{o}" for u in (1, 2, 3) for o in (10, 11)]
    assert set(cluster_paths(paths).values()) == {"/users/{id:int}/orders/{order_id:int}"}


def test_many_distinct_words_become_an_untyped_parameter() -> None:
    """SLUG_MIN or more distinct non-id values become {name}; fewer stay literal."""
    many = [f"/db/table{chr(97 + i)}x.json" for i in range(SLUG_MIN)]
    assert set(cluster_paths(many).values()) == {"/db/{name}"}
    few = ["/db/orders.json", "/db/users.json"]
    assert cluster_paths(few) == {p: p for p in few}


def test_hex_ids_become_an_untyped_parameter() -> None:
    """Two or more hex ids (digits and letters, 8+ long) become {id}; an ordinary word beside them stays."""
    templates = cluster_paths(["/blobs/deadbeef01", "/blobs/0a1b2c3d4e", "/blobs/latest"])
    assert templates["/blobs/deadbeef01"] == "/blobs/{id}"
    assert templates["/blobs/latest"] == "/blobs/latest"


def test_paths_of_different_lengths_cluster_apart() -> None:
    """/users/1 and /users/1/orders are clustered separately; the root path is its own template."""
    templates = cluster_paths(["/users/1", "/users/2", "/users/1/orders", "/users/2/orders", "/"])
    assert templates["/users/1/orders"] == "/users/{id:int}/orders"
    assert templates["/"] == "/"


def _row(path: str, n: int, method: str = "GET", route_id: str = "", ms: float = 10.0) -> PathTraffic:
    return PathTraffic(route_id, method, path, n, ((200, n),), ((latency_bucket(ms), n),))


def test_inventory_sums_templates_and_finds_covering_routes() -> None:
    """Requests, share, statuses and latency sum per template; a route matching the example path covers it."""
    config = parse_config(CONFIG, Path("routes.yaml"))
    rows = [_row(f"/users/{n}", 2) for n in range(1, 11)]
    rows += [_row("/api/orders/{id:int}", 60, route_id="orders", ms=50.0)]
    rows += [_row("/api/orders/5", 5, method="DELETE"), _row("/api/orders/6", 5, method="DELETE")]
    inventory = build_inventory(rows, config.routes)
    by_template = {e.template: e for e in inventory.endpoints}
    assert inventory.requests == 90
    users = by_template["/users/{id:int}"]
    assert (users.requests, users.route, users.uncovered, users.statuses) == (20, None, ("GET",), ((200, 20),))
    assert users.latency.p50 is not None
    assert 8 < users.latency.p50 < 12
    # DELETE /api/orders/5 clusters onto the route's template, and is not covered by the GET-only route
    orders = by_template["/api/orders/{id:int}"]
    assert (orders.methods, orders.route, orders.uncovered, orders.share) == (
        ("GET", "DELETE"),
        None,
        ("DELETE",),
        70 / 90,
    )
    assert len(inventory.endpoints) == 2


def test_proposals_validate_with_the_config() -> None:
    """Proposed entries for uncovered templates, appended to the routes, give a config that validates."""
    config = parse_config(CONFIG, Path("routes.yaml"))
    rows = [_row(f"/users/{n}", 1) for n in range(1, 5)] + [_row("/db/orders.json", 3)]
    rows += [_row("/api/orders/5", 1, "DELETE"), _row("/api/orders/6", 1, "DELETE")]
    proposals = propose_routes(build_inventory(rows, config.routes), [r.id for r in config.routes])
    assert {(p.id, p.template, p.methods) for p in proposals} == {
        ("users-id", "/users/{id:int}", ("GET",)),
        ("db-orders-json", "/db/orders.json", ("GET",)),
        ("api-orders-id", "/api/orders/{id:int}", ("DELETE",)),
    }
    text = CONFIG + "".join(p.yaml() for p in proposals)
    assert len(parse_config(text, Path("routes.yaml")).routes) == 4


def test_route_ids_come_from_the_path() -> None:
    """Ids are the template's words joined by '-', parameter types dropped."""
    assert route_id_for("/users/{id:int}/orders") == "users-id-orders"
    assert route_id_for("/") == "root"


def test_template_syntax_in_a_literal_segment_is_percent_encoded() -> None:
    """A path segment '*' or '{x}' stays a literal in its template, written so no route reads it as a wildcard."""
    templates = cluster_paths(["/files/*", "/files/{x}"])
    assert templates == {"/files/*": "/files/%2A", "/files/{x}": "/files/%7Bx%7D"}
