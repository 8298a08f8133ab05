"""The shadow worker process as its supervisor starts it: the real proxy and the real worker, at the CPU priority
`limits.shadow_worker_nice` asks for, read back from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp import web

from tests.shadow.shadow_fixtures import backends
from tests.shadow.worker_fixtures import worker_proxy


def thread_nice_values(pid: int) -> list[int]:
    """The nice value of every thread of a process (on Linux a nice value belongs to a thread), from /proc."""
    values = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended while we looked
            continue
        values.append(int(stat[stat.rindex(")") + 2 :].split()[16]))  # field 19 of proc(5): nice
    return values


async def answer(request: web.Request) -> web.StreamResponse:
    return web.json_response({"path": request.path, "items": [1, 2, 3]})


@pytest.mark.parametrize("nice", [7, 0])
async def test_worker_threads_run_at_the_configured_nice_value(tmp_path: Path, nice: int) -> None:
    """With limits.shadow_worker_nice N, every thread of the worker (its loop, its store writer and compare threads,
    started after the copies began) runs at the proxy's nice value + N, capped at 19; with 0, at the proxy's."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    async with (
        backends(answer, answer) as (legacy, new),
        worker_proxy(tmp_path, legacy.url, new.url, top_level=f"limits: {{shadow_worker_nice: {nice}}}") as wp,
    ):
        for i in range(5):  # copies, comparisons and rows: the worker has started its threads
            assert (await wp.get(f"/api/n/{i}"))[0] == 200
        pid = await wp.worker_started()
        values = thread_nice_values(pid)
        assert len(values) > 1  # the threads are checked, not only the main one
        assert values == [min(ours + nice, 19)] * len(values)
        assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the proxy's own is unchanged
