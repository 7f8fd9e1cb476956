"""asyncio TCP connections that move frames for a sans-IO protocol session.

Built on `asyncio.Protocol` rather than streams: one request/reply costs a write, one callback
and one future, which keeps otfuzz's own overhead well below the target's. The connection knows
nothing about the protocol beyond the Session interface: it feeds received bytes in, asks for a
complete reply, and writes whatever the session wants sent on its own (acks, keep-alives).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from otfuzz.protocols.base import Session


@dataclass(frozen=True)
class Exchange:
    """The outcome of sending one frame.

    `outcome` is "reply", "timeout", "closed" (orderly close by the peer) or "reset" (RST).
    `leftover` holds bytes received that never formed a complete frame.
    """

    outcome: str
    reply: bytes | None
    latency: float
    leftover: bytes = b""


class _Wire(asyncio.Protocol):
    def __init__(self, session: Session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bytes | None] | None = None
        self.replies: list[bytes] = []
        self.lost: str | None = None
        self.arrived = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.arrived = time.perf_counter()
        session = self.session
        session.feed(data)
        out = session.take_output()
        if out and self.transport is not None:
            self.transport.write(out)
        while True:
            reply = session.next_reply()
            if reply is None:
                break
            self.replies.append(reply)
        if self.replies and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.replies.pop(0))

    def eof_received(self) -> bool:
        self._lose("closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose("reset" if isinstance(exc, (ConnectionResetError, BrokenPipeError)) else "closed")

    def _lose(self, how: str) -> None:
        if self.lost is None:
            self.lost = how
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Connection:
    """One TCP connection to the target, carrying one protocol session."""

    def __init__(self, wire: _Wire, transport: asyncio.Transport) -> None:
        self._wire = wire
        self._transport = transport

    @classmethod
    async def open(cls, host: str, port: int, session: Session, timeout: float, opening: bool = True) -> Connection:
        """Connect (raises ConnectionRefusedError, TimeoutError or OSError) and run the opening
        handshake unless `opening` is False (for cases that test the state before it)."""
        loop = asyncio.get_running_loop()
        wire = _Wire(session)
        transport, _ = await asyncio.wait_for(loop.create_connection(lambda: wire, host, port), timeout)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(wire, transport)  # type: ignore[arg-type]
        for frame in session.opening() if opening else ():
            result = await conn.exchange(frame, timeout)
            if result.outcome != "reply":
                conn.close()
                raise ConnectionError(f"opening handshake got no answer ({result.outcome})")
        return conn

    @property
    def alive(self) -> bool:
        return self._wire.lost is None and not self._transport.is_closing() and not self._wire.session.ended

    @property
    def session(self) -> Session:
        return self._wire.session

    async def exchange(self, frame: bytes, timeout: float, expect_reply: bool = True,
                       meanwhile: Callable[[], object] | None = None) -> Exchange:
        """Send one frame and wait for one complete reply, the timeout, or the end of the connection.

        `meanwhile` runs after the frame is written and before waiting: work done there (such
        as generating the next case) overlaps the target's processing instead of adding to it.
        """
        wire = self._wire
        start = time.perf_counter()
        if wire.lost is not None:
            return Exchange(wire.lost, None, 0.0)
        wire.replies.clear()  # a late reply to an earlier request must not be taken for this one
        self._transport.write(wire.session.prepare(frame))
        if meanwhile is not None:
            meanwhile()
        if not expect_reply:
            return Exchange("timeout", None, 0.0)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes | None] = loop.create_future()
        wire.waiter = waiter
        handle = loop.call_later(timeout, _expire, waiter)
        try:
            reply = await waiter
        finally:
            handle.cancel()
            wire.waiter = None
        latency = time.perf_counter() - start
        if reply is not None:
            if meanwhile is not None:
                # The reply may have waited while `meanwhile` ran: time it from the data's arrival.
                latency = min(latency, wire.arrived - start) if wire.arrived >= start else latency
            return Exchange("reply", reply, latency)
        leftover = wire.session.leftover()
        if wire.lost is not None:
            return Exchange(wire.lost, None, latency, leftover)
        return Exchange("timeout", None, latency, leftover)

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()


def _expire(waiter: asyncio.Future[bytes | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
