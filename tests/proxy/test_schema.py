"""The published JSON Schema of routes.yaml is generated from the loader's key tables and kept in sync."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from proxy.loader import load_config
from proxy.schema import ROUTE, TOP, Section, json_schema, render_json

ROOT = Path(__file__).resolve().parents[2]


def _properties(schema: object) -> dict[str, object]:
    assert isinstance(schema, dict)
    properties = schema["properties"]
    assert isinstance(properties, dict)
    return properties


def test_checked_in_schema_matches_the_code() -> None:
    """docs/routes.schema.json is exactly what the code generates."""
    checked_in = (ROOT / "docs" / "routes.schema.json").read_text(encoding="utf-8")
    assert checked_in == render_json(), "docs/routes.schema.json is stale: run `make schema`"


def test_module_prints_the_schema() -> None:
    """`python -m proxy.schema` prints the same JSON that render_json returns."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy.schema"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout == render_json()
    assert json.loads(done.stdout)["title"] == "strangler routes.yaml"


def test_schema_lists_every_key_the_loader_knows() -> None:
    """Top-level and route properties are exactly the loader's key tables, each with a description."""
    schema = json_schema()
    top = _properties(schema)
    route_schema = _properties(schema)["routes"]
    assert isinstance(route_schema, dict)
    route = _properties(route_schema["items"])
    assert set(top) == set(TOP.keys)
    assert set(route) == set(ROUTE.keys)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["version"]
    for properties in (top, route):
        for key, value in properties.items():
            assert isinstance(value, dict)
            assert value.get("description"), f"{key} has no description"


def test_demo_config_uses_only_schema_keys() -> None:
    """Every key written in the top-level routes.yaml is in the schema, and the loader accepts the file."""
    path = ROOT / "routes.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(document) <= set(TOP.keys)
    for written in document["routes"]:
        assert set(written) <= set(ROUTE.keys)
    assert load_config(path).routes


def test_sections_render_closed_objects() -> None:
    """Every fixed-key section renders with additionalProperties false, so editors flag typos too."""

    def walk(spec: object, rendered: object) -> int:
        count = 0
        if isinstance(spec, Section):
            assert isinstance(rendered, dict)
            assert rendered["additionalProperties"] is False
            count += 1
            properties = _properties(rendered)
            for key, child in spec.keys.items():
                count += walk(child, properties[key])
        return count

    assert walk(TOP, json_schema()) > 10
