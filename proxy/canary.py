"""Canary splitting: which side, legacy or new, serves a request on a route in canary mode.

A sticky key (header, cookie or client IP) is hashed with the route id into one of 10,000 buckets; the request goes
to the new side iff its bucket is below weight x 100. The hash is blake2b, not `hash()`, so every process and every
Python version puts a user in the same bucket, and because the threshold only moves, raising the weight only moves
users to the new side and lowering it only moves them back.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from typing import Literal

from proxy.config.model import Canary, Sticky

BUCKETS = 10_000
Side = Literal["legacy", "new"]


def bucket(route_id: str, key: str) -> int:
    """The key's bucket for this route, in 0..9999; the route id keeps one user's buckets independent per route."""
    data = f"{route_id}\0{key}".encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(data, digest_size=8).digest()
    # 64 bits modulo 10,000: the bias is below 1e-15, far under any weight step.
    return int.from_bytes(digest, "big") % BUCKETS


def sticky_key(
    sticky: Sticky | None, headers: Mapping[str, str], cookies: Mapping[str, str], client_ip: str
) -> str | None:
    """The value the split sticks to, or None (no stickiness configured, or the request lacks the value)."""
    if sticky is None:
        return None
    if sticky.kind == "header":
        value = headers.get(sticky.name)
    elif sticky.kind == "cookie":
        value = cookies.get(sticky.name)
    else:
        value = client_ip
    return value or None


def choose_side(route_id: str, canary: Canary, key: str | None, rand: Callable[[], float] = random.random) -> Side:
    """legacy or new for one request; `key` None falls back to a per-request random draw at the same weight."""
    threshold = canary.weight * (BUCKETS / 100)
    if threshold <= 0:
        return "legacy"
    if threshold >= BUCKETS:
        return "new"
    if key is None:
        return "new" if rand() * BUCKETS < threshold else "legacy"
    return "new" if bucket(route_id, key) < threshold else "legacy"
