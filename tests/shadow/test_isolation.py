"""The client never pays for the shadow: whatever the candidate does, the client gets the legacy answer, at once.

Real loopback back ends, the real proxy (proxy.app.start_proxy) with the real ShadowListener and a real SQLite file.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from pathlib import Path

from aiohttp import web

from shadow.fetch import DRY_RUN_HEADER
from shadow.runner import ShadowLimits
from tests.shadow.shadow_fixtures import (
    backends,
    closed_port_url,
    exchanges,
    json_handler,
    shadow_proxy,
)

LEGACY_DOC = {"id": 1, "name": "legacy"}


async def legacy_answer(request: web.Request) -> web.StreamResponse:
    resp = web.json_response(LEGACY_DOC, status=201, headers={"X-Legacy": "yes"})
    resp.set_cookie("legacy_session", "L1")
    return resp


def _assert_is_legacy_answer(status: int, headers: dict[str, str], cookies: list[str], body: bytes) -> None:
    assert status == 201
    assert headers["X-Legacy"] == "yes"
    assert headers["Content-Type"].startswith("application/json")
    assert [c.split(";")[0] for c in cookies] == ["legacy_session=L1"]
    assert "X-New" not in headers
    assert body == b'{"id": 1, "name": "legacy"}'


async def test_candidate_down_client_gets_legacy_response(tmp_path: Path) -> None:
    """A candidate nobody listens on changes nothing for the client; the pair is stored as candidate_error."""
    async with (
        backends(legacy_answer) as (legacy,),
        shadow_proxy(tmp_path, legacy.url, closed_port_url()) as sp,
    ):
        _assert_is_legacy_answer(*await sp.request("GET", "/api/orders/1"))
    [row] = exchanges(sp.db)
    assert (row["outcome"], row["reason"], row["legacy_status"]) == ("candidate_error", "connect", 201)


async def test_slow_candidate_does_not_delay_client(tmp_path: Path) -> None:
    """The client has its full legacy response while the candidate is still working on the copy."""
    started, release = asyncio.Event(), asyncio.Event()
    answered: list[bool] = []

    async def slow(request: web.Request) -> web.StreamResponse:
        started.set()
        await asyncio.wait_for(release.wait(), 10)
        answered.append(True)
        return await legacy_answer(request)

    async with backends(legacy_answer, slow) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        _assert_is_legacy_answer(*await sp.request("GET", "/api/orders/1"))
        await asyncio.wait_for(started.wait(), 5)
        assert answered == []  # the client is done; the candidate has not answered yet
        release.set()
    assert answered == [True]
    [row] = exchanges(sp.db)
    assert (row["outcome"], row["legacy_status"], row["new_status"]) == ("match", 201, 201)


async def test_candidate_500_with_set_cookie_changes_nothing(tmp_path: Path) -> None:
    """A candidate answering 500 with its own Set-Cookie: the client sees only legacy's status, headers and body."""

    async def broken(request: web.Request) -> web.StreamResponse:
        resp = web.Response(status=500, text="boom", headers={"X-New": "broken"})
        resp.set_cookie("new_session", "N1")
        return resp

    async with backends(legacy_answer, broken) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url) as sp:
        _assert_is_legacy_answer(*await sp.request("GET", "/api/orders/1"))
    [row] = exchanges(sp.db)
    assert (row["outcome"], row["reason"], row["new_status"]) == ("candidate_error", "status_500", 500)


async def test_candidate_starts_while_primary_in_flight(tmp_path: Path) -> None:
    """The copy is sent when the request arrives: legacy can wait for the candidate to have been called."""
    called = asyncio.Event()

    async def legacy_waits(request: web.Request) -> web.StreamResponse:
        try:
            await asyncio.wait_for(called.wait(), 5)
        except TimeoutError:
            return web.Response(status=504, text="candidate was not called while legacy worked")
        return web.Response(text="ok")

    async def candidate(request: web.Request) -> web.StreamResponse:
        called.set()
        return web.Response(text="ok")

    async with (
        backends(legacy_waits, candidate) as (legacy, new),
        shadow_proxy(tmp_path, legacy.url, new.url) as sp,
    ):
        status, _, _, body = await sp.request("GET", "/api/x")
    assert (status, body) == (200, b"ok")
    assert [r["outcome"] for r in exchanges(sp.db)] == ["match"]


