"""A real `strangler serve` (or any `python -c` program of the repo) as a child process for the end-to-end tests:
started from the repository root with the repo on PYTHONPATH, always reaped, and polled for readiness on its admin
listener."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, overload

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from cli.main import run; sys.argv[0] = 'strangler'; run()"  # the installed entry point
SERVE = (  # proxy.app.serve() itself: python -c SERVE <config> <port> <admin port>
    "import sys; from proxy.app import serve; "
    "sys.exit(serve(sys.argv[1], port=int(sys.argv[2]), admin_port=int(sys.argv[3])))"
)

Stderr = int | IO[Any]  # subprocess.PIPE, subprocess.DEVNULL or an open file


def strangler(*args: str) -> list[str]:
    """The command line running `strangler ARGS...` from this checkout."""
    return [sys.executable, "-c", CLI, *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the repository on PYTHONPATH, and `extra` on top."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


@overload
def child_process(
    command: Sequence[str],
    *,
    text: Literal[True],
    cwd: Path = ...,
    env: Mapping[str, str] | None = ...,
    stderr: Stderr = ...,
    grace: float = ...,
) -> contextlib.AbstractAsyncContextManager[subprocess.Popen[str]]: ...


@overload
def child_process(
    command: Sequence[str],
    *,
    text: Literal[False] = ...,
    cwd: Path = ...,
    env: Mapping[str, str] | None = ...,
    stderr: Stderr = ...,
    grace: float = ...,
) -> contextlib.AbstractAsyncContextManager[subprocess.Popen[bytes]]: ...


def child_process(
    command: Sequence[str],
    *,
    text: bool = False,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    stderr: Stderr = subprocess.PIPE,
    grace: float = 0.0,
) -> contextlib.AbstractAsyncContextManager[subprocess.Popen[Any]]:
    """Start `command` (stdout to /dev/null) in `cwd` with this environment, PYTHONPATH set to the repo and `env` on
    top. On the way out it is always reaped: still running, it gets SIGTERM and up to `grace` seconds to exit (when
    `grace` > 0), then SIGKILL; then it is waited for and its stderr pipe closed."""
    return _child(command, text, cwd, child_env(env), stderr, grace)


@contextlib.asynccontextmanager
async def _child(
    command: Sequence[str], text: bool, cwd: Path, env: Mapping[str, str], stderr: Stderr, grace: float
) -> AsyncIterator[subprocess.Popen[Any]]:
    process = subprocess.Popen(  # noqa: ASYNC220 - a child polled without blocking
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=text
    )
    try:
        yield process
    finally:
        if grace > 0 and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(process.wait), grace)
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()


async def admin_ready(port: int) -> bool:
    """Whether the admin listener on loopback `port` answers /readyz with 200 (False while nothing listens)."""
    try:
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def ready_while_running(process: subprocess.Popen[Any], port: int) -> bool:
    """`admin_ready(port)`, failing at once (AssertionError with its stderr, when piped) if `process` has exited."""
    if process.poll() is not None:
        err = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"serve exited early with {process.returncode}: {err!r}")
    return await admin_ready(port)


async def stop_cleanly(process: subprocess.Popen[Any], limit: float = 20.0) -> int:
    """SIGTERM `process` and wait up to `limit` seconds for it to exit; its exit code (a graceful stop is 0)."""
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(asyncio.to_thread(process.wait), limit)
