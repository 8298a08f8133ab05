"""Deterministic fixture data shared by the demo's legacy and new apps.

Both apps build their answers from these same records, so every difference between them is one written on
purpose in the app, never an accident of data. The records come from a seeded generator: same data every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SEED = 20240601
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

_FIRST = ("Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia")
_LAST = ("Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen", "Dijkstra", "Perlman")
_PRODUCTS = (
    ("Espresso beans", "coffee"),
    ("Filter papers", "coffee"),
    ("Pour-over kettle", "equipment"),
    ("Burr grinder", "equipment"),
    ("Ceramic mug", "tableware"),
    ("Milk jug", "equipment"),
    ("Decaf beans", "coffee"),
    ("Tea sampler", "tea"),
    ("Matcha whisk", "tea"),
    ("Travel flask", "tableware"),
    ("Cold brew jar", "equipment"),
    ("Cocoa tin", "pantry"),
)
_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str
    email: str
    phone: str
    tier: str
    created_at: str


@dataclass(frozen=True, slots=True)
class CatalogItem:
    sku: str
    name: str
    category: str
    price_cents: int
    stock: int


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    customer_id: int
    status: str
    lines: tuple[OrderLine, ...]
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class DemoData:
    customers: tuple[Customer, ...]
    catalog: tuple[CatalogItem, ...]
    orders: tuple[Order, ...]

    def customer(self, customer_id: int) -> Customer | None:
        return next((c for c in self.customers if c.id == customer_id), None)

    def item(self, sku: str) -> CatalogItem | None:
        return next((i for i in self.catalog if i.sku == sku), None)

    def order(self, order_id: int) -> Order | None:
        return next((o for o in self.orders if o.id == order_id), None)


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def build_data(seed: int = SEED) -> DemoData:
    """The demo's records: 10 customers, 12 catalog items, 60 orders, identical for the same seed."""
    rnd = random.Random(seed)
    customers = tuple(
        Customer(
            id=i + 1,
            name=f"{_FIRST[i]} {_LAST[i]}",
            email=f"{_FIRST[i].lower()}.{_LAST[i].lower()}@example.com",
            phone=f"+31 20 {rnd.randrange(100, 999)} {rnd.randrange(1000, 9999)}",
            tier=rnd.choice(("basic", "plus", "pro")),
            created_at=_stamp(EPOCH - timedelta(days=rnd.randrange(30, 900))),
        )
        for i in range(len(_FIRST))
    )
    catalog = tuple(
        CatalogItem(
            sku=f"SKU-{1000 + i}",
            name=name,
            category=category,
            price_cents=rnd.randrange(300, 13000, 10) - 1,  # prices end in 9: 19.99, 4.49, ...
            stock=rnd.randrange(0, 250),
        )
        for i, (name, category) in enumerate(_PRODUCTS)
    )
    orders = []
    for i in range(60):
        created = EPOCH + timedelta(hours=rnd.randrange(0, 24 * 150), minutes=rnd.randrange(60))
        picked = rnd.sample(catalog, rnd.randrange(1, 4))
        orders.append(
            Order(
                id=i + 1,
                customer_id=rnd.choice(customers).id,
                status=rnd.choice(_STATUSES),
                lines=tuple(OrderLine(it.sku, rnd.randrange(1, 4), it.price_cents) for it in picked),
                created_at=_stamp(created),
                updated_at=_stamp(created + timedelta(hours=rnd.randrange(1, 96))),
            )
        )
    return DemoData(customers=customers, catalog=catalog, orders=tuple(orders))


DATA = build_data()

TAX_RATE = 0.21


def money(cents: int) -> float:
    """Cents as the two-decimal float the legacy API has always returned (19.99)."""
    return round(cents / 100, 2)


def order_totals(order: Order) -> dict[str, float]:
    subtotal = sum(line.quantity * line.unit_price_cents for line in order.lines)
    tax = round(subtotal * TAX_RATE)
    return {"subtotal": money(subtotal), "tax": money(tax), "total": money(subtotal + tax)}


def order_summary(order: Order) -> dict[str, object]:
    """An order as listed in GET /api/orders."""
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status,
        "total": order_totals(order)["total"],
        "updated_at": order.updated_at,
    }


def order_detail(order: Order, data: DemoData = DATA) -> dict[str, object]:
    """An order as returned by GET /api/orders/{id}: lines, totals and a customer reference."""
    customer = data.customer(order.customer_id)
    return {
        "id": order.id,
        "status": order.status,
        "customer": {"id": order.customer_id, "name": customer.name if customer else None},
        "items": [
            {
                "sku": line.sku,
                "name": item.name if (item := data.item(line.sku)) else None,
                "quantity": line.quantity,
                "unit_price": money(line.unit_price_cents),
                "line_total": money(line.quantity * line.unit_price_cents),
            }
            for line in order.lines
        ],
        "totals": order_totals(order),
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def customer_profile(customer: Customer) -> dict[str, object]:
    """A customer as the legacy API returns it (the new API renames `phone`)."""
    return {
        "id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "phone": customer.phone,
        "tier": customer.tier,
        "created_at": customer.created_at,
    }


def catalog_entry(item: CatalogItem) -> dict[str, object]:
    """A catalog item with the legacy two-decimal price."""
    return {
        "sku": item.sku,
        "name": item.name,
        "category": item.category,
        "price": money(item.price_cents),
        "in_stock": item.stock > 0,
    }


def search_catalog(query: str, data: DemoData = DATA) -> list[CatalogItem]:
    """Catalog items whose name or category contains `query` (case-insensitive); empty query matches nothing."""
    needle = query.strip().lower()
    if not needle:
        return []
    return [i for i in data.catalog if needle in i.name.lower() or needle in i.category.lower()]


def sales_by_month(data: DemoData = DATA) -> list[tuple[str, int, int]]:
    """(YYYY-MM, order count, revenue in cents) for every month with non-cancelled orders, oldest first."""
    months: dict[str, tuple[int, int]] = {}
    for order in data.orders:
        if order.status == "cancelled":
            continue
        month = order.created_at[:7]
        count, cents = months.get(month, (0, 0))
        subtotal = sum(line.quantity * line.unit_price_cents for line in order.lines)
        months[month] = (count + 1, cents + subtotal)
    return [(m, c, cents) for m, (c, cents) in sorted(months.items())]


def now_stamp() -> str:
    """The current time as the apps stamp responses: ISO 8601 UTC with microseconds, so every call differs."""
    return _stamp(datetime.now(UTC))
