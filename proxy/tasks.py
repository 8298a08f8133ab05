"""The one owner of background tasks: strong references, cancelled and awaited on close.

The event loop keeps only weak references to tasks, so a fire-and-forget task can be garbage-collected mid-flight
and its exception is lost. Every background task in strangler is started through a `TaskOwner`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("strangler.tasks")


class TaskOwner:
    """Holds strong references to the tasks it starts until they finish; `close()` cancels and awaits them."""

    __slots__ = ("_closed", "_name", "_tasks")

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def start(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Task[T]:
        """Start `coro` as a task held here; `loop`: the running loop, when a caller that starts a task per request
        has it (`asyncio.create_task` finds it with a getpid system call each time, to notice a fork)."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"task owner {self._name!r} is closed")
        task = (loop or asyncio.get_running_loop()).create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s of %s failed", task.get_name(), self._name, exc_info=exc)

    async def wait(self, deadline: float | None = None) -> bool:
        """Wait for the running tasks to finish by themselves; True when all did within `deadline` seconds."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=deadline)
        return not pending

    async def close(self) -> None:
        """Cancel what is still running and wait until every task has really ended."""
        self._closed = True
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
