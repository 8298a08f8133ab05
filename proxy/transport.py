"""A lean keep-alive HTTP/1.1 client pool per upstream, on asyncio protocols and aiohttp's llhttp parser.

CONTRACT (implementation pending): see the class and function docstrings; `proxy.forwarding` and
`shadow.runner` depend on exactly this surface.

Why not `aiohttp.ClientSession` on the hot path: its per-request generality (request objects, timers, cookie
jars, tracing) is most of a pass-through proxy's CPU (../shared/PERF-NOTES.md). ClientSession is kept for
websockets and rare paths.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, Iterable

from multidict import CIMultiDictProxy
from yarl import URL


class UpstreamError(Exception):
    """The upstream could not give a complete response. `sent` tells whether any request byte left."""

    kind = "error"

    def __init__(self, message: str, *, sent: bool, responded: bool = False) -> None:
        super().__init__(message)
        self.sent = sent  # at least one request byte was written to the socket
        self.responded = responded  # at least one response byte was received


class UpstreamConnectError(UpstreamError):
    """Connection refused, unreachable, DNS failure or connect timeout: nothing was sent."""

    kind = "connect"


class UpstreamTimeout(UpstreamError):
    """No byte for `read_timeout` (before the head, or between body chunks)."""

    kind = "timeout"


class UpstreamReset(UpstreamError):
    """The connection closed or broke before the response was complete."""

    kind = "reset"


class UpstreamResponse:
    """A response head with a streamed body. Read with `read()` until it returns b"", then `close()`.

    `close()` returns the connection to the pool only when the body was read completely and the upstream did not
    ask to close it; otherwise the connection is discarded. Always call it (use try/finally).
    """

    status: int
    reason: str
    version: tuple[int, int]
    headers: CIMultiDictProxy[str]
    raw_headers: tuple[tuple[bytes, bytes], ...]

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end. Raises UpstreamReset / UpstreamTimeout mid-body."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class UpstreamPool:
    """Keep-alive connections to one upstream origin (scheme, host, port)."""

    def __init__(
        self,
        url: URL,
        *,
        max_connections: int = 256,
        idle_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        raise NotImplementedError

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        content_length: int | None,
        connect_timeout: float,
        read_timeout: float,
        retry_stale: bool,
    ) -> UpstreamResponse:
        """Send one request and return when the response head has arrived.

        `target` is the encoded origin-form (path + optional '?query') sent verbatim on the request line.
        `headers` must carry no framing or hop-by-hop headers: the pool writes exactly one framing header itself
        (Content-Length when `content_length` is given or body is bytes, Transfer-Encoding: chunked for a stream
        of unknown length, none for a bodyless request).
        `retry_stale`: when a pooled (reused) connection turns out to be closed before any response byte, retry
        once on a fresh connection; only allowed when the body is bytes or None. Callers pass False for mirrored
        (candidate) requests so a write is never sent twice.
        """
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
