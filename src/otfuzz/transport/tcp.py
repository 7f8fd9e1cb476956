"""asyncio TCP connections that move frames for a sans-IO protocol session.

Built on `asyncio.Protocol` rather than streams: one request/reply costs a write, one callback
and one future, which keeps otfuzz's own overhead well below the target's. The connection knows
nothing about the protocol beyond the Session interface: it feeds received bytes in, asks for a
complete reply, and writes whatever the session wants sent on its own (acks, keep-alives).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from otfuzz.protocols.base import Session


@dataclass(frozen=True)
class Exchange:
    """The outcome of sending one frame.

    `outcome` is "reply", "timeout", "closed" (orderly close by the peer), "reset" (RST) or, on a
    datagram transport, "refused" (ICMP port unreachable: nothing listens at the target).
    `leftover` holds bytes received that never formed a complete frame.
    """

    outcome: str
    reply: bytes | None
    latency: float
    leftover: bytes = b""


class Wire:
    """What a connection keeps, whatever carries its bytes: the session, the replies it framed,
    the one waiter of the exchange in progress, and how the connection ended. Each transport
    mixes it into its asyncio protocol and says how bytes leave (`send`, `send_output`)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.waiter: asyncio.Future[bytes | None] | None = None
        self.replies: list[bytes] = []
        self.lost: str | None = None
        self.arrived = 0.0

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def send_output(self) -> None:
        out = self.session.take_output()
        if out:
            self.send(out)

    def received(self, data: bytes) -> None:
        self.arrived = time.perf_counter()
        session = self.session
        session.feed(data)
        self.send_output()
        while True:
            reply = session.next_reply()
            if reply is None:
                break
            self.replies.append(reply)
        if self.replies and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.replies.pop(0))

    def lose(self, how: str) -> None:
        if self.lost is None:
            self.lost = how
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def exchange(self, frame: bytes, timeout: float, expect_reply: bool = True,
                       meanwhile: Callable[[], object] | None = None) -> Exchange:
        """Send one frame and wait for one complete reply, the timeout, or the end of the connection.

        `meanwhile` runs after the frame is written and before waiting: work done there (such
        as generating the next case) overlaps the target's processing instead of adding to it.
        """
        start = time.perf_counter()
        if self.lost is not None:
            return Exchange(self.lost, None, 0.0)
        self._write(self.session.prepare(frame), meanwhile)
        if not expect_reply:
            return Exchange("timeout", None, 0.0)
        return await self._await(timeout, start, meanwhile is not None)

    async def exchange_synced(self, frame: bytes, sync: bytes, timeout: float,
                              meanwhile: Callable[[], object] | None = None) -> tuple[Exchange, bool | None]:
        """Send `frame` and, right behind it, a sync request (`Session.prepare_sync`); then wait up
        to `timeout` for the frame's answer or the sync's. Returns the frame's exchange and
        whether the stream is in step: True when the sync's answer came (after the frame's, or
        instead of it: the exchange is then a "timeout" the sync answer proved, timed by it),
        False when it did not come within `timeout`, None when the session sent no sync."""
        start = time.perf_counter()
        if self.lost is not None:
            return Exchange(self.lost, None, 0.0), None
        data = self.session.prepare(frame)
        follow = self.session.prepare_sync(sync)
        self._write(data + (follow or b""), meanwhile)
        first = await self._await(timeout, start, meanwhile is not None)
        if follow is None:
            return first, None
        if first.outcome != "reply":
            return first, False
        assert first.reply is not None
        if self.session.is_sync_reply(first.reply):
            # the frame drew no answer of its own; what came back out of sequence is kept, as
            # after any timeout (a response with a sequence number no request had)
            return Exchange("timeout", None, first.latency, self.session.leftover()), True
        if self.replies:  # (both answers came in one segment)
            return first, self.session.is_sync_reply(self.replies.pop(0))
        second = await self._await(timeout, time.perf_counter(), False)
        return first, second.outcome == "reply" and second.reply is not None and self.session.is_sync_reply(second.reply)

    async def exchange_many(self, frames: list[bytes], timeout: float,
                            meanwhile: Callable[[], object] | None = None) -> tuple[list[tuple[bytes, float]], float]:
        """Send frames back to back, before any answer (pipelining), and collect the complete
        replies that come within `timeout`, one per frame at most, with their arrival times
        (perf_counter); also returns when the frames were written. Stops early once every
        frame has an answer or the connection ended (`lost` says how)."""
        start = time.perf_counter()
        if self.lost is not None:
            return [], start
        self._write(b"".join(self.session.prepare(frame) for frame in frames), meanwhile)
        got: list[tuple[bytes, float]] = []
        deadline = start + timeout
        while len(got) < len(frames):
            while self.replies and len(got) < len(frames):
                got.append((self.replies.pop(0), self.arrived))
            remaining = deadline - time.perf_counter()
            if len(got) == len(frames) or self.lost is not None or remaining <= 0:
                break
            reply = await self._next_reply(remaining)
            if reply is not None:
                got.append((reply, self.arrived))
        return got, start

    async def wait_more(self, timeout: float, start: float) -> Exchange:
        """Go on waiting for the reply to the frame sent at perf_counter `start`, sending nothing
        (a short first wait that ended on part of a reply)."""
        if self.replies:
            return Exchange("reply", self.replies.pop(0), self.arrived - start)
        if self.lost is not None:
            return Exchange(self.lost, None, time.perf_counter() - start, self.session.leftover())
        return await self._await(timeout, start, True)

    def _write(self, data: bytes, meanwhile: Callable[[], object] | None) -> None:
        self.replies.clear()  # a late reply to an earlier request must not be taken for this one
        self.send(data)
        if meanwhile is not None:
            meanwhile()

    async def _next_reply(self, timeout: float) -> bytes | None:
        """The next complete reply within `timeout` (None: the timeout or the end of the connection)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes | None] = loop.create_future()
        self.waiter = waiter
        handle = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            handle.cancel()
            self.waiter = None

    async def _await(self, timeout: float, start: float, late_arrival: bool) -> Exchange:
        reply = await self._next_reply(timeout)
        latency = time.perf_counter() - start
        if reply is not None:
            if late_arrival:
                # The reply may have waited while `meanwhile` ran: time it from the data's arrival.
                latency = min(latency, self.arrived - start) if self.arrived >= start else latency
            return Exchange("reply", reply, latency)
        leftover = self.session.leftover()
        if self.lost is not None:
            return Exchange(self.lost, None, latency, leftover)
        return Exchange("timeout", None, latency, leftover)


class _Wire(Wire, asyncio.Protocol):
    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.received(data)

    def eof_received(self) -> bool:
        self.lose("closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lose("reset" if isinstance(exc, (ConnectionResetError, BrokenPipeError)) else "closed")


class Connection:
    """One TCP connection to the target, carrying one protocol session."""

    # A byte stream can fall out of step (a late reply, a frame cut short): the engine opens a
    # new connection after silence, a stray frame or a malformed reply, unless that reply
    # carries the request's own id with nothing after it (see otfuzz.transport).
    reuse = "stream"  # REUSE_STREAM

    def __init__(self, wire: _Wire, transport: asyncio.Transport) -> None:
        self._wire = wire
        self._transport = transport
        # set by the engine: a frame that breaks the specification, or after which the target
        # may end the connection, went over it; a close or reset later on it is then no anomaly
        self.close_excused = False

    @classmethod
    async def open(cls, host: str, port: int, session: Session, timeout: float, opening: bool = True) -> Connection:
        """Connect (raises ConnectionRefusedError, TimeoutError or OSError) and run the opening
        handshake unless `opening` is False (for cases that test the state before it)."""
        loop = asyncio.get_running_loop()
        wire = _Wire(session)
        async with asyncio.timeout(timeout):  # (no task of its own, unlike wait_for: a fuzzing run opens thousands)
            sock = await _connected(loop, host, port)
            if sock is not None:
                transport, _ = await loop.create_connection(lambda: wire, sock=sock)
            else:
                transport, _ = await loop.create_connection(lambda: wire, host, port)
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(wire, transport)  # type: ignore[arg-type]
        try:
            for frame in session.opening() if opening else ():
                result = await conn.exchange(frame, timeout)
                if result.outcome != "reply":
                    raise ConnectionError(f"opening handshake got no answer ({result.outcome})")
        except BaseException:  # (also a cancelled spare connection: see CaseRunner)
            conn.close()
            raise
        return conn

    @property
    def alive(self) -> bool:
        return self._wire.lost is None and not self._transport.is_closing() and not self._wire.session.ended

    @property
    def session(self) -> Session:
        return self._wire.session

    async def exchange(self, frame: bytes, timeout: float, expect_reply: bool = True,
                       meanwhile: Callable[[], object] | None = None) -> Exchange:
        """Send one frame and wait for one complete reply, the timeout, or the end of the connection
        (`meanwhile`: see Wire.exchange)."""
        return await self._wire.exchange(frame, timeout, expect_reply, meanwhile)

    async def exchange_synced(self, frame: bytes, sync: bytes, timeout: float,
                              meanwhile: Callable[[], object] | None = None) -> tuple[Exchange, bool | None]:
        """A frame and a sync request right behind it (see Wire.exchange_synced)."""
        return await self._wire.exchange_synced(frame, sync, timeout, meanwhile)

    async def exchange_many(self, frames: list[bytes], timeout: float,
                            meanwhile: Callable[[], object] | None = None) -> tuple[list[tuple[bytes, float]], float]:
        """Several frames in flight at once (see Wire.exchange_many)."""
        return await self._wire.exchange_many(frames, timeout, meanwhile)

    @property
    def lost(self) -> str | None:
        """How the connection ended ("closed", "reset"), or None while it is open."""
        return self._wire.lost

    async def wait_more(self, timeout: float, start: float) -> Exchange:
        """Go on waiting for the reply to the last frame (see Wire.wait_more)."""
        return await self._wire.wait_more(timeout, start)

    @property
    def drained(self) -> bool:
        """Nothing received beyond the replies taken: no further reply, no part of one."""
        return not self._wire.replies and not self._wire.session.leftover()

    def late_reply(self) -> tuple[bytes, float] | None:
        """A reply that arrived after its exchange gave up waiting, with its arrival time
        (perf_counter); None while nothing came. The connection carries nothing else after."""
        wire = self._wire
        if wire.replies:
            return wire.replies.pop(0), wire.arrived
        return None

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()


async def _connected(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket | None:
    """A socket connected to an IP address (None for a host name: asyncio resolves it). Made
    here because asyncio's own path adds an address check and a future to a connect that on
    loopback has usually completed at once: a fuzzing run against pymodbus opens a connection
    for one case in four, and an open and close took 236 us of otfuzz's CPU that way, ~180 now."""
    family = _family(host)
    if family is None:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@lru_cache(maxsize=64)
def _family(host: str) -> socket.AddressFamily | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def _expire(waiter: asyncio.Future[bytes | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
