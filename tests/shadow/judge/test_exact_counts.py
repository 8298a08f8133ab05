"""Exact field counts through the real proxy and shadow listener (issue 8 item 2): a removed key is counted in every
pair however many other differences the pair has."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from tests.shadow.shadow_fixtures import backends, differences, exchanges, query, shadow_proxy


def _rows(version: str) -> list[dict[str, object]]:
    return [{"id": i, "label": f"{version}-{i}", "score": i} for i in range(150)]


async def test_removed_key_counted_in_every_pair_beside_150_changed_items(tmp_path: Path) -> None:
    """150 changed array items plus a removed top-level key: the field rollup counts `$.table` (removed) in all 4
    pairs, while only 100 difference rows per exchange are stored."""

    async def legacy_app(request: web.Request) -> web.StreamResponse:
        return web.json_response({"table": "orders", "rows": _rows("v1")})

    async def new_app(request: web.Request) -> web.StreamResponse:
        return web.json_response({"rows": _rows("v2")})

    async with backends(legacy_app, new_app) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        for i in range(4):
            status, _, _, _ = await sp.request("GET", f"/api/rows/{i}")
            assert status == 200
    rows = exchanges(sp.db)
    assert [r["outcome"] for r in rows] == ["mismatch"] * 4
    counts = {
        r["grp"]: r["n"]
        for r in query(sp.db, "SELECT grp, SUM(count) AS n FROM field_rollup WHERE pair = 'candidate' GROUP BY grp")
    }
    assert counts == {"$.table": 4, "$.rows[*].label": 4}
    assert len(differences(sp.db, "candidate")) == 4 * 100
    assert {r["note"] for r in rows} == {"51 more differences not listed"}
