"""What both proxy listeners add to a connection that aiohttp lacks: a cap on open connections and a deadline for a
request head that trickles in (slowloris). One home for both rules: `proxy.server.GuardedRequestHandler` (the
aiohttp listener) and `proxy.listener.ProtocolListener` (the fast one) each own a `ConnectionGuard`.

The head deadline is armed when the connection opens and when bytes that arrive while no request is being handled
or queued and no body is still arriving (the start of a new head on a keep-alive connection) leave that head
incomplete; it is disarmed as soon as the parser has a complete head. An idle keep-alive connection that sends nothing
is left to keepalive_timeout. Bytes of a body still arriving after its request was answered (a refused upload being
drained) are not a head: the drain has its own deadline (lingering_time), and cutting it at header_timeout lost the
answer's pipelined successors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from typing import Final, Protocol

from aiohttp.streams import StreamReader

from proxy.metrics import Metrics

REFUSED_HEAD: Final = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class ConnectionCounter:
    """Counts open client connections against limits.max_connections."""

    __slots__ = ("active", "metrics")

    def __init__(self, metrics: Metrics) -> None:
        self.active = 0
        self.metrics = metrics


class GuardedConnection(Protocol):
    """What the guard reads of its connection's protocol (both listeners' protocols have it)."""

    @property
    def transport(self) -> asyncio.Transport | None: ...
    @property
    def _request_count(self) -> int: ...  # requests parsed so far
    @property
    def _request_in_progress(self) -> bool: ...
    @property
    def _messages(self) -> Sized: ...  # parsed requests not yet served
    @property
    def _last_body(self) -> StreamReader | None: ...  # the body stream of the last request parsed

    def force_close(self) -> None: ...


class ConnectionGuard:
    """One connection's place under the cap and its head deadline."""

    __slots__ = ("_conn", "_counted", "_counter", "_handle", "_head_count", "_loop", "_max", "_timeout")

    def __init__(
        self,
        conn: GuardedConnection,
        loop: asyncio.AbstractEventLoop,
        counter: ConnectionCounter,
        max_connections: int,
        header_timeout: float,
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._counter = counter
        self._max = max_connections
        self._timeout = header_timeout
        self._counted = False
        self._handle: asyncio.TimerHandle | None = None
        self._head_count = 0

    def admit(self) -> bool:
        """Count a new connection and start its head deadline, or refuse it with a 503 when
        limits.max_connections are open already."""
        counter = self._counter
        if counter.active >= self._max:
            counter.metrics.rejected.inc(("max_connections",))
            transport = self._conn.transport
            if transport is not None:
                transport.write(REFUSED_HEAD)
            self._conn.force_close()
            return False
        counter.active += 1
        self._counted = True
        self._arm()
        return True

    def release(self) -> None:
        """The connection closed: uncount it, stop its head deadline."""
        if self._counted:
            self._counted = False
            self._counter.active -= 1
        self._disarm()

    def head_starts(self) -> bool:
        """Whether bytes arriving now start a new head: no deadline armed, nothing handled or queued, and the last
        request's body has ended (until it has, the parser reads body bytes, not a head)."""
        conn = self._conn
        if self._handle is not None or conn._request_in_progress or len(conn._messages):
            return False
        body = conn._last_body
        return body is None or body.is_eof()

    def after_parse(self, starts_head: bool, count: int) -> None:
        """After parsing a read (`count`: requests parsed before it): disarm once a head is complete; arm when the
        read began a head it did not finish. Arming only then matters: a timer made and cancelled for every request
        that arrives whole (almost all of them) is a measurable share of a small request's cost."""
        conn = self._conn
        if self._handle is not None:
            if conn._request_count != self._head_count:
                self._disarm()
        elif starts_head and conn._request_count == count and conn.transport is not None:
            self._arm()

    def _arm(self) -> None:
        if self._timeout > 0:
            self._head_count = self._conn._request_count
            self._handle = self._loop.call_later(self._timeout, self._deadline)

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _deadline(self) -> None:
        """A request head did not arrive whole within limits.header_timeout: close the connection."""
        self._handle = None
        conn = self._conn
        if conn._request_count != self._head_count or conn._request_in_progress or len(conn._messages):
            return  # a head did arrive
        self._counter.metrics.rejected.inc(("header_timeout",))
        conn.force_close()
