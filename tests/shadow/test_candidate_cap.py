"""A candidate's body is read for comparing up to the response cap, and cut exactly there: the stored size does not
depend on how the body's bytes were split into reads (the primary's capture is cut the same way)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from shadow.runner import ShadowLimits
from tests.shadow.shadow_fixtures import backends, exchanges, json_handler, shadow_proxy

CAP = 10_000
CHUNK = b"x" * 3_000  # 3,000 never sums to the cap: a cut at a read boundary would store less than it


async def _streamed(request: web.Request) -> web.StreamResponse:
    """30 chunks of 3,000 bytes, each sent in its own write after a pause, so they arrive as separate reads."""
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(30):
        await resp.write(CHUNK)
        await asyncio.sleep(0.002)
    await resp.write_eof()
    return resp


async def test_a_candidate_body_over_the_cap_is_cut_exactly_at_it(tmp_path: Path) -> None:
    """The new side streams 90,000 bytes against a 10,000-byte cap: the pair is skipped as response_too_large and
    the candidate's size is recorded as exactly the cap, not the last read boundary under it."""
    limits = ShadowLimits(response_cap=CAP)
    async with (
        backends(json_handler({"ok": True}), _streamed) as (legacy, new),
        shadow_proxy(tmp_path, legacy.url, new.url, limits=limits) as proxy,
        proxy.session.get(f"{proxy.url}/api/big") as resp,
    ):
        assert resp.status == 200
    (row,) = exchanges(tmp_path / "shadow.db")
    assert (row["outcome"], row["reason"]) == ("skipped", "response_too_large")
    assert row["new_size"] == CAP
