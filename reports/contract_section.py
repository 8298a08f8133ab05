"""Contract drift per route from the store: the shapes `reports.contract` learns from a route's stored bodies, for
`strangler contract ROUTE` (one route in full) and the report's contract section (the drifted fields of each route
that has stored JSON bodies)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from reports.contract import Contract, Shape, compare_shapes, contract_document, learn_shape, render_contract
from shadow.store.database import Store

REPORT_PAIRS = 1000  # newest compared pairs read per route for the report's section


def route_contract(store: Store, route_id: str, since: float | None, sample: float, limit: int) -> Contract:
    """Both sides' shapes of a route from its newest `limit` stored pairs; a matching pair's bodies count
    `1 / sample` times (`store.sample_matches`), so presence estimates the traffic rather than the mismatches."""
    bodies = store.pair_bodies(route_id, since, limit)
    match_weight = 1 / sample if sample > 0 else 1.0

    def side(name: str) -> Shape:
        return learn_shape(
            (b.data, match_weight if b.outcome == "match" else 1.0, b.truncated) for b in bodies if b.side == name
        )

    return compare_shapes(route_id, side("legacy"), side("new"))


def report_contracts(
    store: Store, route_ids: Iterable[str], since: float | None, sample: float, limit: int = REPORT_PAIRS
) -> tuple[Contract, ...]:
    """The contracts of the routes that have stored JSON bodies on either side (others are left out)."""
    found = (route_contract(store, rid, since, sample, limit) for rid in route_ids)
    return tuple(c for c in found if c.legacy.documents or c.new.documents)


def contracts_section(contracts: Sequence[Contract]) -> list[dict[str, Any]]:
    """The report JSON's "contracts": per route `strangler contract --format json`'s document, drifted fields only."""
    docs = []
    for contract in contracts:
        doc = contract_document(contract)
        doc["fields"] = [f for f in doc["fields"] if f["drift"] != "none"]
        docs.append(doc)
    return docs


def render_contracts(contracts: Sequence[Contract]) -> RenderableType:
    """The terminal report's contract-drift section: each route's drifted fields."""
    return Group(Text("Contract drift", "bold"), *(render_contract(c) for c in contracts))
