"""The demo back ends: every endpoint answers, and legacy and new differ exactly where the demo plants it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cli.demo import data
from cli.demo.driver import plan_requests, summarize
from cli.demo.legacy_app import make_legacy_app
from cli.demo.new_app import SEARCH_FAILURE_EVERY, has_price_artefact, make_new_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

GET_PATHS = (
    "/health",
    "/api/orders",
    "/api/orders?page=2&per_page=10",
    "/api/orders/1",
    "/api/customers/3",
    "/api/catalog/items",
    "/api/catalog/items/SKU-1000",
    "/api/search?q=coffee",
    "/reports/sales",
)
NEW_ORDER = {"customer_id": 2, "items": [{"sku": "SKU-1002", "quantity": 2}, {"sku": "SKU-1003"}]}


@pytest.fixture
async def legacy(aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_legacy_app())


@pytest.fixture
async def new(aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_new_app())


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    async with client.get(path) as r:
        assert r.status == status, (path, r.status)
        return await r.json()


def without_generated_at(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "meta": {k: v for k, v in body["meta"].items() if k != "generated_at"}}


@pytest.mark.parametrize("path", GET_PATHS)
async def test_every_get_endpoint_answers_json_on_both_apps(legacy: Client, new: Client, path: str) -> None:
    """Each demo GET endpoint answers 200 with a JSON body on legacy and on new."""
    for client in (legacy, new):
        assert await get_json(client, path) is not None


async def test_create_order_returns_201_with_a_fresh_id(legacy: Client, new: Client) -> None:
    """POST /api/orders creates an order (201) with increasing ids and computed totals on both apps."""
    for client in (legacy, new):
        ids = []
        for _ in range(2):
            async with client.post("/api/orders", json=NEW_ORDER) as r:
                assert r.status == 201
                body = await r.json()
            ids.append(body["id"])
            assert body["status"] == "pending"
            assert body["totals"]["total"] > body["totals"]["subtotal"] > 0
        assert ids[1] == ids[0] + 1


async def test_create_order_rejects_bad_bodies(legacy: Client) -> None:
    """A non-JSON body is a 400; an unknown SKU or customer is a 422."""
    async with legacy.post("/api/orders", data=b"not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    async with legacy.post("/api/orders", json={"customer_id": 2, "items": [{"sku": "NOPE"}]}) as r:
        assert r.status == 422
    async with legacy.post("/api/orders", json={"customer_id": 999, "items": [{"sku": "SKU-1000"}]}) as r:
        assert r.status == 422


async def test_missing_resources_are_404_on_both(legacy: Client, new: Client) -> None:
    """Unknown orders, customers and SKUs are 404 with the same body on both apps."""
    for path in ("/api/orders/9999", "/api/customers/999", "/api/customers/abc", "/api/catalog/items/SKU-0"):
        assert await get_json(legacy, path, 404) == await get_json(new, path, 404)


async def test_customer_phone_is_renamed_in_new(legacy: Client, new: Client) -> None:
    """New renames `phone` to `phone_number`; every other customer field is equal."""
    for customer in data.DATA.customers:
        old = await get_json(legacy, f"/api/customers/{customer.id}")
        fresh = await get_json(new, f"/api/customers/{customer.id}")
        assert "phone_number" not in old
        assert "phone" not in fresh
        assert fresh.pop("phone_number") == old.pop("phone")
        assert fresh == old


async def test_order_detail_gains_currency_in_new(legacy: Client, new: Client) -> None:
    """New adds `"currency": "EUR"` to an order; the rest of the order is identical."""
    for order_id in (1, 17, 60):
        old = await get_json(legacy, f"/api/orders/{order_id}")
        fresh = await get_json(new, f"/api/orders/{order_id}")
        assert fresh.pop("currency") == "EUR"
        assert fresh == old
        assert {"items", "totals", "customer", "updated_at"} <= old.keys()


async def test_catalog_prices_differ_only_for_artefact_skus(legacy: Client, new: Client) -> None:
    """New's prices differ from legacy's by a float artefact (< 1e-6) exactly on the artefact SKUs."""
    old = await get_json(legacy, "/api/catalog/items")
    fresh = await get_json(new, "/api/catalog/items")
    differing = set()
    for a, b in zip(old["items"], fresh["items"], strict=True):
        assert {k: v for k, v in a.items() if k != "price"} == {k: v for k, v in b.items() if k != "price"}
        assert abs(a["price"] - b["price"]) < 1e-6
        if a["price"] != b["price"]:
            differing.add(a["sku"])
        assert round(a["price"], 2) == a["price"]  # legacy always has two decimals
    assert differing == {i.sku for i in data.DATA.catalog if has_price_artefact(i.sku)}
    assert differing
    plain = next(i.sku for i in data.DATA.catalog if not has_price_artefact(i.sku))
    assert await get_json(legacy, f"/api/catalog/items/{plain}") == await get_json(new, f"/api/catalog/items/{plain}")


async def test_new_search_fails_every_17th_request(legacy: Client, new: Client) -> None:
    """New answers 500 on exactly every 17th search; legacy never fails; other answers match (prices aside)."""
    failures = []
    for n in range(1, 2 * SEARCH_FAILURE_EVERY + 1):
        async with new.get("/api/search?q=tea") as r:
            if r.status == 500:
                failures.append(n)
            else:
                assert r.status == 200
        async with legacy.get("/api/search?q=tea") as r:
            assert r.status == 200
    assert failures == [SEARCH_FAILURE_EVERY, 2 * SEARCH_FAILURE_EVERY]
    assert await get_json(legacy, "/api/search?q=tea") == await get_json(new, "/api/search?q=tea")


async def test_orders_list_differs_only_by_generated_at(legacy: Client, new: Client) -> None:
    """The orders list is equal on both apps apart from meta.generated_at, which changes on every call."""
    first = await get_json(legacy, "/api/orders?page=3")
    second = await get_json(legacy, "/api/orders?page=3")
    other = await get_json(new, "/api/orders?page=3")
    assert first["meta"]["generated_at"] != second["meta"]["generated_at"]
    assert without_generated_at(first) == without_generated_at(second) == without_generated_at(other)
    assert first["meta"]["total"] == len(data.DATA.orders)
    assert (await get_json(legacy, "/api/orders?per_page=0", 400))["error"] == "bad_request"


async def test_health_is_identical(legacy: Client, new: Client) -> None:
    """/health answers the same on both apps."""
    assert await get_json(legacy, "/health") == await get_json(new, "/health") == {"status": "ok"}


async def test_sales_report_formats_differ_but_agree(legacy: Client, new: Client) -> None:
    """Legacy's positional report and new's named report carry the same months, counts and revenue."""
    old = await get_json(legacy, "/reports/sales")
    fresh = await get_json(new, "/reports/sales")
    assert "rows" in old
    assert "periods" in fresh
    assert [(m, c, round(r * 100)) for m, c, r in old["rows"]] == [
        (p["month"], p["orders"], p["revenue_cents"]) for p in fresh["periods"]
    ]


def test_fixture_data_is_deterministic() -> None:
    """The same seed builds the same records; prices end in 9 cents and timestamps are UTC."""
    assert data.build_data() == data.build_data() == data.DATA
    assert all(i.price_cents % 10 == 9 for i in data.DATA.catalog)
    assert all(o.updated_at.endswith("Z") and o.updated_at > o.created_at for o in data.DATA.orders)


def test_traffic_plan_is_deterministic_and_covers_every_endpoint() -> None:
    """plan_requests gives the same list for the same seed, with user ids, POSTs and every endpoint."""
    plan = plan_requests(400)
    assert plan == plan_requests(400)
    assert len(plan) == 400
    assert all(dict(p.headers).get("X-User-Id") for p in plan)
    assert any(p.method == "POST" and p.body for p in plan)
    prefixes = {"/health", "/api/orders?", "/api/orders/", "/api/customers/", "/api/catalog/items", "/api/search"}
    for prefix in (*prefixes, "/reports/sales", "/api/catalog/items/"):
        assert any(p.path.startswith(prefix) for p in plan), prefix


def test_summarize_groups_metrics_by_route_in_config_order() -> None:
    """summarize() folds (route, upstream, class) counters into one row per route, config order first."""
    counts: dict[tuple[str, ...], float] = {
        ("b", "new", "2xx"): 3.0,
        ("a", "legacy", "2xx"): 2.0,
        ("a", "legacy", "5xx"): 1.0,
        ("unmatched", "legacy", "2xx"): 4.0,
    }
    rows = summarize(counts, {"a": "shadow", "b": "new"}, ["a", "b"])
    assert [r.route for r in rows] == ["a", "b", "unmatched"]
    assert rows[0].total == 3
    assert rows[0].by_class == (("2xx", 2), ("5xx", 1))
    assert rows[1].by_upstream == (("new", 3),)
    assert rows[2].mode == "legacy"
