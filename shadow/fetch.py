"""Sending one copy to the other side and reading what it answers, on the shadow side's own connection pools.

A copy is sent at most once (`retry_stale=False`: a stale pooled connection must not duplicate a mirrored write),
carries the shadow mark and the primary's X-Request-Id, and never raises: every way it can fail becomes a
`ResponseSnapshot` with an error, so the pair is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from proxy.config import Mirror, Upstream
from proxy.errors import ErrorKind, UpstreamError
from proxy.events import ExchangeStart, Headers, ResponseSnapshot, Side
from proxy.headers import end_to_end_response_headers, upstream_host
from proxy.methods import SAFE_METHODS
from proxy.transport import UpstreamPool, UpstreamResponse

log = logging.getLogger("strangler.shadow")

DRY_RUN_HEADER = "X-Strangler-Dry-Run"


class Watched(Protocol):
    """What `fetch_copy` reads to tell its deadline's cancellation from a shutdown's."""

    timed_out: bool


class CandidatePools:
    """The shadow side's pools, one per upstream URL, shared across reloads; never the primary's."""

    def __init__(self, max_connections: int) -> None:
        self._max = max_connections
        # id(upstream) -> it, its pool, its base path, the Host a copy to it carries (unless preserved)
        self._by_id: dict[int, tuple[Upstream, UpstreamPool, str, str]] = {}

    def get(self, upstream: Upstream) -> tuple[UpstreamPool, str, str]:
        """The pool for an upstream, its base path and Host. Looked up by identity (configs are immutable; the
        entry holds the upstream so its id stays unique); a reloaded upstream with the same URL keeps its pool."""
        hit = self._by_id.get(id(upstream))
        if hit is not None and hit[0] is upstream:
            return hit[1], hit[2], hit[3]
        same = (e[1] for e in self._by_id.values() if e[0].name == upstream.name and e[0].url == upstream.url)
        pool = next(same, None)
        if pool is None:
            pool = UpstreamPool(upstream.url, max_connections=self._max)
        base = upstream.url.raw_path.rstrip("/")
        host = upstream_host(upstream)
        self._by_id[id(upstream)] = (upstream, pool, base, host)
        return pool, base, host

    async def close(self) -> None:
        for pool in {id(e[1]): e[1] for e in self._by_id.values()}.values():
            await pool.close()
        self._by_id.clear()


async def fetch_copy(
    target: tuple[UpstreamPool, str, str],
    upstream: Upstream,
    start: ExchangeStart,
    mirror: Mirror,
    side: Side,
    cap: int,
    watched: Watched,
) -> ResponseSnapshot:
    """Send the copy of `start`'s request and read the answer (at most `cap` body bytes).

    A cancellation while `watched.timed_out` is the deadline sweeper's: it becomes a "timeout" snapshot and the
    task goes on; any other cancellation (shutdown) propagates."""
    pool, base, host = target
    req = start.request
    if upstream.host_header == "preserve":
        host = req.host
    headers = candidate_headers(req.headers, host, mirror, req.method)
    path = base + req.path + (("?" + req.query_string) if req.query_string else "")
    loop = asyncio.get_running_loop()
    began = loop.time()
    timeout = mirror.timeout
    try:
        resp = await pool.request(
            req.method,
            path,
            headers,
            req.body,
            content_length=len(req.body) if req.body is not None else None,
            connect_timeout=min(timeout, start.config.defaults.timeouts.connect),
            pool_timeout=min(timeout, start.config.defaults.timeouts.pool),
            read_timeout=timeout,
            retry_stale=False,  # a mirrored request is sent at most once, even on a stale connection
        )
        try:
            body, complete = await read_capped(resp, cap)
        finally:
            resp.close()  # an unfinished body discards the connection
    except UpstreamError as exc:
        return failed_snapshot(side, upstream.name, exc.kind, loop.time() - began)
    except asyncio.CancelledError:
        if not watched.timed_out:
            raise
        # The sweeper's cancellation: the candidate ran past its timeout. The task goes on to record it.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return failed_snapshot(side, upstream.name, "timeout", loop.time() - began)
    except Exception:  # anything else still completes the pair, so no exchange goes unrecorded
        log.exception("shadow request to %s failed", upstream.name)
        return failed_snapshot(side, upstream.name, "error", loop.time() - began)
    headers_in = tuple(end_to_end_response_headers(resp.raw_headers))  # as a client would get them
    return ResponseSnapshot(side, upstream.name, resp.status, headers_in, body, complete, loop.time() - began)


async def read_capped(resp: UpstreamResponse, cap: int) -> tuple[bytes, bool]:
    """A copy's body for comparing, at most `cap` bytes; False when it was cut there."""
    body = resp.read_complete()  # a small body usually came with the head: no more awaiting
    if body is not None:
        return (body, True) if len(body) <= cap else (body[:cap], False)
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.read():
        size += len(chunk)
        if size > cap:
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def failed_snapshot(side: Side, upstream: str, error: ErrorKind, latency: float) -> ResponseSnapshot:
    return ResponseSnapshot(side, upstream, 0, (), None, False, latency, error)


_NOT_FORWARDED = frozenset({"host", DRY_RUN_HEADER.lower()})


def candidate_headers(headers: Headers, host: str, mirror: Mirror, method: str) -> list[tuple[str, str]]:
    """The primary's forwarded headers for the other upstream: its Host, the shadow mark, the dry-run mark.

    A client's own copies of the mark headers are dropped, so only strangler decides what a candidate sees.
    """
    mark = mirror.header.lower()
    out = [(k, v) for k, v in headers if (name := k.lower()) not in _NOT_FORWARDED and name != mark]
    out.append(("Host", host))
    out.append((mirror.header, "1"))
    if mirror.side_effects == "dry_run" and method not in SAFE_METHODS:
        out.append((DRY_RUN_HEADER, "1"))
    return out
