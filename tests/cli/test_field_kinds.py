"""Field kinds (added / removed / changed / type changed / mixed) from real traffic through the proxy and shadow
pipeline into a temp SQLite store, read back by `strangler report` in every format and by `noise suggest`; and a
structural change is never classed as noise, even when legacy's own value of the field is volatile."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from cli.main import app
from tests.reports.test_export import validate
from tests.shadow.shadow_fixtures import backends, shadow_proxy

ENV = {"COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
REQUESTS = 12

# `orders`: new drops $.meta.generated_at, a timestamp legacy generates per call (noise sampling on every request).
# `mixed`: new removes $.x on odd requests and changes it on even ones.
ROUTES = """
- id: orders
  match: {path: /orders}
  mode: shadow
  noise: {sample: 1.0}
  readiness: {min_compared: 5}
- id: mixed
  match: {path: /mixed}
  mode: shadow
  readiness: {min_compared: 5}
"""


async def _legacy(request: web.Request) -> web.StreamResponse:
    if request.path == "/orders":
        return web.json_response({"id": 7, "meta": {"generated_at": datetime.now(UTC).isoformat()}})
    return web.json_response({"x": 1})


async def _new(request: web.Request) -> web.StreamResponse:
    if request.path == "/orders":
        return web.json_response({"id": 7, "meta": {}})
    return web.json_response({"x": 2} if int(request.query["n"]) % 2 == 0 else {})


@pytest.fixture
async def filled(tmp_path: Path) -> tuple[Path, Path]:
    """(config, db) after REQUESTS requests to each route through the real proxy; the store is flushed."""
    async with backends(_legacy, _new) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, ROUTES) as sp:
        for n, path in itertools.product(range(REQUESTS), ("/orders", "/mixed")):
            status, _, _, _ = await sp.request("GET", f"{path}?n={n}")
            assert status == 200
    return tmp_path / "routes.yaml", tmp_path / "shadow.db"


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    return result.exit_code, result.stdout, result.stderr


def _report(config: Path, db: Path, *more: str) -> dict[str, Any]:
    code, out, err = run("report", "--config", config, "--db", db, "--format", "json", *more)
    assert code == 0, err
    document = json.loads(out)
    assert validate(document) == []
    return {r["id"]: r for r in document["routes"]}


async def test_removed_volatile_field_is_real_and_never_suggested(filled: tuple[Path, Path]) -> None:
    """A field new removed is real (verdict diverging) although legacy's value of it is a per-call timestamp."""
    config, db = filled
    route = _report(config, db)["orders"]
    [field] = route["fields"]
    assert field["path"] == "$.meta.generated_at"
    assert field["kind"] == "removed"
    assert field["noise"] is False
    assert field["suggested_ignore"] is False
    assert route["noise_only"] == 0
    assert route["mismatched"] == route["compared"] == REQUESTS
    assert route["verdict"] == "diverging"
    assert route["suggested_ignore_fields"] == []


async def test_noise_suggest_withholds_structural_change_and_says_why(filled: tuple[Path, Path]) -> None:
    """`noise suggest` does not propose the removed field and prints why; its JSON names it as not suggested."""
    config, db = filled
    code, out, _ = run("noise", "suggest", "orders", "--config", config, "--db", db)
    assert code == 0
    assert "ignore_fields" not in out
    assert "not suggested: $.meta.generated_at — removed by new (a structural change is never noise)" in out.replace(
        "\n", " "
    )
    code, out, _ = run("noise", "suggest", "orders", "--config", config, "--db", db, "--format", "json")
    assert code == 0
    [route] = json.loads(out)["routes"]
    assert route["ignore_fields"] == []
    assert route["not_suggested"] == [
        {
            "path": "$.meta.generated_at",
            "kind": "removed",
            "reason": "removed by new (a structural change is never noise)",
        }
    ]
    code, _, _ = run("noise", "suggest", "orders", "--config", config, "--db", db, "--apply")
    assert code == 0
    assert "ignore_fields" not in config.read_text()


async def test_field_removed_in_some_pairs_and_changed_in_others_is_mixed(filled: tuple[Path, Path]) -> None:
    """A field removed by new in some pairs and changed in others has kind mixed (and counts as structural)."""
    config, db = filled
    route = _report(config, db, "--route", "mixed")["mixed"]
    [field] = route["fields"]
    assert (field["path"], field["kind"], field["count"]) == ("$.x", "mixed", REQUESTS)
    assert field["kinds"] == {"changed": REQUESTS // 2, "removed": REQUESTS // 2}
    assert route["verdict"] == "diverging"


async def test_kinds_show_in_table_markdown_html_and_junit(filled: tuple[Path, Path]) -> None:
    """The terminal field table, Markdown, HTML and JUnit reports name each field's kind."""
    config, db = filled
    base = ("report", "--config", config, "--db", db)
    code, out, _ = run(*base, "--route", "orders")
    assert code == 0
    assert "kind" in out
    row = next(line for line in out.splitlines() if "$.meta.generated_at" in line)  # the field table, first
    assert "removed" in row
    assert "real" in row
    code, out, _ = run(*base, "--format", "markdown")
    assert code == 0
    assert "| field | kind |" in out
    assert "| `$.meta.generated_at` | removed |" in out
    assert "| `$.x` | mixed |" in out
    code, out, _ = run(*base, "--format", "html")
    assert code == 0
    assert "<th>kind</th>" in out
    assert "<td><code>$.meta.generated_at</code></td><td>removed</td>" in out
    code, out, _ = run(*base, "--format", "junit")
    assert code == 0
    assert "$.meta.generated_at (removed)" in out


async def test_flip_gate_refuses_a_route_whose_only_difference_is_a_removed_volatile_field(
    filled: tuple[Path, Path],
) -> None:
    """`routes flip` judges the removed timestamp real as the report does: diverging, refused, file unchanged."""
    config, db = filled
    before = config.read_text()
    code, out, err = run("routes", "flip", "orders", "--to", "new", "--config", config, "--db", db)
    assert code == 1
    assert "verdict: diverging" in err.replace("\n", " ")
    assert "orders: readiness (diverging)" in out
    assert config.read_text() == before
