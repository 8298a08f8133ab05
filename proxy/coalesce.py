"""Write coalescing across connections: one loop iteration's small writes go out back to back at its end.

Why: a send on loopback (a sidecar in front of a local legacy app, every benchmark) runs the receiver's TCP stack
inside the sender's system call and ends by waking the receiver when it sleeps. A proxy whose Python work between
two sends (tens of µs) outlasts its peer's (a few µs) finds the peer asleep at almost every send, and on a VM each
wake-up is an inter-processor interrupt through the hypervisor: measured at 18-30 µs of the proxy's CPU per request
(README "Performance"). Held to the end of the iteration, the sends of the requests served in it reach a peer that
the first one woke and that is still busy. A bare uvloop proxy with 60 µs of work a request served 1.3-1.4x the
requests per second this way (`benchmarks.ceiling`).

No latency is added when the loop is not busy: the first write of an iteration goes out at once; only writes made
after it, while the loop still runs the callbacks that were due, wait for them to finish (the flush is the next
callback after those), and never much past HOLD_LIMIT (0.5 ms): a write made later than that sends the round. A
connection that holds a write and then writes any other way, or closes, first flushes the round its write is held
in, so its bytes never reorder. A held write to a transport closed meanwhile is dropped, as a write to it would
have been.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

from aiohttp.http_writer import StreamWriter
from mypy_extensions import mypyc_attr

from proxy.clock import duration_clock

log = logging.getLogger("strangler.proxy")
# The longest a write is held while its iteration goes on (seconds): past it, what the iteration held goes out. It
# bounds the latency coalescing adds when one iteration serves many requests (a burst on many connections), at a
# few requests' work; an ordinary busy iteration ends well before it.
HOLD_LIMIT = 0.0005
_FOR_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteCoalescer] = weakref.WeakKeyDictionary()


class WriteCoalescer:
    """The held writes of one event loop, in the order they were made, and the round they belong to (one round per
    flush: a connection that held a write in an earlier round has nothing held any more)."""

    __slots__ = ("_held", "_loop", "_round", "_scheduled", "_since")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[tuple[asyncio.WriteTransport, bytes]] = []
        self._round = 1
        self._scheduled = False
        self._since = 0.0  # when the round's first write was held

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> int:
        """Write `data` now when it is the iteration's first write, else hold it to the iteration's end (or until
        writes have been held for HOLD_LIMIT). 0 when it went out, else the round it is held in: the caller passes
        that to `release` (as `held`) before it writes to this transport any other way or closes it."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)
            transport.write(data)
            return 0
        held = self._held
        held.append((transport, data))
        if len(held) == 1:
            self._since = duration_clock()
        elif duration_clock() - self._since >= HOLD_LIMIT:
            self._send_held()  # a long iteration: what it held goes now, later writes start a new round
            return 0
        return self._round

    def release(self, holder: Holder) -> None:
        """Before `holder` writes any other way or closes: send the round its write is held in, unless that round
        is gone already (most are: an old round must not send other connections' writes early). It then holds
        nothing."""
        if holder.held == self._round:
            self.flush()
        holder.held = 0

    def flush(self) -> None:
        """Send every held write now, in order (also the scheduled end-of-iteration callback)."""
        self._scheduled = False
        if self._held:
            self._send_held()

    def _send_held(self) -> None:
        held = self._held
        self._held = []
        self._round += 1
        for transport, data in held:
            if transport.is_closing():
                continue
            try:
                transport.write(data)
            except Exception:
                # A transport that refuses bytes is broken: abort it (its protocol hears connection_lost and settles
                # its exchange, counted as every lost connection is) and still send the others theirs.
                log.exception("a coalesced write failed; its connection is aborted")
                transport.abort()


def coalescer(loop: asyncio.AbstractEventLoop) -> WriteCoalescer:
    """The loop's one coalescer, shared by the client connections and the upstream pools it serves."""
    found = _FOR_LOOP.get(loop)
    if found is None:
        found = _FOR_LOOP[loop] = WriteCoalescer(loop)
    return found


class Holder(Protocol):
    """A connection that writes through a coalescer: while `held` names a round, it flushes that round before any
    other write or a close."""

    held: int

    @property
    def transport(self) -> asyncio.Transport | None: ...


@mypyc_attr(native_class=False)  # a subclass of aiohttp's (Python) StreamWriter: compiled methods on a Python class
class CoalescingWriter(StreamWriter):
    """The fast listener's response writer: a response written whole (head and body in one piece, the last write
    of its request) goes through the loop's coalescer; everything else is aiohttp's StreamWriter."""

    def __init__(self, protocol: Holder, loop: asyncio.AbstractEventLoop, coalescing: WriteCoalescer) -> None:
        super().__init__(protocol, loop)  # type: ignore[arg-type]  # an aiohttp BaseProtocol, seen as a Holder here
        self._holder = protocol
        self._coalescing = coalescing

    def write_whole(self, data: bytes) -> None:
        """Write a whole response and end the writer (`write_eof` without the wait)."""
        transport = self._holder.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        size = len(data)
        self.buffer_size += size
        self.output_size += size  # the access log's byte count
        self._eof = True
        self._holder.held = self._coalescing.write(transport, data)
