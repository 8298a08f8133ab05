"""A fault-injection TCP relay for tests: put it between strangler and a back end and make the network misbehave.

    relay = await FaultProxy.start(backend_port)     # listens on 127.0.0.1:relay.port, forwards to the back end
    relay.fault = Fault("reset")                     # every new connection is reset at once
    relay.fault = Fault("close_after", n=100)        # the back end's answer is cut after 100 bytes
    relay.fault = PASS                               # back to a clean relay

Modes (each applies to connections accepted after it is set; `flap()` also cuts the open ones):
- pass: relay both ways untouched;
- delay: wait `seconds` before the back end's answer starts;
- drip: relay the answer `n` bytes at a time, `seconds` apart;
- reset: accept, then reset the connection (RST) without reading;
- blackhole: accept and read, never answer, never close;
- close_after: relay `n` bytes of the answer, then close both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Literal

Mode = Literal["pass", "delay", "drip", "reset", "blackhole", "close_after"]


@dataclass(frozen=True, slots=True)
class Fault:
    mode: Mode
    seconds: float = 0.0
    n: int = 0


PASS = Fault("pass")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """An asyncio TCP relay on loopback with a switchable `fault`; counts connections it accepted."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.fault = PASS
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, target_port: int, fault: Fault = PASS) -> FaultProxy:
        relay = cls(target_port)
        relay.fault = fault
        relay._server = await asyncio.start_server(relay._accept, "127.0.0.1", 0)
        relay.port = relay._server.sockets[0].getsockname()[1]
        return relay

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flap(self, fault: Fault) -> None:
        """Set a fault and cut every open connection (a back end going away mid-stream)."""
        self.fault = fault
        for writer in list(self._open):
            _reset(writer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        fault = self.fault
        if fault.mode == "reset":
            _reset(writer)
            return
        self._open.add(writer)
        try:
            if fault.mode == "blackhole":
                while await reader.read(65536):
                    pass
                await asyncio.Event().wait()  # never answer; cancelled by close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                _reset(writer)
                return
            await self._relay(reader, writer, up_reader, up_writer, fault)
        except (OSError, RuntimeError, asyncio.IncompleteReadError):  # RuntimeError: uvloop's closed transports
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        fault: Fault,
    ) -> None:
        self._open.add(up_writer)
        upstream = asyncio.ensure_future(self._pipe(reader, up_writer, PASS))
        self._tasks.add(upstream)
        try:
            await self._pipe(up_reader, writer, fault)
        finally:
            upstream.cancel()
            self._tasks.discard(upstream)
            self._open.discard(up_writer)
            up_writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: Fault) -> None:
        """Copy one direction until EOF, applying `fault` to what flows."""
        sent = 0
        first = True
        while True:
            data = await reader.read(65536 if fault.mode != "drip" else max(1, fault.n))
            if not data:
                with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: uvloop, the other side is gone
                    writer.write_eof()
                return
            if first and fault.mode == "delay":
                await asyncio.sleep(fault.seconds)
            first = False
            if fault.mode == "close_after":
                room = fault.n - sent
                writer.write(data[:room])
                sent += min(room, len(data))
                if sent >= fault.n:
                    await writer.drain()
                    writer.close()
                    return
                continue
            if fault.mode == "drip":
                for at in range(0, len(data), max(1, fault.n)):
                    writer.write(data[at : at + max(1, fault.n)])
                    await writer.drain()
                    await asyncio.sleep(fault.seconds)
                continue
            writer.write(data)
            await writer.drain()
