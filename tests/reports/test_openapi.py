"""`reports.openapi`: reading OpenAPI 3 and Swagger 2 operations, and setting an inventory against them."""

from __future__ import annotations

from typing import Any

import pytest

from reports.inventory import Endpoint, Inventory, Latency
from reports.openapi import Operation, SpecError, compare_spec, matches, spec_operations

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "servers": [{"url": "https://shop.example.com/api/v1"}],
    "paths": {
        "/orders": {"get": {"operationId": "listOrders"}, "post": {"operationId": "createOrder"}},
        "/orders/{orderId}": {"get": {"operationId": "getOrder"}, "parameters": []},
        "/health": {"get": {}},
    },
}


def endpoint(template: str, *by_method: tuple[str, int], route: str | None = None) -> Endpoint:
    return Endpoint(
        template=template,
        example=template,
        by_method=by_method,
        requests=sum(n for _, n in by_method),
        share=0.0,
        route=route,
        uncovered=(),
        latency=Latency(None, None),
        statuses=(),
    )


def test_operations_carry_the_servers_base_path_and_skip_non_method_keys() -> None:
    """OpenAPI 3's servers[0] path goes in front of every path; `parameters` beside the methods is not one."""
    base, ops = spec_operations(SPEC)
    assert base == "/api/v1"
    assert ops == (
        Operation("GET", "/api/v1/orders", "listOrders"),
        Operation("POST", "/api/v1/orders", "createOrder"),
        Operation("GET", "/api/v1/orders/{orderId}", "getOrder"),
        Operation("GET", "/api/v1/health", None),
    )


def test_swagger_2_uses_base_path() -> None:
    """Swagger 2's basePath is the prefix."""
    base, ops = spec_operations({"swagger": "2.0", "basePath": "/v2/", "paths": {"/pets": {"get": {}}}})
    assert (base, ops) == ("/v2", (Operation("GET", "/v2/pets", None),))


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ([1, 2], "not a mapping"),
        ({"paths": {}}, "no 'openapi'"),
        ({"openapi": "3.1.0"}, "no 'paths'"),
        ({"openapi": "3.1.0", "paths": {"orders": {}}}, "'orders' is not a path"),
    ],
)
def test_documents_that_are_not_openapi_are_refused_saying_what_is_missing(doc: object, says: str) -> None:
    """A document without the fields an OpenAPI description has is refused with the missing part named."""
    with pytest.raises(SpecError, match=says):
        spec_operations(doc)


@pytest.mark.parametrize(
    ("spec_path", "template", "same"),
    [
        ("/api/v1/orders/{orderId}", "/api/v1/orders/{id:int}", True),
        ("/api/v1/orders/{orderId}", "/api/v1/orders/recent", True),  # a literal value of the spec's parameter
        ("/api/v1/Orders", "/api/v1/orders", True),  # literal segments ignore case, as routes do
        ("/api/v1/orders", "/api/v1/orders/{id:int}", False),
        ("/db/{table}.json", "/db/orders.json", True),
        ("/api/v1/orders/{orderId}", "/api/v1/*/{id:int}", True),  # a route's one-segment `*`
        ("/api/v1/orders", "/api/v1/customers", False),
    ],
)
def test_a_spec_path_and_a_template_match_segment_by_segment(spec_path: str, template: str, same: bool) -> None:
    """Equal literals (any case) or a parameter on either side, in as many segments."""
    assert matches(spec_path, template) is same


def test_unseen_operations_and_undocumented_traffic_are_told_apart() -> None:
    """Seen operations count once; an operation traffic never reached is unseen; traffic on a template or a method
    the spec lacks is undocumented, busiest first; a wildcard route's traffic is set apart."""
    inventory = Inventory(
        (
            endpoint("/api/v1/orders/{id:int}", ("GET", 40), ("DELETE", 2), route="orders"),
            endpoint("/api/v1/orders", ("GET", 30)),
            endpoint("/api/v1/legacy-export", ("GET", 9)),
            endpoint("/admin/**", ("GET", 5), route="admin"),
        ),
        86,
    )
    base, ops = spec_operations({**SPEC, "paths": {**SPEC["paths"], "/admin/users": {"get": {}}}})
    ops = (*ops, Operation("GET", "/admin/users", None))  # outside the base path, under the wildcard route
    cov = compare_spec(inventory, base, ops)
    assert (cov.operations, cov.seen) == (6, 2)
    assert [(u.operation.method, u.operation.path, u.wildcard) for u in cov.unseen] == [
        ("POST", "/api/v1/orders", None),
        ("GET", "/api/v1/health", None),
        ("GET", "/api/v1/admin/users", None),
        ("GET", "/admin/users", "/admin/**"),
    ]
    assert [(d.method, d.template, d.requests) for d in cov.undocumented] == [
        ("GET", "/api/v1/legacy-export", 9),
        ("DELETE", "/api/v1/orders/{id:int}", 2),
    ]
    assert (cov.requests, cov.undocumented_requests, cov.wildcard_requests) == (86, 11, 5)
