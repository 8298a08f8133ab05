"""A lean keep-alive HTTP/1.1 client pool per upstream, on asyncio protocols and aiohttp's llhttp parser.

`proxy.forwarding` and `shadow.runner` depend on exactly this surface. The wire protocol lives in `proxy.upstream._h1`.

Why not `aiohttp.ClientSession` on the hot path: its per-request generality (request objects, timers, cookie
jars, tracing) is most of a pass-through proxy's CPU (../shared/PERF-NOTES.md). ClientSession is kept for
websockets and rare paths.

Errors: the `UpstreamError` tree of `proxy.errors` (connect, pool_timeout, timeout, reset; "error" for a
request-side fault); `proxy.upstream.response.public_error` maps the wire layer's `H1Failure` onto it. The
response a request returns, `UpstreamResponse`, lives in `proxy.upstream.response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterable, Iterable

from yarl import URL

from proxy.config.model import Timeouts
from proxy.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPoolTimeout,
    UpstreamReset,
    UpstreamTimeout,
    UpstreamTLSError,
)
from proxy.methods import may_resend
from proxy.upstream._h1 import H1Connection
from proxy.upstream.h1_protocol import H1Failure
from proxy.upstream.request_head import encode_head
from proxy.upstream.response import UpstreamResponse, public_error

__all__ = [
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamPoolTimeout",
    "UpstreamReset",
    "UpstreamTimeout",
]


POOL_TIMEOUT = Timeouts().pool  # seconds a request waits for a free connection when the caller names none
# Methods whose servers expect a length even for an empty body (RFC 9110 §8.6: "SHOULD send Content-Length: 0").
_LENGTH_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CLOSE_GRACE = 2.0  # seconds pool.close() waits for sockets to finish closing before aborting them


class UpstreamPool:
    """Keep-alive connections to one upstream origin (scheme, host, port)."""

    __slots__ = (
        "_closed",
        "_connecting",
        "_conns",
        "_host",
        "_idle",
        "_idle_timeout",
        "_loop",
        "_max",
        "_origin",
        "_port",
        "_server_hostname",
        "_ssl",
        "_sweeper",
        "_waiters",
    )

    def __init__(
        self,
        url: URL,
        *,
        max_connections: int = 256,
        idle_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if url.scheme not in ("http", "https"):
            raise ValueError(f"upstream URL must be http or https, not {url.scheme!r}: {url}")
        if not url.raw_host:
            raise ValueError(f"upstream URL has no host: {url}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._host = url.raw_host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._origin = f"{url.scheme}://{url.raw_host}:{self._port}"
        if url.scheme == "https":
            self._ssl: ssl.SSLContext | None = ssl_context or ssl.create_default_context()
            self._server_hostname: str | None = url.raw_host
        else:
            self._ssl = None
            self._server_hostname = None
        self._max = max_connections
        self._idle_timeout = idle_timeout
        self._idle: deque[H1Connection] = deque()  # oldest left, most recent right: LIFO reuse from the right
        self._conns: set[H1Connection] = set()  # every open connection, idle or busy
        self._connecting = 0
        self._waiters: deque[asyncio.Future[H1Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

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
        pool_timeout: float = POOL_TIMEOUT,
    ) -> UpstreamResponse:
        """Send one request and return when the response head has arrived.

        `target` is the encoded origin-form (path + optional '?query') sent verbatim on the request line.
        `headers` are written verbatim and in order (they must include Host) and must carry no framing or
        hop-by-hop headers: the pool writes exactly one framing header itself (Content-Length when
        `content_length` is given or body is non-empty bytes, Transfer-Encoding: chunked for a stream of unknown
        length, none for a bodyless request except `Content-Length: 0` on POST, PUT and PATCH).
        `pool_timeout`: with every connection busy, how long to wait for one (then UpstreamPoolTimeout); the
        connect that may follow has its own `connect_timeout`.
        `retry_stale`: when a pooled (reused) connection turns out to be closed before any response byte, retry
        once on a fresh connection if `proxy.methods.may_resend` allows it (an idempotent method, or nothing was
        written); only allowed when the body is bytes or None. Callers pass False for mirrored (candidate)
        requests so a write is never sent twice.
        An exception raised by a streamed `body` propagates unchanged (the connection is discarded).
        """
        if self._closed:
            raise UpstreamConnectError(f"upstream pool for {self._origin} is closed", sent=False)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        head_only = method == "HEAD"
        if body is None or isinstance(body, bytes):
            data, stream = body or b"", None
            if data:
                framing = f"Content-Length: {len(data)}\r\n"
            else:
                framing = "Content-Length: 0\r\n" if method in _LENGTH_METHODS else ""
        else:
            data, stream = b"", body
            framing = (
                "Transfer-Encoding: chunked\r\n" if content_length is None else f"Content-Length: {content_length}\r\n"
            )
        encoded = encode_head(method, target, headers, framing)
        if encoded is None:
            raise UpstreamError("request target or header holds CR or LF", sent=False)
        head, close = encoded
        if stream is None:
            conn = self._pop_idle() or await self._acquire(loop, connect_timeout, pool_timeout)
            try:
                msg, payload = await conn.exchange(
                    head, data, head_only=head_only, close=close, read_timeout=read_timeout
                )
            except H1Failure as failure:
                stale = conn.reused and failure.kind == "reset" and not failure.responded
                if not (retry_stale and stale and may_resend(method, sent=failure.sent)):
                    raise public_error(failure) from None
                # The keep-alive race: the upstream closed this idle connection as the request went out. Other
                # idle connections may be just as dead (an upstream restart), so open a new one.
                conn = await self._acquire(loop, connect_timeout, pool_timeout, fresh=True)
                try:
                    msg, payload = await conn.exchange(
                        head, data, head_only=head_only, close=close, read_timeout=read_timeout
                    )
                except H1Failure as again:
                    raise public_error(again) from None
            return UpstreamResponse(self, conn, msg, payload)

        conn = self._pop_idle() or await self._acquire(loop, connect_timeout, pool_timeout)
        try:
            msg, payload = await conn.exchange_stream(
                head, stream, length=content_length, head_only=head_only, close=close, read_timeout=read_timeout
            )
        except H1Failure as failure:
            raise public_error(failure) from None
        return UpstreamResponse(self, conn, msg, payload)

    async def close(self) -> None:
        """Close idle and busy connections (busy responses fail with UpstreamReset); later requests fail."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(UpstreamConnectError(f"upstream pool for {self._origin} closed", sent=False))
        self._idle.clear()
        conns = list(self._conns)
        if not conns:
            return
        closing = [conn.closed_future() for conn in conns]
        for conn in conns:
            conn.close()
        _, pending = await asyncio.wait(closing, timeout=_CLOSE_GRACE)
        if pending:
            for conn in conns:
                conn.abort()

    # Connections

    def _pop_idle(self) -> H1Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.pooled = False
            transport = conn.transport
            if conn.connected and transport is not None and not transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def _acquire(
        self, loop: asyncio.AbstractEventLoop, connect_timeout: float, pool_timeout: float, *, fresh: bool = False
    ) -> H1Connection:
        """An idle connection, a new one while under max_connections, or the next one freed (FIFO).

        Waiting for a busy pool is bounded by `pool_timeout` (UpstreamPoolTimeout: the upstream is not at fault);
        opening a connection by `connect_timeout` (UpstreamConnectError).
        fresh: never an idle one; at the limit, the oldest idle connection is closed to make room. A connection
        handed over by a finishing request is still accepted: it has just carried a full response.
        """
        wait_until: float | None = None
        requeued = False
        while True:
            if self._closed:
                raise UpstreamConnectError(f"upstream pool for {self._origin} is closed", sent=False)
            if not fresh:
                conn = self._pop_idle()
                if conn is not None:
                    return conn
            elif self._idle and len(self._conns) + self._connecting >= self._max:
                oldest = self._idle.popleft()
                oldest.pooled = False
                self._conns.discard(oldest)  # its slot is free now; its connection_lost finds nothing to do
                oldest.close()
            if len(self._conns) + self._connecting < self._max:
                return await self._connect(loop, connect_timeout)
            if wait_until is None:
                wait_until = loop.time() + pool_timeout
            waiter: asyncio.Future[H1Connection | None] = loop.create_future()
            if requeued:
                self._waiters.appendleft(waiter)  # woken for a slot someone else took: keep our place
            else:
                self._waiters.append(waiter)
            requeued = True
            try:
                async with asyncio.timeout_at(wait_until):
                    got = await waiter
            except TimeoutError:
                self._abandon(waiter)
                raise UpstreamPoolTimeout(
                    f"no free connection to {self._origin} within {pool_timeout:g}s (max_connections={self._max})",
                    sent=False,
                ) from None
            except BaseException:
                self._abandon(waiter)
                raise
            if got is not None:
                return got

    def _abandon(self, waiter: asyncio.Future[H1Connection | None]) -> None:
        """A waiter gave up; pass on a connection or slot that reached it in the same loop iteration."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if not waiter.done():
            waiter.cancel()
        elif not waiter.cancelled() and waiter.exception() is None:
            got = waiter.result()
            if got is None:
                self._wake(None)
            else:
                self._release(got)

    async def _connect(self, loop: asyncio.AbstractEventLoop, budget: float) -> H1Connection:
        self._connecting += 1
        conn = H1Connection(loop, self._discard)
        try:
            async with asyncio.timeout(budget):
                await loop.create_connection(
                    lambda: conn, self._host, self._port, ssl=self._ssl, server_hostname=self._server_hostname
                )
        except TimeoutError:
            self._connect_failed()
            raise UpstreamConnectError(f"connect to {self._origin} timed out after {budget:g}s", sent=False) from None
        except ssl.SSLError as err:  # before OSError, its base: a certificate or handshake failure is named so
            self._connect_failed()
            raise UpstreamTLSError(f"TLS handshake with {self._origin} failed: {err}", sent=False) from err
        except ConnectionResetError as err:
            self._connect_failed()
            if self._ssl is None:
                raise UpstreamConnectError(f"cannot connect to {self._origin}: {err}", sent=False) from err
            # The TCP connection was made (a refused one is ConnectionRefusedError): the server dropped it in the
            # handshake, as one that requires a client certificate does with TLS 1.2.
            raise UpstreamTLSError(
                f"TLS handshake with {self._origin} failed: closed by the server", sent=False
            ) from err
        except OSError as err:
            self._connect_failed()
            raise UpstreamConnectError(f"cannot connect to {self._origin}: {err}", sent=False) from err
        except BaseException:
            self._connect_failed()
            raise
        self._connecting -= 1
        self._conns.add(conn)
        if self._closed:
            conn.close()
            raise UpstreamConnectError(f"upstream pool for {self._origin} is closed", sent=False)
        if not conn.connected:  # lost between connection_made and here; its on_lost already ran
            raise UpstreamConnectError(f"connection to {self._origin} closed at once", sent=False)
        return conn

    def _connect_failed(self) -> None:
        self._connecting -= 1
        self._wake(None)

    def _release(self, conn: H1Connection) -> None:
        """A connection whose response was fully read: hand it to the oldest waiter, else park it idle."""
        if self._closed or not conn.connected:
            conn.close()
            return
        if self._wake(conn):
            return
        loop = self._loop
        assert loop is not None
        conn.pooled = True
        conn.idle_since = now = loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_at(now + self._idle_timeout, self._sweep)

    def _wake(self, conn: H1Connection | None) -> bool:
        """Give `conn` (or, for None, a free slot) to the oldest live waiter; False if none waits."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                if conn is not None:
                    conn.reused = True
                waiter.set_result(conn)
                return True
        return False

    def _discard(self, conn: H1Connection) -> None:
        """connection_lost: forget the connection and let a waiter open a new one in its slot."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        if conn.pooled:
            conn.pooled = False
            with contextlib.suppress(ValueError):
                self._idle.remove(conn)
        if not self._closed:
            self._wake(None)

    def _sweep(self) -> None:
        """Close connections idle longer than idle_timeout; the oldest sit at the left of the deque."""
        self._sweeper = None
        loop = self._loop
        if loop is None or self._closed:
            return
        idle = self._idle
        limit = loop.time() - self._idle_timeout
        while idle and idle[0].idle_since <= limit:
            conn = idle.popleft()
            conn.pooled = False
            conn.close()
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self._idle_timeout, self._sweep)
