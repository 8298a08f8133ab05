"""The `fast` proxy listener (`listen.server: fast`, the default): a protocol-level HTTP/1 server.

`ProtocolListener` serves what its `proxy.h1_connection.H1Connection` parsed: each connection's requests in order,
in one Task per connection started at its first request (not at accept), so the fast path creates no Task, no
per-request handler object and no second pass over a response `proxy.forwarding` already wrote whole
(`SentResponse`). The request value is aiohttp's `BaseRequest`, built by the server's request factory as the aiohttp
listener builds it, and handed to the same `proxy.handler.ProxyHandler` steps, so every request rule has one home:
`proxy.handler` for the steps, `proxy.server` for what a listener refuses, answers or logs (`parser_refusal`,
`record_access`, `ProxyServer._make_proxy_request`), `proxy.conn_guard` for the connection cap and head deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.helpers import ceil_timeout
from aiohttp.streams import StreamReader
from aiohttp.web_exceptions import HTTPException
from aiohttp.web_protocol import ERROR, PayloadAccessError, _ErrInfo

from proxy.coalesce import CoalescingWriter
from proxy.conn_guard import ConnectionCounter
from proxy.h1_connection import QUEUE_RESUME, H1Connection
from proxy.responses import SentResponse
from proxy.server import closes_unread, parser_refusal, record_access
from proxy.state import RuntimeState

log = logging.getLogger("strangler.proxy")

_PAYLOAD_ACCESS_ERROR = PayloadAccessError()
_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class ProtocolListener(H1Connection):
    """One client connection of the fast listener: its requests served one at a time, in order."""

    __slots__ = ("_close_after_response", "_handler_waiter", "_lingering_time", "_metrics", "_state")

    def __init__(
        self,
        manager: web.Server,
        *,
        connections: ConnectionCounter,
        state: RuntimeState | None = None,
        lingering_time: float = 10.0,
        **options: Any,  # the connection's limits (`H1Connection`)
    ) -> None:
        super().__init__(manager, connections=connections, **options)
        self._state = state
        self._metrics = connections.metrics
        self._lingering_time = float(lingering_time)
        self._handler_waiter: asyncio.Future[None] | None = None
        self._close_after_response = False

    def skip_lingering(self) -> None:
        """Close the connection right after the current response instead of draining the unread body first (a
        body that stalled past limits.body_timeout sends nothing more: draining would only hold the connection)."""
        self._close_after_response = True

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp calls it so
        """Graceful stop (aiohttp's semantics): no new request, the one in progress may finish within `timeout`."""
        self._force_close = True
        self._wake()
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        if self._request_in_progress:
            self._handler_waiter = self._loop.create_future()
            try:
                async with ceil_timeout(timeout):
                    await self._handler_waiter
            except (asyncio.CancelledError, TimeoutError):
                self._handler_waiter = None
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise
        try:
            async with ceil_timeout(timeout):
                if self._current_request is not None:
                    self._current_request._cancel(asyncio.CancelledError())
                if self._task_handler is not None and not self._task_handler.done():
                    await asyncio.shield(self._task_handler)
        except (asyncio.CancelledError, TimeoutError):
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise
        if self._task_handler is not None:
            self._task_handler.cancel()
        self.force_close()

    # Serving

    async def _serve_connection(self) -> None:
        """Serve the queued requests in order until the connection closes; wait idle in between (keep-alive)."""
        loop = self._loop
        manager = self._manager
        assert manager is not None
        factory = manager.request_factory
        handler = manager.request_handler
        queue = self._messages
        coalescing = self._coalescing
        try:
            while not self._force_close:
                if not queue:
                    if self._close or self._client_eof:
                        break
                    self._waiter = waiter = loop.create_future()
                    try:
                        await waiter
                    finally:
                        self._waiter = None
                    continue
                message, payload = queue.popleft()
                if self._buffer_paused and len(queue) <= QUEUE_RESUME:
                    self._resume_parsing()
                manager.requests_count += 1
                if self.held:  # the previous answer may still be held: it goes first
                    self.flush_held()
                writer = CoalescingWriter(self, loop, coalescing)
                if isinstance(message, _ErrInfo):
                    request = factory(ERROR, payload, self, writer, self._task_handler)  # type: ignore[arg-type]
                    resp: web.StreamResponse | None = parser_refusal(
                        request, self._metrics, message.status, message.exc, message.message
                    )
                else:
                    request = factory(message, payload, self, writer, self._task_handler)  # type: ignore[arg-type]
                    resp = None
                try:
                    try:
                        resp, reset = await self._serve(request, handler, resp)
                    except ConnectionError:
                        break
                    if reset:
                        break
                    self._keepalive = bool(resp.keep_alive)
                    if not payload.is_eof():
                        await self._linger(payload)
                    payload.set_exception(_PAYLOAD_ACCESS_ERROR)
                except asyncio.CancelledError:
                    self.force_close()
                    raise
                except Exception as exc:
                    log.error("unhandled exception serving a request", exc_info=exc)
                    self.force_close()
                except BaseException:
                    self.force_close()
                    raise
                finally:
                    request._task = None  # type: ignore[assignment]  # no cycle through a traceback
                if not self._keepalive or self._close:
                    break
                if not queue and self._keepalive_timeout > 0:
                    self._next_keepalive_close = loop.time() + self._keepalive_timeout
                    if self._keepalive_handle is None:
                        self._schedule_keepalive()
        finally:
            self._task_handler = None
            self._close = True  # nothing read after this is served: the connection is closing
            if not self._force_close and self.transport is not None:
                self.flush_held()
                self.transport.close()

    async def _serve(
        self, request: web.BaseRequest, handler: _Handler, refusal: web.StreamResponse | None
    ) -> tuple[web.StreamResponse, bool]:
        """Run the handler (or answer the parser's refusal) and write its answer; a response the handler already
        wrote whole is not written again. Handler failures are answered as aiohttp answers them (504, 500)."""
        self._request_in_progress = True
        try:
            if refusal is not None:
                return await self._finish_response(request, refusal)
            try:
                self._current_request = request
                resp = await handler(request)
            finally:
                self._current_request = None
        except HTTPException as exc:
            return await self._finish_response(request, exc)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return await self._finish_response(request, parser_refusal(request, self._metrics, 504))
        except Exception as exc:  # noqa: BLE001 - a handler failure is answered 500, as aiohttp does
            return await self._finish_response(request, parser_refusal(request, self._metrics, 500, exc))
        else:
            if (
                type(resp) is SentResponse
                and (resp.keep_alive or request.content.is_eof())
                and not self._close_after_response
                and not self._upgraded
            ):
                record_access(self._state, request, resp)
                return resp, False
            return await self._finish_response(request, resp)
        finally:
            self._request_in_progress = False
            if self._handler_waiter is not None:
                self._handler_waiter.set_result(None)

    async def _finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse
    ) -> tuple[web.StreamResponse, bool]:
        """Write a response the handler returned (prepare, then end it); True when the client is gone."""
        if self._upgraded and self._payload_parser is None and not self._messages:
            self._declined_upgrade()
        try:
            await resp.prepare(request)
            await resp.write_eof()
        except ConnectionError:
            record_access(self._state, request, resp)
            return resp, True
        record_access(self._state, request, resp)
        if self._close_after_response or closes_unread(request, resp):
            # The response is written (transport.close() flushes it first); no drain, no keep-alive.
            self._close_after_response = False
            self.force_close()
        return resp, False

    async def _linger(self, payload: StreamReader) -> None:
        """Read and drop an unread request body for up to lingering_time (aiohttp's behaviour), so a client still
        uploading gets to read its answer; close the connection if the body did not end."""
        lingering_time = self._lingering_time
        if not self._force_close and lingering_time:
            now = self._loop.time()
            end_t = now + lingering_time
            try:
                while not payload.is_eof() and now < end_t:
                    async with ceil_timeout(end_t - now):
                        await payload.readany()
                    now = self._loop.time()
            except (asyncio.CancelledError, TimeoutError):
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
        if not payload.is_eof() and not self._force_close:
            self.close()