async def test_candidate_carries_shadow_mark_and_request_id(tmp_path: Path) -> None:
    """The copy carries the configured shadow header (only strangler's value) and the primary's X-Request-Id."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {header: X-Mirror-Copy}
    """
    ok = json_handler({"ok": True})
    async with backends(ok, ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        await sp.request("GET", "/api/x?a=1", headers={"X-Strangler-Shadow": "spoofed", "X-Mirror-Copy": "0"})
        await sp.request("GET", "/api/y", headers={"X-Request-Id": "client-chosen-id-42"})
    assert [s.path_qs for s in new.seen] == ["/api/x?a=1", "/api/y"]
    for primary, copy in zip(legacy.seen, new.seen, strict=True):
        assert copy.headers.getall("X-Mirror-Copy") == ["1"]  # a client's own value never reaches the copy
        assert copy.headers["X-Request-Id"] == primary.headers["X-Request-Id"]
        assert copy.headers["Host"] == new.url.removeprefix("http://")
    assert "X-Mirror-Copy" not in legacy.seen[1].headers
    assert new.seen[1].headers["X-Request-Id"] == "client-chosen-id-42"


async def test_post_under_block_is_not_mirrored(tmp_path: Path) -> None:
    """side_effects block: a POST (even a listed method) never reaches the candidate; the store says why."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {methods: [GET, POST], side_effects: block}
    - id: other
      match: {path: /other/**}
      mode: shadow
    """
    ok = json_handler({"ok": True})
    async with backends(ok, ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        status, *_ = await sp.request("POST", "/api/orders", json={"qty": 1})
        await sp.request("PUT", "/other/1", data=b"x")
    assert status == 200
    assert [s.method for s in legacy.seen] == ["POST", "PUT"]
    assert new.seen == []
    got = [(r["route_id"], r["outcome"], r["reason"]) for r in exchanges(sp.db)]
    assert got == [("api", "skipped", "side_effects_blocked"), ("other", "skipped", "method_not_mirrored")]


async def test_dry_run_marks_unsafe_copies(tmp_path: Path) -> None:
    """side_effects dry_run: a POST copy carries X-Strangler-Dry-Run: 1 and the same body; a GET copy does not."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {methods: [GET, POST], side_effects: dry_run}
    """
    ok = json_handler({"ok": True})
    async with backends(ok, ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        await sp.request("POST", "/api/orders", json={"qty": 1}, headers={DRY_RUN_HEADER: "0"})
        await sp.request("GET", "/api/orders")
    post, get = new.seen
    assert post.method == "POST"
    assert post.headers[DRY_RUN_HEADER] == "1"
    assert post.body == legacy.seen[0].body == b'{"qty": 1}'
    assert DRY_RUN_HEADER not in get.headers
    assert [r["outcome"] for r in exchanges(sp.db)] == ["match", "match"]


async def test_allow_mirrors_writes_as_they_are(tmp_path: Path) -> None:
    """side_effects allow: a POST is copied with its body and without the dry-run mark."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {methods: [POST], side_effects: allow}
    """
    ok = json_handler({"ok": True})
    async with backends(ok, ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        await sp.request("POST", "/api/orders", data=b"qty=1", headers={"Content-Type": "text/plain"})
    [copy] = new.seen
    assert (copy.method, copy.body, copy.headers["Content-Type"]) == ("POST", b"qty=1", "text/plain")
    assert DRY_RUN_HEADER not in copy.headers


async def test_mirrored_write_sent_once_on_stale_connection(tmp_path: Path) -> None:
    """A pooled candidate connection that dies under a mirrored POST is not retried: the write arrives once."""
    seen: Counter[tuple[bytes, bytes]] = Counter()

    async def stale_after_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers the first request of each connection (keep-alive, no Connection: close); the next request on
        # the same connection is read completely, then the connection closes unanswered: the keep-alive race.
        try:
            for n in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, target, _ = lines[0].split(b" ")
                length = next((int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:])
                               if k.strip().lower() == b"content-length"), 0)  # fmt: skip
                await reader.readexactly(length)
                seen[(method, target)] += 1
                if n == 0:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
                    )
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {methods: [GET, POST], side_effects: allow}
    """

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    server = await asyncio.start_server(stale_after_first, "127.0.0.1", 0)
    candidate_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with backends(ok) as (legacy,), shadow_proxy(tmp_path, legacy.url, candidate_url, route) as sp:
            await sp.request("GET", "/api/a")
            await sp.until(
                lambda: sp.metric("strangler_shadow_total", "api", "candidate", "match", "") == 1, "the GET pair"
            )
            status, *_ = await sp.request("POST", "/api/w", data=b"pay=1")
            assert status == 200
            await sp.until(
                lambda: sp.metric("strangler_shadow_total", "api", "candidate", "candidate_error", "reset") == 1
            )
    finally:
        server.close()
        await server.wait_closed()
    assert seen == {(b"GET", b"/api/a"): 1, (b"POST", b"/api/w"): 1}
    assert [(r["method"], r["outcome"], r["reason"]) for r in exchanges(sp.db)] == [
        ("GET", "match", None),
        ("POST", "candidate_error", "reset"),
    ]


async def test_concurrency_cap_drops_and_counts(tmp_path: Path) -> None:
    """Past max_concurrency in flight plus max_waiting queued, copies are dropped, counted and stored as dropped."""
    release = asyncio.Event()

    async def blocked(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return web.Response(text="ok")

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    limits = ShadowLimits(max_concurrency=1, max_waiting=1)
    async with (
        backends(ok, blocked) as (legacy, new),
        shadow_proxy(tmp_path, legacy.url, new.url, limits=limits) as sp,
    ):
        try:
            for i in range(5):
                status, *_ = await sp.request("GET", f"/api/{i}")
                assert status == 200  # served while the candidate is stuck
            assert sp.metric("strangler_shadow_total", "api", "candidate", "dropped", "queue_full") == 3
            assert sp.metric("strangler_shadow_queue_depth", "candidates") == 2
            assert sp.metric("strangler_shadow_requests_total", "api", "candidate") == 2
            assert len(new.seen) <= 1
        finally:
            release.set()
    outcomes = Counter((r["outcome"], r["reason"]) for r in exchanges(sp.db))
    assert outcomes == {("dropped", "queue_full"): 3, ("match", None): 2}


def _candidate_tasks() -> int:
    return sum(1 for t in asyncio.all_tasks() if t.get_name() == "shadow-candidate" and not t.done())


async def test_waiting_copies_hold_no_task_and_are_sent_in_arrival_order(tmp_path: Path) -> None:
    """Copies past max_concurrency wait as data, not as tasks: one task runs while three wait, and once the stuck
    candidate answers, the waiting copies are sent in the order their requests came and all are compared."""
    release = asyncio.Event()

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def first_blocks(request: web.Request) -> web.StreamResponse:
        if request.path == "/api/0":
            await asyncio.wait_for(release.wait(), 10)
        return web.Response(text="ok")

    limits = ShadowLimits(max_concurrency=1, max_waiting=3)
    async with (
        backends(ok, first_blocks) as (legacy, new),
        shadow_proxy(tmp_path, legacy.url, new.url, limits=limits) as sp,
    ):
        for i in range(4):
            status, *_ = await sp.request("GET", f"/api/{i}")
            assert status == 200
        assert sp.metric("strangler_shadow_queue_depth", "candidates") == 4
        assert _candidate_tasks() == 1
        release.set()
        for _ in range(200):
            if len(new.seen) == 4 and _candidate_tasks() == 0:
                break
            await asyncio.sleep(0.01)
        assert [s.path_qs for s in new.seen] == ["/api/0", "/api/1", "/api/2", "/api/3"]
    assert Counter(r["outcome"] for r in exchanges(sp.db)) == {"match": 4}


async def test_copies_still_waiting_at_the_close_deadline_are_stored_as_shutdown_drops(tmp_path: Path) -> None:
    """On shutdown past close_deadline, the running copy is cancelled and the copies that never got a slot are not
    lost: each is a row, dropped with reason shutdown, and counted."""
    release = asyncio.Event()

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def stuck(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return web.Response(text="ok")

    limits = ShadowLimits(max_concurrency=1, max_waiting=2, close_deadline=0.2)
    async with backends(ok, stuck) as (legacy, new):
        try:
            async with shadow_proxy(tmp_path, legacy.url, new.url, limits=limits) as sp:
                for i in range(3):
                    status, *_ = await sp.request("GET", f"/api/{i}")
                    assert status == 200
        finally:
            release.set()  # the proxy has closed: let the back end finish the copy it still holds
    assert sp.metric("strangler_shadow_total", "api", "candidate", "dropped", "shutdown") == 3
    assert sorted((r["path"], r["outcome"], r["reason"]) for r in exchanges(sp.db)) == [
        (f"/api/{i}", "dropped", "shutdown") for i in range(3)
    ]


async def test_a_gzip_request_body_reaches_both_sides_as_the_client_sent_it(tmp_path: Path) -> None:
    """A mirrored POST with Content-Encoding: gzip reaches legacy and the candidate as the client's compressed
    bytes (each back end can decode it), and the pair matches."""
    route = """
    - id: api
      match: {path: /api/**}
      mode: shadow
      shadow: {methods: [POST], side_effects: allow}
    """
    ok = json_handler({"ok": True})
    compressed = gzip.compress(b'{"qty": 1}')
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with backends(ok, ok) as (legacy, new), shadow_proxy(tmp_path, legacy.url, new.url, route) as sp:
        status, *_ = await sp.request("POST", "/api/orders", data=compressed, headers=headers)
    assert status == 200
    assert [s.body for s in legacy.seen] == [b'{"qty": 1}']  # aiohttp's back end decoded the bytes it got
    assert [s.body for s in new.seen] == [b'{"qty": 1}']
    assert [r["outcome"] for r in exchanges(sp.db)] == ["match"]
