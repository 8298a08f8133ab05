"""`diffs list` and `diffs show` as a reviewer reads them: differing exchanges first, root type changes and removed
keys shown as -/+, large bodies capped with a `--full` hint, long paths shortened, and complete JSON for scripts.

The store is filled by the real proxy and shadow pipeline from loopback back ends; the CLI runs through CliRunner.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from typer.testing import CliRunner

from cli.main import app
from shadow.store.database import Store
from tests.shadow.shadow_fixtures import Handler, backends, shadow_proxy

ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
LONG_KEY = "k" * 5000


def _rows(price: float) -> list[dict[str, object]]:
    return [
        {"id": i, "sku": f"S-{i:04}", "name": f"item {i}", "qty": i % 7, "price": price + i, "tags": ["a", "b"]}
        for i in range(150)
    ]


# What each side answers per path; a path missing on a side answers 500 (a candidate error on the new side).
LEGACY: dict[str, object] = {
    "/api/root": [{"id": 1}, {"id": 2}],
    "/api/rows": {"rows": _rows(1.0), "table": "orders", "page": 1},
    "/api/long": {"data": {LONG_KEY: 1}},
    "/api/same": {"ok": True},
    "/api/boom": {"x": 1},
    "/api/wide": {**{f"k{i:03}": 1 for i in range(150)}, "table": "orders"},
}
NEW: dict[str, object] = {
    "/api/root": {"items": [{"id": 1}, {"id": 2}]},
    "/api/rows": {"rows": _rows(2.0), "page": 1},
    "/api/long": {"data": {LONG_KEY: 2}},
    "/api/same": {"ok": True},
    "/api/wide": {f"k{i:03}": 2 for i in range(150)},
}


def _serving(docs: Mapping[str, object]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path not in docs:
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response(docs[request.path])

    return handler


@dataclass(frozen=True, slots=True)
class Stored:
    config: Path
    ids: dict[str, int]  # request path -> exchange id


async def _fill(tmp: Path) -> None:
    async with backends(_serving(LEGACY), _serving(NEW)) as (legacy, new), shadow_proxy(tmp, legacy.url, new.url) as sp:
        for path in LEGACY:
            await sp.request("GET", path)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    tmp = tmp_path_factory.mktemp("diff-views")
    asyncio.run(_fill(tmp))
    with Store.open_readers([tmp / "shadow.db"]) as store:
        ids = {row.path: row.id for row in store.list_exchanges(pair="candidate", limit=100)}
    return Stored(tmp / "routes.yaml", ids)


def run(stored: Stored, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(stored.config)], env=ENV)
    assert result.exit_code == 0, result.output
    return result.stdout


def body_lines(out: str) -> list[str]:
    """The lines inside the body panel, without its border."""
    panel = out.split("body: - legacy  + new", 1)[1]
    return [line.strip("│").rstrip()[1:] for line in panel.splitlines()[1:] if line.startswith("│")]


def test_list_hides_matches_unless_outcome_all(stored: Stored) -> None:
    """`diffs list` shows only differing exchanges (mismatches, candidate errors); `--outcome all` shows every one."""
    rows = json.loads(run(stored, "diffs", "list", "--format", "json"))
    assert {r["path"] for r in rows} == {"/api/root", "/api/rows", "/api/long", "/api/boom", "/api/wide"}
    assert {r["outcome"] for r in rows} == {"mismatch", "candidate_error"}
    table = run(stored, "diffs", "list")
    assert "/api/same" not in table
    assert "--outcome all" in table
    every = json.loads(run(stored, "diffs", "list", "--outcome", "all", "--format", "json"))
    assert {r["path"] for r in every} == set(LEGACY)
    assert "/api/same" in run(stored, "diffs", "list", "--outcome", "all")
    only = json.loads(run(stored, "diffs", "list", "--outcome", "match", "--format", "json"))
    assert [r["path"] for r in only] == ["/api/same"]


def test_list_says_when_only_matches_were_hidden(tmp_path: Path) -> None:
    """With no differing exchange, the default list says matches were hidden and how to see them."""

    async def fill() -> None:
        same = {"/api/same": {"ok": True}}
        async with (
            backends(_serving(same), _serving(same)) as (legacy, new),
            shadow_proxy(tmp_path, legacy.url, new.url) as sp,
        ):
            await sp.request("GET", "/api/same")

    asyncio.run(fill())
    out = run(Stored(tmp_path / "routes.yaml", {}), "diffs", "list")
    assert "No differing exchanges" in out
    assert "--outcome all" in out


def test_root_type_change_shows_both_bodies(stored: Stored) -> None:
    """A body that changed from a list to an object shows the legacy list as - lines and the new object as +."""
    lines = body_lines(run(stored, "diffs", "show", str(stored.ids["/api/root"])))
    assert lines[0].startswith("- [")
    assert any(line.startswith("+ {") for line in lines)
    assert any(line.startswith('+   "items": [') for line in lines)
    assert not any(line.startswith("  ") and '"id"' in line for line in lines), "no legacy body as context"


def test_large_body_is_capped_with_a_full_hint(stored: Stored) -> None:
    """A 150-row body that differs in every row is shown in a bounded number of lines with a `--full` hint; the
    removed key is shown as a - line; `--full` shows every row."""
    out = run(stored, "diffs", "show", str(stored.ids["/api/rows"]))
    assert len(out.splitlines()) < 150
    assert "--full" in out
    lines = body_lines(out)
    assert '-   "table": "orders"' in lines
    assert not any('"table"' in line and not line.startswith("-") for line in lines)
    full = run(stored, "diffs", "show", str(stored.ids["/api/rows"]), "--full")
    assert '"sku": "S-0149"' in full
    assert len(full.splitlines()) > 1000


def test_long_path_is_shortened_in_the_middle(stored: Stored) -> None:
    """A 5,000-character path is shown shortened with an ellipsis in the middle, keeping its start and end."""
    out = run(stored, "diffs", "show", str(stored.ids["/api/long"]))
    assert LONG_KEY not in out
    assert max(len(line) for line in out.splitlines()) <= 120
    assert len(out.splitlines()) < 60
    assert "…" in out
    assert "$.data.kkk" in out
    document = json.loads(run(stored, "diffs", "show", str(stored.ids["/api/long"]), "--format", "json"))
    assert LONG_KEY in document["differences"][0]["path"]


def test_removed_key_past_the_storage_cap_is_shown_removed(stored: Stored) -> None:
    """151 differences (150 changed keys, then a removed one) keep 100 rows; the removed key, not among them, is
    still a - line in the body diff, never unchanged context; the view says how many differences were not stored."""
    out = run(stored, "diffs", "show", str(stored.ids["/api/wide"]))
    lines = body_lines(out)
    assert '-   "table": "orders"' in lines
    assert not any('"table"' in line and not line.startswith("-") for line in lines)
    assert not any(line.startswith("   ") and '"k1' in line for line in lines), "unstored changes are not context"
    assert "51 more not stored" in out
    assert "--full" in out


def test_show_json_carries_the_differences_and_how_many_more(stored: Stored) -> None:
    """`diffs show --format json` has each difference's path, group, kind and values, the note, and the count of
    differences found but not stored."""
    document = json.loads(run(stored, "diffs", "show", str(stored.ids["/api/wide"]), "--format", "json"))
    differences = document["differences"]
    assert len(differences) == document["differences_stored"] == 100
    assert differences[0] == {"path": "$.k000", "group": "$.k000", "kind": "changed", "legacy": "1", "new": "2"}
    assert (document["differences_unlisted"], document["differences_total"]) == (51, 151)
    assert "51 more differences not listed" in document["note"]
    root = json.loads(run(stored, "diffs", "show", str(stored.ids["/api/root"]), "--format", "json"))
    assert root["differences"][0]["kind"] == "type_changed"
    assert (root["differences_unlisted"], root["differences_total"], root["note"]) == (0, 1, None)
