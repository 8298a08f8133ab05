"""The demo's legacy back end: a small orders/customers/catalog API as it has always answered.

The new app (`cli.demo.new_app`) reuses most of these handlers; where the two differ, it is on purpose and
listed there. Legacy is a little slower on a few endpoints (sleeps of at most 5 ms) so latency comparison shows.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from aiohttp import web

from cli.demo import data


@dataclass(slots=True)
class DemoState:
    """Per-app mutable counters: created order ids and search requests seen."""

    next_order_id: int = 1001
    searches: int = 0


STATE = web.AppKey("demo_state", DemoState)
# Legacy's extra latency per endpoint, seconds; kept small so tests stay fast.
LEGACY_DELAY = {"orders": 0.004, "order": 0.003, "catalog": 0.002, "search": 0.005}


def json_response(body: object, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, separators=(",", ":")))


def not_found(what: str) -> web.Response:
    return json_response({"error": "not_found", "message": f"{what} not found"}, status=404)


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def _page_args(request: web.Request) -> tuple[int, int] | None:
    try:
        page = int(request.query.get("page", "1"))
        per_page = int(request.query.get("per_page", "20"))
    except ValueError:
        return None
    if page < 1 or not 1 <= per_page <= 100:
        return None
    return page, per_page


def orders_page(request: web.Request) -> web.Response:
    """GET /api/orders body shared by both apps; `meta.generated_at` differs on every call (the demo's noise)."""
    args = _page_args(request)
    if args is None:
        return json_response({"error": "bad_request", "message": "page >= 1, 1 <= per_page <= 100"}, status=400)
    page, per_page = args
    orders = data.DATA.orders
    chunk = orders[(page - 1) * per_page : page * per_page]
    return json_response(
        {
            "data": [data.order_summary(o) for o in chunk],
            "meta": {
                "page": page,
                "per_page": per_page,
                "total": len(orders),
                "pages": -(-len(orders) // per_page),
                "generated_at": data.now_stamp(),
            },
        }
    )


async def list_orders(request: web.Request) -> web.Response:
    await asyncio.sleep(LEGACY_DELAY["orders"])
    return orders_page(request)


async def get_order(request: web.Request) -> web.Response:
    await asyncio.sleep(LEGACY_DELAY["order"])
    order = data.DATA.order(int(request.match_info["id"]))
    return json_response(data.order_detail(order)) if order else not_found("order")


async def read_new_order(request: web.Request) -> dict[str, object] | web.Response:
    """Validate a POST /api/orders body into an order document (without id), or an error response."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return json_response({"error": "bad_request", "message": "body must be JSON"}, status=400)
    if not isinstance(body, dict) or not isinstance(body.get("items"), list) or not body["items"]:
        return json_response({"error": "bad_request", "message": "items must be a non-empty list"}, status=400)
    customer_id = body.get("customer_id")
    if not isinstance(customer_id, int) or data.DATA.customer(customer_id) is None:
        return json_response({"error": "unprocessable", "message": "unknown customer_id"}, status=422)
    items: list[dict[str, object]] = []
    subtotal = 0
    for entry in body["items"]:
        item = data.DATA.item(str(entry.get("sku"))) if isinstance(entry, dict) else None
        quantity = entry.get("quantity", 1) if isinstance(entry, dict) else 0
        if item is None or not isinstance(quantity, int) or quantity < 1:
            return json_response({"error": "unprocessable", "message": f"bad item {entry!r}"}, status=422)
        subtotal += quantity * item.price_cents
        items.append({"sku": item.sku, "quantity": quantity, "unit_price": data.money(item.price_cents)})
    tax = round(subtotal * data.TAX_RATE)
    order: dict[str, object] = {
        "status": "pending",
        "customer_id": customer_id,
        "items": items,
        "totals": {"subtotal": data.money(subtotal), "tax": data.money(tax), "total": data.money(subtotal + tax)},
    }
    return order


async def create_order(request: web.Request) -> web.Response:
    order = await read_new_order(request)
    if isinstance(order, web.Response):
        return order
    state = request.app[STATE]
    order_id, state.next_order_id = state.next_order_id, state.next_order_id + 1
    return json_response({"id": order_id, **order}, status=201)


async def get_customer(request: web.Request) -> web.Response:
    try:
        customer = data.DATA.customer(int(request.match_info["id"]))
    except ValueError:
        customer = None
    return json_response(data.customer_profile(customer)) if customer else not_found("customer")


async def list_catalog(request: web.Request) -> web.Response:
    await asyncio.sleep(LEGACY_DELAY["catalog"])
    items = [data.catalog_entry(i) for i in data.DATA.catalog]
    return json_response({"items": items, "count": len(items)})


async def get_catalog_item(request: web.Request) -> web.Response:
    item = data.DATA.item(request.match_info["sku"])
    return json_response(data.catalog_entry(item)) if item else not_found("item")


async def search(request: web.Request) -> web.Response:
    await asyncio.sleep(LEGACY_DELAY["search"])
    request.app[STATE].searches += 1
    query = request.query.get("q", "")
    results = [data.catalog_entry(i) for i in data.search_catalog(query)]
    return json_response({"query": query, "results": results, "count": len(results)})


async def sales_report(request: web.Request) -> web.Response:
    """The old report format: positional rows, revenue as a float, no currency."""
    rows = [[month, count, data.money(cents)] for month, count, cents in data.sales_by_month()]
    return json_response({"report": "sales", "columns": ["month", "orders", "revenue"], "rows": rows})


def make_legacy_app() -> web.Application:
    """The legacy back end as an aiohttp application."""
    app = web.Application()
    app[STATE] = DemoState()
    app.router.add_get("/health", health)
    app.router.add_get("/api/orders", list_orders)
    app.router.add_post("/api/orders", create_order)
    app.router.add_get(r"/api/orders/{id:\d+}", get_order)
    app.router.add_get("/api/customers/{id}", get_customer)
    app.router.add_get("/api/catalog/items", list_catalog)
    app.router.add_get("/api/catalog/items/{sku}", get_catalog_item)
    app.router.add_get("/api/search", search)
    app.router.add_get("/reports/sales", sales_report)
    return app
