"""A header pass's kind for each header name, looked up by the name exactly as received.

`proxy.headers` decides what to do with a header by its lower-cased name (one dict lookup per header). Clients
and back ends send the same few spellings over and over, so the kind is also kept under the name as it arrived: a
hit skips lowering the name (a new bytes object per header, every request). The cache is bounded: only short names
are kept, and it is emptied when full, so many distinct names (a hostile client) cost a lookup, never memory.
"""

from __future__ import annotations

COPY = 0  # the kind of a name the pass does not list: copied as it is
CACHE_SIZE = 512
MAX_CACHED_LEN = 64


class NameKinds:
    """`kinds` (lower-case name → non-zero kind) with a cache by exact spelling: `get(name)` is the cache's own
    dict lookup (None when not cached yet), `learn(name)` the kind of a name not cached, caching it. A name not in
    `kinds` that holds an underscore is of kind `underscored`."""

    __slots__ = ("_cache", "_kinds", "_underscored", "get")

    def __init__(self, kinds: dict[bytes, int], *, underscored: int = COPY) -> None:
        self._kinds = kinds
        self._underscored = underscored  # the kind of an unlisted name holding '_' (decided once per spelling)
        self._cache: dict[bytes, int] = {}
        self.get = self._cache.get  # the same dict for good: clear() empties it in place

    def learn(self, name: bytes) -> int:
        kind = self._kinds.get(name.lower(), COPY)
        if kind == COPY and name.find(b"_") >= 0:  # find, not `in`: bytes' `in` raises and clears a TypeError first
            kind = self._underscored
        if len(name) <= MAX_CACHED_LEN:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[name] = kind
        return kind
