"""The `fast` proxy listener (`listen.server: fast`): each connection's requests served inline by one loop, with no
Task per request and no second pass through aiohttp's response machinery for an answer already written whole.

aiohttp's `RequestHandler.start` runs every request in a Task of its own (to copy context variables, which strangler
does not use) and passes every response through `finish_response`. `FastRequestHandler` keeps everything else of
`proxy.server.GuardedRequestHandler` — the llhttp parser (aiohttp's C `HttpRequestParser`) and what it refuses, the
head deadline, the connection cap, keep-alive, lingering, upgrades, shutdown — and replaces only that loop: the
handler is awaited in the connection's own task, and a response `proxy.forwarding` already wrote (`SentResponse`)
is not finished again. The request steps are `proxy.handler.ProxyHandler`'s, the same for both listeners.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp.helpers import ceil_timeout
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from aiohttp.web_exceptions import HTTPException
from aiohttp.web_protocol import ERROR, PayloadAccessError, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from proxy.responses import SentResponse
from proxy.server import GuardedRequestHandler

log = logging.getLogger("strangler.proxy")

_PAYLOAD_ACCESS_ERROR = PayloadAccessError()
_Handler = Callable[[BaseRequest], Awaitable[StreamResponse]]


class FastRequestHandler(GuardedRequestHandler):
    """A guarded connection whose requests run in the connection's task (one Task per connection, not per request)."""

    __slots__ = ()

    async def start(self) -> None:
        """aiohttp's `RequestHandler.start` loop, with the handler awaited inline instead of in a new Task."""
        loop = self._loop
        manager = self._manager
        assert manager is not None
        assert self._request_factory is not None
        factory = self._request_factory
        keepalive_timeout = self._keepalive_timeout
        while not self._force_close:
            if not self._messages:
                try:
                    self._waiter = loop.create_future()
                    await self._waiter
                finally:
                    self._waiter = None
            message, payload = self._messages.popleft()
            if self._parser is not None:
                self._parser.message_consumed()
            if self._buffer_paused and len(self._messages) <= self._msg_queue_resume_size:
                self._resume_reading_if_drained()
            manager.requests_count += 1
            writer = StreamWriter(self, loop)
            handler: _Handler | None
            if isinstance(message, _ErrInfo):
                handler = self._make_error_handler(message)
                message = ERROR
            else:
                handler = self._request_handler
            assert handler is not None
            request = factory(message, payload, self, writer, self._task_handler)  # type: ignore[arg-type]
            try:
                try:
                    resp, reset = await self._serve(request, handler)
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
            if self._keepalive and not self._close and not self._force_close:
                close_time = loop.time() + keepalive_timeout
                self._next_keepalive_close_time = close_time
                if self._keepalive_handle is None:
                    self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
            else:
                break
        if not self._force_close:
            self._task_handler = None
            if self.transport is not None:
                self.transport.close()

    async def _serve(self, request: BaseRequest, handler: _Handler) -> tuple[StreamResponse, bool]:
        """aiohttp's `_handle_request` without its Task; a response the handler already wrote is not finished."""
        self._request_in_progress = True
        try:
            try:
                self._current_request = request
                resp = await handler(request)
            finally:
                self._current_request = None
        except HTTPException as exc:
            return await self.finish_response(request, exc, None)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return await self.finish_response(request, self.handle_error(request, 504), None)
        except Exception as exc:  # noqa: BLE001 - a handler failure is answered 500, as aiohttp does
            return await self.finish_response(request, self.handle_error(request, 500, exc), None)
        else:
            if (
                type(resp) is SentResponse
                and (resp.keep_alive or request.content.is_eof())
                and not self._close_after_response
                and not self._upgraded
            ):
                # Written whole already; nothing of finish_response applies (no body left unread on a closing
                # connection, no declined upgrade whose tail needs parsing).
                request._finish()
                self.record_access(request, resp)
                return resp, False
            return await self.finish_response(request, resp, None)
        finally:
            self._request_in_progress = False
            if self._handler_waiter is not None:
                self._handler_waiter.set_result(None)

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
