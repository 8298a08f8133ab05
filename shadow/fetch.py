"""Sending one copy to the other side and reading what it answers: the one send path of live shadowing and replay.

`fetch_copy` builds the copy from the request as forwarded to the primary (a live `RequestSnapshot`, or a stored
one that `strangler replay` sends again): method, target, headers (`copy_headers`: Host by the upstream's rule, the
shadow mark, the primary's X-Request-Id, the dry-run mark, the replay mark) and body; sends it on the shadow side's
own connection pools and reads at most `RESPONSE_CAP` bytes back. A copy is sent at most once (`retry_stale=False`:
a stale pooled connection must not duplicate a mirrored write) and never raises: every way it can fail becomes a
`ResponseSnapshot` with an error, so the pair is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from proxy.clock import duration_clock
from proxy.config.model import Mirror, Upstream
from proxy.errors import ErrorKind, UpstreamError
from proxy.events import RequestSnapshot, ResponseSnapshot, Side
from proxy.headers import HOP_BY_HOP, end_to_end_response_headers, upstream_host
from proxy.methods import SAFE_METHODS
from proxy.tls import upstream_context, upstream_tls_key
from proxy.tuples import new_tuple
from proxy.upstream.response import UpstreamResponse
from proxy.upstream.transport import UpstreamPool

log = logging.getLogger("strangler.shadow")

DRY_RUN_HEADER = "X-Strangler-Dry-Run"
REPLAY_HEADER = "X-Strangler-Replay"
RESPONSE_CAP = 4 * 1024 * 1024  # response bytes read from a copy for comparing


class Watched(Protocol):
    """What `fetch_copy` reads to tell its deadline's cancellation from a shutdown's."""

    timed_out: bool


class CandidatePools:
    """The shadow side's pools, one per upstream URL, shared across reloads; never the primary's."""

    def __init__(self, max_connections: int) -> None:
        self._max = max_connections
        # id(upstream) -> it, its pool, its base path
        self._by_id: dict[int, tuple[Upstream, UpstreamPool, str]] = {}

    def get(self, upstream: Upstream) -> tuple[UpstreamPool, str]:
        """The pool for an upstream and its base path. Looked up by identity (configs are immutable; the entry
        holds the upstream so its id stays unique); a reloaded upstream with the same URL keeps its pool."""
        hit = self._by_id.get(id(upstream))
        if hit is not None and hit[0] is upstream:
            return hit[1], hit[2]
        key = upstream_tls_key(upstream)  # the URL and TLS settings, as the proxy's own pools are keyed
        same = (e[1] for e in self._by_id.values() if e[0].name == upstream.name and upstream_tls_key(e[0]) == key)
        pool = next(same, None)
        if pool is None:
            pool = UpstreamPool(upstream.url, max_connections=self._max, ssl_context=upstream_context(upstream))
        base = upstream.url.raw_path.rstrip("/")
        self._by_id[id(upstream)] = (upstream, pool, base)
        return pool, base

    async def close(self) -> None:
        for pool in {id(e[1]): e[1] for e in self._by_id.values()}.values():
            await pool.close()
        self._by_id.clear()


async def fetch_copy(
    target: tuple[UpstreamPool, str],
    upstream: Upstream,
    req: RequestSnapshot,
    mirror: Mirror,
    side: Side,
    *,
    connect_timeout: float,
    pool_timeout: float,
    cap: int = RESPONSE_CAP,
    watched: Watched | None = None,
    replay: bool = False,
) -> ResponseSnapshot:
    """Send the copy of `req` (as forwarded to the primary) to `upstream` and read the answer (at most `cap`
    body bytes). `target` is the pool and base path from `CandidatePools.get`; `replay` marks a stored request sent
    again (see `copy_headers`).

    The copy has `mirror.timeout` in all. With `watched` (the live runner's sweeper) a cancellation while
    `watched.timed_out` is the deadline's: it becomes a "timeout" snapshot and the task goes on; any other
    cancellation (shutdown) propagates. Without it the copy keeps its own deadline. Its latency is read from
    `proxy.clock`, as the primary's is, so the two compare."""
    if watched is None:  # no sweeper: the copy keeps its own deadline
        own = _Deadline(mirror.timeout)
        try:
            return await fetch_copy(
                target,
                upstream,
                req,
                mirror,
                side,
                connect_timeout=connect_timeout,
                pool_timeout=pool_timeout,
                cap=cap,
                watched=own,
                replay=replay,
            )
        finally:
            own.cancel()
    pool, base = target
    headers = copy_headers(req, upstream, mirror, replay=replay)
    path = base + req.path + (("?" + req.query_string) if req.query_string else "")
    began = duration_clock()
    timeout = mirror.timeout
    try:
        resp = await pool.request(
            req.method,
            path,
            headers,
            req.body,
            content_length=len(req.body) if req.body is not None else None,
            connect_timeout=min(timeout, connect_timeout),
            pool_timeout=min(timeout, pool_timeout),
            read_timeout=timeout,
            retry_stale=False,  # a mirrored request is sent at most once, even on a stale connection
        )
        try:
            body, complete = await read_capped(resp, cap)
        finally:
            resp.close()  # an unfinished body discards the connection
    except UpstreamError as exc:
        return failed_snapshot(side, upstream.name, exc.kind, duration_clock() - began)
    except asyncio.CancelledError:
        if not watched.timed_out:
            raise
        # The sweeper's cancellation: the candidate ran past its timeout. The task goes on to record it.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return failed_snapshot(side, upstream.name, "timeout", duration_clock() - began)
    except Exception:  # anything else still completes the pair, so no exchange goes unrecorded
        log.exception("shadow request to %s failed", upstream.name)
        return failed_snapshot(side, upstream.name, "error", duration_clock() - began)
    headers_in = tuple(end_to_end_response_headers(resp.raw_headers))  # as a client would get them
    fields = (side, upstream.name, resp.status, headers_in, body, complete, duration_clock() - began, None, ())
    return new_tuple(ResponseSnapshot, fields)  # one per copy: without the NamedTuple's Python-level __new__


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
            # Cut at the cap itself, as the primary's capture is: where the reads fell must not change the size.
            chunks.append(chunk[: cap - (size - len(chunk))])
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def failed_snapshot(side: Side, upstream: str, error: ErrorKind, latency: float) -> ResponseSnapshot:
    return ResponseSnapshot(side, upstream, 0, (), None, False, latency, error)


class _Deadline:
    """A copy's own deadline, for a caller without the live runner's sweeper (replay): past it, the copy's task is
    cancelled with `timed_out` set, so the copy ends as a swept one does."""

    __slots__ = ("_handle", "timed_out")

    def __init__(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.timed_out = False
        self._handle = asyncio.get_running_loop().call_later(seconds, self._expire, task)

    def _expire(self, task: asyncio.Task[object]) -> None:
        self.timed_out = True
        task.cancel()

    def cancel(self) -> None:
        self._handle.cancel()


# Never taken from the request a copy repeats: hop-by-hop and framing headers (the transport frames the body), Host
# and X-Request-Id (set per copy), and strangler's own marks (a client's copies are dropped, so only strangler
# decides what a copy carries; the configured shadow mark is dropped by name in `copy_headers`).
_NOT_COPIED = frozenset(
    {*HOP_BY_HOP, "content-length", "expect", "host", "x-request-id", DRY_RUN_HEADER.lower(), REPLAY_HEADER.lower()}
)
# A stored body is kept decoded (`shadow.records.stored_body`): a replay sends it without its original coding, so
# that coding's header must not go with it.
_NOT_REPLAYED = _NOT_COPIED | {"content-encoding"}


def copy_headers(
    req: RequestSnapshot, upstream: Upstream, mirror: Mirror, *, replay: bool = False
) -> list[tuple[str, str]]:
    """The headers a copy of `req` carries to `upstream`: the primary's forwarded headers, with Host by the
    upstream's `host_header` rule (its own, or under `preserve` the one the client asked for), X-Request-Id the
    request's id, the shadow mark, the replay mark for a stored request sent again (`replay`), and the dry-run mark
    for an unsafe method when the mirror says `side_effects: dry_run`."""
    mark = mirror.header.lower()
    dropped = _NOT_REPLAYED if replay else _NOT_COPIED
    out = [(k, v) for k, v in req.headers if (name := k.lower()) not in dropped and name != mark]
    preserve = upstream.host_header == "preserve" and req.host
    out.append(("Host", req.host if preserve else upstream_host(upstream)))
    out.append(("X-Request-Id", req.request_id))
    out.append((mirror.header, "1"))
    if replay:
        out.append((REPLAY_HEADER, "1"))
    if mirror.side_effects == "dry_run" and req.method not in SAFE_METHODS:
        out.append((DRY_RUN_HEADER, "1"))
    return out
