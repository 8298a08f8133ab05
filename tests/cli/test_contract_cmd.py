"""`strangler contract ROUTE` on pairs compared by the real proxy pipeline between loopback back ends whose JSON
shapes differ: each drift kind, apart from value differences; the JSON Schema per side accepts the bodies seen."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from cli.main import app
from tests.reports.test_export import SCHEMA_PATH, schema_errors
from tests.shadow.shadow_fixtures import backends, shadow_proxy

ENV = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
ROUTES = """
- id: orders
  match: {path: "/orders/{id:int}"}
  mode: shadow
- id: quiet
  match: {path: "/quiet"}
  mode: legacy
"""
STORE = "sample_matches: 100%"


def legacy_body(n: int) -> dict[str, Any]:
    return {"id": n, "total": str(n * 10), "state": ["open", "paid"][n % 2], "tags": ["a"], "phone": "020",
            "note": "x", "items": [{"sku": f"S{n}", "qty": 1}]}  # fmt: skip


def new_body(n: int) -> dict[str, Any]:
    body: dict[str, Any] = {"id": n, "total": n * 10, "state": ["OPEN", "PAID"][n % 2], "tags": {"a": True},
                            "phone_number": "020", "items": [{"sku": f"S{n}", "qty": 1}]}  # fmt: skip
    if n % 2:
        body["note"] = "x"
    return body


def _serve(make: Any) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        n = int(request.path.rsplit("/", 1)[1])
        if n == 99:
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response(make(n))

    return handler


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve orders compared through the real proxy, plus one request whose both sides answer 500."""
    tmp = tmp_path_factory.mktemp("contract")

    async def drive() -> None:
        async with (
            backends(_serve(legacy_body), _serve(new_body)) as (legacy, new),
            shadow_proxy(tmp, legacy.url, new.url, ROUTES, store=STORE) as sp,
        ):
            for n in [*range(1, 13), 99]:
                await sp.request("GET", f"/orders/{n}")

    asyncio.run(drive())
    return tmp / "routes.yaml"


def test_contract_json_names_each_drift(store: Path) -> None:
    """removed, added, type_changed (string→number, array→object), optionality_changed and values_changed are
    told apart; fields that only differ in value (none here) and error bodies do not count."""
    code, out, err = run("contract", "orders", "--config", store, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["route"] == "orders"
    assert doc["documents"] == {"legacy": 12, "new": 12}  # the 500 pair is left out
    drifts = {f["path"]: f["drift"] for f in doc["fields"]}
    assert drifts == {
        "$": "none",
        "$.id": "none",
        "$.items": "none",
        "$.items[*]": "none",
        "$.items[*].qty": "none",
        "$.items[*].sku": "none",
        "$.note": "optionality_changed",
        "$.phone": "removed",
        "$.phone_number": "added",
        "$.state": "values_changed",
        "$.tags": "type_changed",
        "$.total": "type_changed",
    }
    note = next(f for f in doc["fields"] if f["path"] == "$.note")
    assert note["legacy"] == {"types": ["string"], "presence": 1.0, "values": ["x"]}
    assert note["new"]["presence"] == 0.5
    assert "error" not in drifts


def test_contract_table_lists_only_drifted_fields(store: Path) -> None:
    """The table shows the drifted fields and a count; --all adds the rest."""
    code, out, err = run("contract", "orders", "--config", store)
    assert code == 0, err
    assert "6 of 12 fields drifted" in out
    assert "type_changed" in out
    assert "$.items[*].sku" not in out
    code, out, _ = run("contract", "orders", "--config", store, "--all")
    assert "$.items[*].sku" in out


def test_contract_jsonschema_accepts_each_sides_bodies(store: Path) -> None:
    """--format jsonschema gives a schema per side that accepts that side's bodies and rejects the other's."""
    code, out, err = run("contract", "orders", "--config", store, "--format", "jsonschema")
    assert code == 0, err
    schemas = json.loads(out)
    for n in range(1, 13):
        assert schema_errors(legacy_body(n), schemas["legacy"], schemas["legacy"]) == []
        assert schema_errors(new_body(n), schemas["new"], schemas["new"]) == []
    assert schema_errors(new_body(2), schemas["legacy"], schemas["legacy"]) != []


def test_contract_unknown_route_is_one_line_error(store: Path) -> None:
    """An unknown route id is an error naming the known ones."""
    code, _, err = run("contract", "nope", "--config", store)
    assert code == 1
    assert "unknown route 'nope' (known: orders, quiet)" in err


def test_report_has_a_contract_drift_section(store: Path) -> None:
    """`report` shows each route's drifted fields (JSON: the contract document, drifted fields only, valid against
    docs/report.schema.json); a route with no stored bodies is left out."""
    code, out, err = run("report", "--config", store, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert schema_errors(doc, json.loads(SCHEMA_PATH.read_text()), json.loads(SCHEMA_PATH.read_text())) == []
    _, contract_out, _ = run("contract", "orders", "--config", store, "--format", "json")
    drifted = [f for f in json.loads(contract_out)["fields"] if f["drift"] != "none"]
    assert [c["route"] for c in doc["contracts"]] == ["orders"]
    assert doc["contracts"][0]["fields"] == drifted
    assert {f["drift"] for f in drifted} >= {"removed", "added", "type_changed"}
    code, out, err = run("report", "--config", store)
    assert code == 0, err
    assert "Contract drift" in out
    assert "Contract of orders: 6 of 12 fields drifted" in out
    assert "Contract of quiet" not in out
