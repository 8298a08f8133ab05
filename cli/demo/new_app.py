"""The demo's new service: the same API as legacy, with a handful of differences planted on purpose.

The planted differences, which the shadow comparison is meant to find:
- customers: `phone` is renamed `phone_number`;
- catalog prices: some SKUs (every fourth, starting with the second) carry a float artefact, 19.990000001;
- orders (detail and create): an extra `"currency": "EUR"` field;
- search: every 17th search request fails with a 500;
- /reports/sales: the new report format (named fields, revenue in cents, currency).
`meta.generated_at` on the orders list differs on every call in both apps: noise, not a difference.
Everything else answers exactly as legacy does, only without legacy's small delays.
"""

from __future__ import annotations

from aiohttp import web

from cli.demo import data
from cli.demo.legacy_app import (
    STATE,
    DemoState,
    get_customer,
    health,
    json_response,
    not_found,
    orders_page,
    read_new_order,
)

SEARCH_FAILURE_EVERY = 17
CURRENCY = "EUR"


def has_price_artefact(sku: str) -> bool:
    """True for the SKUs whose price the new service rounds differently (SKU-1001, SKU-1005, ...)."""
    return int(sku.rsplit("-", 1)[1]) % 4 == 1


def new_catalog_entry(item: data.CatalogItem) -> dict[str, object]:
    entry = data.catalog_entry(item)
    if has_price_artefact(item.sku):
        # The new service computes prices in floating point from a decimal type; some values come out long.
        entry["price"] = round(item.price_cents / 100 + 1e-9, 9)
    return entry


async def list_orders(request: web.Request) -> web.Response:
    return orders_page(request)


async def get_order(request: web.Request) -> web.Response:
    order = data.DATA.order(int(request.match_info["id"]))
    return json_response({**data.order_detail(order), "currency": CURRENCY}) if order else not_found("order")


async def create_order(request: web.Request) -> web.Response:
    order = await read_new_order(request)
    if isinstance(order, web.Response):
        return order
    state = request.app[STATE]
    order_id, state.next_order_id = state.next_order_id, state.next_order_id + 1
    return json_response({"id": order_id, **order, "currency": CURRENCY}, status=201)


async def get_customer_renamed(request: web.Request) -> web.Response:
    try:
        customer = data.DATA.customer(int(request.match_info["id"]))
    except ValueError:
        return await get_customer(request)  # the same 404 as legacy
    if customer is None:
        return not_found("customer")
    profile = data.customer_profile(customer)
    return json_response({("phone_number" if k == "phone" else k): v for k, v in profile.items()})


async def list_catalog(request: web.Request) -> web.Response:
    items = [new_catalog_entry(i) for i in data.DATA.catalog]
    return json_response({"items": items, "count": len(items)})


async def get_catalog_item(request: web.Request) -> web.Response:
    item = data.DATA.item(request.match_info["sku"])
    return json_response(new_catalog_entry(item)) if item else not_found("item")


async def search(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.searches += 1
    if state.searches % SEARCH_FAILURE_EVERY == 0:
        return json_response({"error": "internal", "message": "search index unavailable"}, status=500)
    query = request.query.get("q", "")
    results = [new_catalog_entry(i) for i in data.search_catalog(query)]
    return json_response({"query": query, "results": results, "count": len(results)})


async def sales_report(request: web.Request) -> web.Response:
    periods = [
        {"month": month, "orders": count, "revenue_cents": cents} for month, count, cents in data.sales_by_month()
    ]
    return json_response({"report": "sales", "currency": CURRENCY, "periods": periods})


def make_new_app() -> web.Application:
    """The new service as an aiohttp application."""
    app = web.Application()
    app[STATE] = DemoState()
    app.router.add_get("/health", health)
    app.router.add_get("/api/orders", list_orders)
    app.router.add_post("/api/orders", create_order)
    app.router.add_get(r"/api/orders/{id:\d+}", get_order)
    app.router.add_get("/api/customers/{id}", get_customer_renamed)
    app.router.add_get("/api/catalog/items", list_catalog)
    app.router.add_get("/api/catalog/items/{sku}", get_catalog_item)
    app.router.add_get("/api/search", search)
    app.router.add_get("/reports/sales", sales_report)
    return app
