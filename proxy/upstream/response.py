"""The response of one upstream request: its head, and its body streamed from the pooled connection.

`proxy.upstream.transport.UpstreamPool.request` returns an `UpstreamResponse`; reading it maps the wire layer's
`H1Failure` onto the public `UpstreamError` tree of `proxy.errors` (`public_error`, httpx's
map_httpcore_exceptions as a table), and closing it hands a fully read connection back to its pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from proxy.errors import ErrorKind, UpstreamError, UpstreamReset, UpstreamTimeout
from proxy.upstream._h1 import H1Connection
from proxy.upstream.h1_protocol import BodyReader, H1Failure, ResponseMessage
from proxy.upstream.whole import WholeResponse

if TYPE_CHECKING:
    from proxy.upstream.transport import UpstreamPool


# H1Failure.kind → the public exception (httpx's map_httpcore_exceptions, as a table).
_FAILURES: dict[ErrorKind, type[UpstreamError]] = {"reset": UpstreamReset, "timeout": UpstreamTimeout}


def public_error(failure: H1Failure) -> UpstreamError:
    """The public `UpstreamError` for a wire-layer failure, by `_FAILURES`."""
    cls = _FAILURES.get(failure.kind, UpstreamError)
    return cls(str(failure), sent=failure.sent, responded=failure.responded)


class UpstreamResponse:
    """A response head with a streamed body. Read with `read()` until it returns b"", then `close()`.

    `close()` returns the connection to the pool only when the body was read completely and the upstream did not
    ask to close it; otherwise the connection is discarded. Always call it (use try/finally).
    """

    __slots__ = ("_conn", "_msg", "_payload", "_pool", "raw_headers", "reason", "status", "version")

    status: int
    reason: str
    version: tuple[int, int]
    raw_headers: tuple[tuple[bytes, bytes], ...]

    def __init__(self, pool: UpstreamPool, conn: H1Connection, msg: ResponseMessage, payload: BodyReader) -> None:
        self._pool: UpstreamPool | None = pool
        self._conn = conn
        self._msg = msg
        self._payload = payload
        self.status = msg.code
        self.reason = msg.reason
        self.version = msg.version
        self.raw_headers = msg.raw_headers

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The fields, decoded (a head read by `proxy.upstream.whole` builds them on first use)."""
        return self._msg.headers

    @property
    def content_length(self) -> int | None:
        """The Content-Length the upstream declared, if it is a plain number."""
        msg = self._msg
        if isinstance(msg, WholeResponse):
            return msg.length
        value = msg.headers.get("Content-Length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end. Raises UpstreamReset / UpstreamTimeout mid-body."""
        try:
            return await self._payload.readany()
        except H1Failure as failure:
            raise public_error(failure) from None
        except (RuntimeError, ValueError, OSError) as err:  # the reader's own "Connection closed." and kin
            raise UpstreamReset(f"upstream body broke: {err}", sent=True, responded=True) from err

    def read_complete(self) -> bytes | None:
        """The whole body when all of it has already arrived (a small response usually comes in the packet that
        carried the head), else None; afterwards read() returns b"". Saves the read() round trips."""
        payload = self._payload
        if not payload.is_eof() or payload.exception() is not None:
            return None
        return payload.read_nowait()

    def close(self) -> None:
        pool = self._pool
        if pool is None:
            return
        self._pool = None
        if self._conn.finish():
            pool._release(self._conn)
