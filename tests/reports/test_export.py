"""reports.export on a store filled by the real pipeline: JSON against docs/report.schema.json, Markdown, HTML,
JUnit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from proxy.config.loader import load_config
from reports.export import report_document, to_json, to_junit, to_markdown
from reports.export_html import latency_svg, to_html
from reports.summary import Report, build_report
from shadow.store.database import Store
from tests.reports.report_fixtures import Filled, fill

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"
_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}  # fmt: skip


def schema_errors(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> list[str]:
    """Validate against the subset of JSON Schema docs/report.schema.json uses: type, enum, required, properties,
    additionalProperties, items, minimum and local $ref."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return schema_errors(value, target, root, where)
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        ok = any(
            isinstance(value, _TYPES[n]) and not (n in ("integer", "number") and isinstance(value, bool)) for n in names
        )
        if not ok:
            return [f"{where}: {value!r} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        errors.append(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        errors += [f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], root, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected {key!r}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], root, f"{where}[{i}]")
    return errors


def validate(document: Any) -> list[str]:
    schema = json.loads(SCHEMA_PATH.read_text())
    return schema_errors(document, schema, schema)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    filled: Filled = fill(tmp_path_factory, "export")
    with Store.open_readers([filled.db]) as store:
        return build_report(store, load_config(filled.config))


def test_validator_catches_mistakes() -> None:
    """The little validator rejects a wrong type, a missing key and a bad enum value."""
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}, "b": {"enum": [1]}}}
    assert schema_errors({"a": 1}, schema, schema) == []
    assert schema_errors({}, schema, schema)
    assert schema_errors({"a": "1"}, schema, schema)
    assert schema_errors({"a": True}, schema, schema)
    assert schema_errors({"a": 1, "b": 2}, schema, schema)


def test_json_validates_against_the_documented_schema(report: Report) -> None:
    """Real report JSON (after a round trip through text) matches docs/report.schema.json."""
    document = json.loads(to_json(report))
    assert validate(document) == []
    routes = {r["id"]: r for r in document["routes"]}
    assert routes["customers"]["verdict"] == "diverging"
    assert {f["path"] for f in routes["customers"]["fields"]} >= {"$.phone", "$.phone_number"}
    generated = next(f for f in routes["orders-list"]["fields"] if f["path"] == "$.meta.generated_at")
    assert generated["noise"] is True
    assert routes["orders-read"]["latency"]["legacy"]["p99"] > 0
    assert routes["reports"]["match_rate"] is None
    assert document["unrouted"] == [{"method": "GET", "path": "/health", "count": document["traffic"]["unrouted"]}]


def test_json_schema_is_strict_about_required_keys(report: Report) -> None:
    """Dropping a documented key from real output is reported, so the schema really pins the shape."""
    document = report_document(report)
    del document["routes"][0]["latency"]["new"]
    assert any("missing 'new'" in e for e in validate(document))


def test_markdown_has_the_route_and_field_tables(report: Report) -> None:
    """Markdown holds a routes table with verdicts and the per-route field tables."""
    text = to_markdown(report)
    assert "| route | mode |" in text
    assert re.search(r"\| `customers` \| shadow \|.*\*\*diverging\*\*", text)
    assert "## Fields that differ on `customers`" in text
    assert "`$.meta.generated_at`" in text


def test_html_is_one_self_contained_page(report: Report) -> None:
    """HTML: inline style, an inline SVG chart, the route and field tables, nothing loaded from elsewhere."""
    page = to_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    assert '<table id="routes">' in page
    assert '<svg id="latency-chart"' in page
    assert "fields-customers" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page
    assert "<link" not in page


def test_latency_chart_has_bars_per_measured_route(report: Report) -> None:
    """The SVG draws p50 and p99 bars of both sides for each route with compared pairs."""
    svg = latency_svg(report.routes)
    measured = [r for r in report.routes if r.latency.legacy is not None]
    assert svg.count("<rect") == 4 * len(measured)
    assert "orders-read legacy p99" in svg


def test_junit_has_a_testcase_per_route(report: Report) -> None:
    """JUnit: one testcase per route; diverging and candidate errors fail, needs samples is skipped."""
    root = ET.fromstring(to_junit(report))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {r.id for r in report.routes}
    assert cases["customers"].find("failure") is not None
    assert cases["search"].find("failure") is not None
    assert cases["orders-list"].find("failure") is None
    assert cases["reports"].find("skipped") is not None
    suite = root.find("testsuite")
    assert suite is not None
    failing = sum(r.verdict in ("diverging", "candidate errors") for r in report.routes)
    assert suite.get("failures") == str(failing)
