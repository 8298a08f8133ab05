"""What the shadow runner decides and records: sampling, body cap, gzip, verify mode, noise pairs, redaction,
retention, shutdown flush and metrics. Real back ends, the real proxy and a real SQLite file throughout.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import sqlite3
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from rich.console import Console

from reports.render import render_exchange
from shadow.store.database import Store
from shadow.values import ExchangeRecord
from tests.shadow.shadow_fixtures import (
    backends,
    closed_port_url,
    differences,
    exchanges,
    json_handler,
    query,
    shadow_proxy,
)


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def test_sampling_mirrors_about_the_configured_share(tmp_path: Path) -> None:
    """sample 0.3 over 400 requests mirrors between 90 and 150 of them; the rest leave no row."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {sample: 0.3}
    """
    async with backends(_ok, _ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route, seed=3) as sp:
        for first in range(0, 400, 20):
            await asyncio.gather(*(sp.request("GET", f"/api/{i}") for i in range(first, first + 20)))
    assert len(legacy.seen) == 400
    assert 90 <= len(new.seen) <= 150
    assert len(exchanges(sp.db)) == len(new.seen)


async def test_request_over_max_body_is_served_but_not_mirrored(tmp_path: Path) -> None:
    """A body over mirror.max_body reaches legacy whole, is not copied, and is stored as skipped request_too_large."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {methods: [POST], side_effects: allow, max_body: 1KiB}
    """
    big, small = b"x" * 4096, b"y" * 100
    async with backends(_ok, _ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        status, _, _, body = await sp.request("POST", "/api/big", data=big)
        assert (status, body) == (200, b"ok")
        await sp.request("POST", "/api/small", data=small)
    assert [s.body for s in legacy.seen] == [big, small]
    assert [s.body for s in new.seen] == [small]
    got = [(r["path"], r["outcome"], r["reason"]) for r in exchanges(sp.db)]
    assert got == [("/api/big", "skipped", "request_too_large"), ("/api/small", "match", None)]


def _gzip_json(doc: object, mtime: int, level: int) -> web.Response:
    data = gzip.compress(orjson.dumps(doc), compresslevel=level, mtime=mtime)
    return web.Response(body=data, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})


async def test_gzip_bodies_are_compared_decoded(tmp_path: Path) -> None:
    """Differently compressed equal JSON matches; a real change inside gzip is found at its JSON path."""
    doc = {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}
    changed = {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 3}]}

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        return _gzip_json(doc, mtime=1, level=9)

    async def new_h(request: web.Request) -> web.StreamResponse:
        return _gzip_json(changed if request.path == "/api/changed" else doc, mtime=2, level=1)

    async with backends(legacy_h, new_h) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        async with sp.session.get(sp.url + "/api/same", auto_decompress=False) as r:
            raw = await r.read()
        await sp.request("GET", "/api/changed")
    assert gzip.decompress(raw) == orjson.dumps(doc)  # the client got legacy's bytes, still compressed
    # Rows are stored as their pairs are judged, not in request order: compare them by path.
    assert {r["path"]: r["outcome"] for r in exchanges(sp.db)} == {"/api/same": "match", "/api/changed": "mismatch"}
    [diff] = differences(sp.db)
    assert (diff["path"], diff["grp"], diff["legacy_value"], diff["new_value"]) == (
        "$.items[1].qty",
        "$.items[*].qty",
        "2",
        "3",
    )
    # The mismatch's body (a matching pair keeps its bodies too, for 1% of them: sample_matches).
    sql = "SELECT b.data FROM bodies b JOIN exchanges e ON e.id = b.exchange_id WHERE b.which = 'new' AND e.path = ?"
    [stored] = query(sp.db, sql, ("/api/changed",))
    assert orjson.loads(zlib.decompress(stored["data"])) == changed  # kept decoded, so it could be redacted


async def test_verify_mode_mirrors_new_served_traffic_to_legacy(tmp_path: Path) -> None:
    """mode new + verify: new answers the client, legacy gets the copy, and the pair is oriented legacy vs new."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: new
      verify: {}
    """
    legacy_h, new_h = json_handler({"total": 10}), json_handler({"total": 11})
    async with backends(legacy_h, new_h) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        _, _, _, body = await sp.request("GET", "/api/sum")
    assert orjson.loads(body) == {"total": 11}
    assert legacy.seen[0].headers["X-Strangler-Shadow"] == "1"
    assert "X-Strangler-Shadow" not in new.seen[0].headers
    [row] = exchanges(sp.db)
    assert (row["served_by"], row["outcome"]) == ("new", "mismatch")
    [diff] = differences(sp.db)
    assert (diff["path"], diff["legacy_value"], diff["new_value"]) == ("$.total", "10", "11")


async def test_noise_pair_separates_timestamps_from_renamed_fields(tmp_path: Path) -> None:
    """With noise sampling, a field legacy itself varies (a timestamp) shows in 'noise' pairs; a rename only in
    'candidate' pairs."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      noise: {sample: 1.0}
    """
    clock = itertools.count(1_700_000_000)

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 7, "name": "mug", "generated_at": next(clock)})

    async def new_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 7, "title": "mug", "generated_at": next(clock)})

    async with backends(legacy_h, new_h) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        for _ in range(3):
            await sp.request("GET", "/api/items/7")
    assert len(legacy.seen) == 6  # the primary and the noise copy
    pairs = sorted(r["pair"] for r in exchanges(sp.db))
    assert pairs == ["candidate"] * 3 + ["noise"] * 3
    noise = {d["grp"] for d in differences(sp.db, "noise")}
    candidate = {d["grp"] for d in differences(sp.db, "candidate")}
    assert noise == {"$.generated_at"}
    assert {"$.name", "$.title"} <= candidate
    assert not {"$.name", "$.title"} & noise


SECRETS = ("hdr-s3cr3t-Aa1", "cookie-s3cr3t-Bb2", "body-s3cr3t-Cc3", "query-s3cr3t-Dd4", "resp-s3cr3t-Ee5")


async def test_secrets_never_reach_the_database_file(tmp_path: Path) -> None:
    """A secret in Authorization, a cookie, a JSON password, a token query parameter and a response field appears
    nowhere in the database files, not even inside compressed bodies."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {methods: [POST], side_effects: allow}
    """

    async def legacy_h(request: web.Request) -> web.StreamResponse:
        doc = {"user": "ann", "token": SECRETS[4], "password": SECRETS[2]}
        resp = web.json_response(doc)
        resp.set_cookie("session", SECRETS[1])
        return resp

    async def new_h(request: web.Request) -> web.StreamResponse:
        return web.json_response({"user": "bob", "token": SECRETS[4] + "x", "echo": {"password": SECRETS[2]}})

    async with backends(legacy_h, new_h) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        status, *_ = await sp.request(
            "POST",
            f"/api/login?user=ann&token={SECRETS[3]}",
            json={"user": "ann", "password": SECRETS[2]},
            headers={"Authorization": f"Bearer {SECRETS[0]}", "Cookie": f"session={SECRETS[1]}; theme=dark"},
        )
        assert status == 200
    assert new.seen[0].headers["Authorization"] == f"Bearer {SECRETS[0]}"  # the copy itself is faithful
    [row] = exchanges(sp.db)
    assert row["outcome"] == "mismatch"
    assert "token=<redacted:" in row["query"]
    assert '["Authorization","Bearer <redacted:' in row["request_headers"]
    assert "session=<redacted:" in row["request_headers"]
    assert "session=<redacted:" in row["legacy_headers"]  # legacy's Set-Cookie
    token = {d["path"]: (d["legacy_value"], d["new_value"]) for d in differences(sp.db)}["$.token"]
    assert all(v is not None and v.startswith('"<redacted:') for v in token)
    blobs = [zlib.decompress(r["data"]) for r in query(sp.db, "SELECT data FROM bodies")]
    assert len(blobs) == 3
    contents = _store_file_bytes(tmp_path) + blobs
    for secret in SECRETS:
        for content in contents:
            assert secret.encode() not in content


def _store_file_bytes(folder: Path) -> list[bytes]:
    """The bytes of the database and any -wal / -shm file beside it."""
    files = [p for p in folder.iterdir() if p.name.startswith("shadow.db") and not p.name.endswith(".key")]
    assert files
    return [p.read_bytes() for p in files]


def _old_record(i: int, at: float) -> ExchangeRecord:
    return ExchangeRecord(
        time=at, route_id="api", mode="shadow", pair="candidate", method="GET", template="/api/**",
        path=f"/api/old/{i}", query="", request_id=f"old-{i}", served_by="legacy", outcome="match", reason=None,
        legacy_status=200, legacy_latency_ms=1.0, legacy_size=2, new_status=200, new_latency_ms=1.0, new_size=2,
    )  # fmt: skip


async def test_retention_deletes_old_and_excess_exchanges(tmp_path: Path) -> None:
    """store.retention is enforced by the running listener: too old rows go, then all but the newest max_exchanges."""
    now = time.time()
    with Store.open(tmp_path / "shadow.db") as store:
        store.write_batch([_old_record(i, now - 3 * 86400) for i in range(5)])
        store.write_batch([_old_record(i + 5, now - 60 + i) for i in range(5)])
    retention = """
    retention: {max_age: 1d, max_exchanges: 3}
    """
    async with (
        backends(_ok, _ok) as (legacy, new),
        shadow_proxy(tmp_path, legacy.url, new.url, store=retention) as sp,
    ):
        await sp.until(lambda: len(exchanges(sp.db)) == 3, "retention")
        await sp.request("GET", "/api/fresh")
    paths = [r["path"] for r in exchanges(sp.db)]
    assert paths == ["/api/old/7", "/api/old/8", "/api/old/9", "/api/fresh"]


async def test_shutdown_flushes_every_mirrored_exchange(tmp_path: Path) -> None:
    """N mirrored requests, then an immediate stop: exactly N exchange rows (and N traffic counts)."""
    n = 60
    async with backends(_ok, _ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        await asyncio.gather(*(sp.request("GET", f"/api/{i}") for i in range(n)))
    assert len(exchanges(sp.db)) == n
    [[served]] = query(sp.db, "SELECT SUM(count) FROM traffic WHERE route_id = 'api'")
    assert served == n


async def test_metrics_per_route_on_admin_endpoint(tmp_path: Path) -> None:
    """/metrics shows per-route shadowed, matched, mismatched, candidate errors, skipped by reason, queue depth and
    compare time."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
    """

    async def new_h(request: web.Request) -> web.StreamResponse:
        if request.path == "/api/bad":
            return web.Response(status=500)
        return web.Response(text="changed" if request.path == "/api/diff" else "ok")

    async with backends(_ok, new_h) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        for path in ("/api/same", "/api/diff", "/api/bad"):
            await sp.request("GET", path)
        await sp.request("DELETE", "/api/same")
        await sp.until(lambda: sum(sp.running.state.metrics.shadow.values.values()) == 4, "4 outcomes")
        async with aiohttp.ClientSession() as admin, admin.get(sp.admin_url + "/metrics") as r:
            text = await r.text()
    for line in (
        'strangler_shadow_requests_total{route="api",pair="candidate"} 3',
        'strangler_shadow_total{route="api",pair="candidate",outcome="match",reason=""} 1',
        'strangler_shadow_total{route="api",pair="candidate",outcome="mismatch",reason=""} 1',
        'strangler_shadow_total{route="api",pair="candidate",outcome="candidate_error",reason="status_500"} 1',
        'strangler_shadow_total{route="api",pair="candidate",outcome="skipped",reason="method_not_mirrored"} 1',
        'strangler_compare_duration_seconds_count{route="api"} 3',
        'strangler_shadow_queue_depth{stage="compare"} 0',
        'strangler_shadow_queue_depth{stage="candidates"} 0',
    ):
        assert line in text.splitlines(), line
    assert 'strangler_shadow_queue_depth{stage="store"}' in text


async def test_store_file_is_a_plain_sqlite_database(tmp_path: Path) -> None:
    """The store the listener writes opens with the sqlite3 module alone and has the documented tables."""
    async with backends(_ok, _ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        await sp.request("GET", "/api/x")
    conn = sqlite3.connect(sp.db)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert {"exchanges", "differences", "bodies", "traffic"} <= tables


async def test_canary_mirrors_only_the_legacy_served_share(tmp_path: Path) -> None:
    """canary + shadow: every request legacy serves is copied to new; requests new serves are not copied."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: canary
      canary: {weight: 50, sticky: {header: X-User-Id}}
      shadow: {}
    """
    async with backends(_ok, _ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        for user in range(40):
            await sp.request("GET", "/api/me", headers={"X-User-Id": str(user)})
    copies = [s for s in new.seen if s.headers.get("X-Strangler-Shadow") == "1"]
    assert 0 < len(legacy.seen) < 40
    assert len(copies) == len(legacy.seen)
    assert len(new.seen) - len(copies) == 40 - len(legacy.seen)
    assert {(r["served_by"], r["outcome"]) for r in exchanges(sp.db)} == {("legacy", "match")}


async def test_fallback_to_legacy_is_not_compared_against_legacy(tmp_path: Path) -> None:
    """mode new + verify + fallback: when new is down and legacy answers, the pair is skipped, not a false match."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: new
      verify: {}
      fallback: legacy
    """
    async with backends(_ok) as (legacy,), shadow_proxy(tmp_path, legacy.url, closed_port_url(), route) as sp:
        status, _, _, body = await sp.request("GET", "/api/x")
    assert (status, body) == (200, b"ok")
    [row] = exchanges(sp.db)
    assert (row["outcome"], row["reason"]) == ("skipped", "primary_fell_back")


async def test_how_a_pair_was_compared_is_stored_and_shown(tmp_path: Path) -> None:
    """A JSON-typed pair whose bodies are not JSON is compared as text; that note is stored with the exchange and
    `diffs show` prints it, so a reviewer knows why the differences are lines, not fields."""

    def broken_json(text: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(text=text, content_type="application/json")

        return handler

    legacy_h, new_h = broken_json("{not json\nline two"), broken_json("{not json\nline 2")
    async with backends(legacy_h, new_h) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        await sp.request("GET", "/api/broken")
    with Store.open(sp.db, create=False) as store:
        [row] = store.list_exchanges()
        detail = store.get_exchange(row.id)
    assert detail is not None
    assert detail.record.outcome == "mismatch"
    assert detail.record.note is not None
    assert "compared as text" in detail.record.note
    console = Console(width=120, record=True)
    console.print(render_exchange(detail))
    assert "compared as text" in console.export_text()
