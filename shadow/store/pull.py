"""Fetch replicas' store snapshots from their admin API (`GET /store/snapshot`, `proxy.admin_store`) and merge them
into one file (`shadow.store.merge`): the library behind `strangler store pull`.

Each snapshot is streamed to a temporary file beside the merged file, merged, then deleted. Replicas are pulled one
after another; one that fails is reported (`PullError`, naming its URL and what failed) and the others still merge,
each in its own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from shadow.store.merge import Contribution, MergeError, merge_snapshot

SNAPSHOT_PATH = "/store/snapshot"
CHUNK_BYTES = 256 * 1024
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0  # seconds without a byte: the replica copies its store before the first one comes


class PullError(Exception):
    """A replica's snapshot could not be fetched or merged; the message starts with the replica's URL."""


@dataclass(frozen=True, slots=True)
class Pulled:
    """One replica pulled and merged."""

    admin: str
    size: int  # bytes fetched
    contribution: Contribution


def snapshot_url(admin: str) -> str:
    return admin.rstrip("/") + SNAPSHOT_PATH


def _refusal(admin: str, status: int, text: str) -> PullError:
    what = {
        401: "401 unauthorized: the token is wrong for this replica",
        403: "403 forbidden: the replica has no admin token configured (store snapshots are disabled there)",
        404: "404 not found: the replica has no store file yet, or is an older strangler without /store/snapshot",
    }.get(status, f"HTTP {status}")
    detail = text.strip().replace("\n", " ")[:200]
    return PullError(f"{admin}: {what}" + (f" ({detail})" if detail else ""))


async def fetch_snapshot(session: aiohttp.ClientSession, admin: str, token: str, target: Path) -> int:
    """Stream `admin`'s snapshot into `target`; returns its size in bytes. Raises PullError."""
    url = snapshot_url(admin)
    size = 0
    try:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                raise _refusal(admin, resp.status, await resp.text(errors="replace"))
            with target.open("wb") as f:
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    f.write(chunk)
                    size += len(chunk)
            expected = resp.content_length
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        detail = str(exc) or "timed out"
        raise PullError(f"{admin}: unreachable or cut off ({type(exc).__name__}: {detail})") from None
    if expected is not None and size != expected:
        raise PullError(f"{admin}: snapshot cut short ({size} of {expected} bytes)")
    return size


def _remove(path: Path) -> None:
    for extra in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{extra}")


async def pull_one(session: aiohttp.ClientSession, admin: str, token: str, into: Path) -> Pulled:
    """Fetch one replica's snapshot and merge it into `into`. Raises PullError."""
    fd, name = tempfile.mkstemp(prefix=f".{into.name}.pull-", dir=into.parent)
    os.close(fd)
    target = Path(name)
    try:
        size = await fetch_snapshot(session, admin, token, target)
        try:
            contribution = await asyncio.to_thread(merge_snapshot, into, target, admin)
        except MergeError as exc:
            # The message names the temporary file; the replica's URL says more.
            message = str(exc).removeprefix(f"{target}: ").replace(str(target), "the snapshot")
            raise PullError(f"{admin}: {message}") from None
        except sqlite3.Error as exc:
            raise PullError(f"{admin}: merging the snapshot into {into} failed: {exc}") from None
        return Pulled(admin, size, contribution)
    finally:
        await asyncio.to_thread(_remove, target)


async def pull_all(admins: list[str], token: str, into: Path) -> tuple[list[Pulled], list[PullError]]:
    """Pull every replica in turn; returns what merged and what failed."""
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
    pulled: list[Pulled] = []
    failed: list[PullError] = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for admin in admins:
            try:
                pulled.append(await pull_one(session, admin, token, into))
            except PullError as exc:
                failed.append(exc)
    return pulled, failed
