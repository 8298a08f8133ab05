"""The shadow worker process as its supervisor starts it: the real proxy and the real worker, at the CPU priority
`limits.shadow_worker_nice` asks for, read back from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp import web

from proxy import native
from proxy.native import ext_suffix
from proxy.native_build import GROUP
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


def proc_text(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")


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


async def test_the_worker_runs_the_compiled_modules_when_the_proxy_does(tmp_path: Path) -> None:
    """The worker imports its entry point (never `-m`, which runs a module's source as __main__), so with a current
    native build it maps the compiled request path, as its proxy does; with none or STRANGLER_NATIVE=0, neither."""
    async with backends(answer, answer) as (legacy, new), worker_proxy(tmp_path, legacy.url, new.url) as wp:
        assert (await wp.get("/api/n/1"))[0] == 200
        pid = await wp.worker_started()
        maps, cmdline = proc_text(pid, "maps"), proc_text(pid, "cmdline")
        # The compiled form of the worker's own module is mapped (a shim file per module, beside the shared one).
        compiled = f"shadow/worker/process{ext_suffix()}" in maps and f"{GROUP}__mypyc" in maps
        assert compiled == native.status().active  # the worker inherits this process's tree and environment
        assert "shadow.worker.process" in cmdline
