"""Turns one step of a load pattern into traffic on loopback or an in-scope target.

Floods are open-loop, as in a certification lab: requests leave on a schedule (the integral of
the step's rate, checked every few milliseconds and written in one batch per connection) whether
or not the target keeps up, and replies are counted as they come. That keeps the offered load a
property of the test rather than of the target. Every request that was due is accounted for
exactly once: written, held back because the kernel's send buffer was full (the target is not
reading: its own load limiting), skipped because the target had closed the connection, or lost
because otfuzz itself fell behind (`tool_shortfall`, which makes a step inconclusive). Every loop
here is bounded by the step's duration and by its request count.

A datagram protocol (BACnet/IP over UDP) floods from connected UDP sockets instead of TCP
connections: each request is its own datagram and every datagram that comes back is counted as
an answer. Replies cannot be paired in order when requests go unanswered (malformed ones mostly
do), so each is judged against the most recent request it can answer; an ICMP port unreachable
ends that socket like a refused connect. Connection floods do not apply to it at all (the
runner reports them as not applicable).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from otfuzz.protocols.base import Protocol, Session
from otfuzz.stress.patterns import CONNECTION_KINDS, FloodFrames, Step
from otfuzz.transport import connection_oriented

TICK = 0.004  # seconds between scheduling passes
CATCH_UP = 0.05  # at most this much of the schedule is sent at once after a stall; the rest is shortfall
PENDING_LIMIT = 65536  # requests remembered per connection to pair replies with (oldest forgotten)
CACHE_LIMIT = 4096  # distinct (request, reply) classifications kept
HOLD_INTERVAL = 1.0  # each held connection sends one valid request this often
RECONNECT_MIN_INTERVAL = 0.01
OPEN_CONCURRENCY = 256


@dataclass
class LoadStats:
    """Cumulative counters of one step; the runner samples differences of them over time."""

    intended: int = 0
    written: int = 0
    backpressure: int = 0
    disconnected: int = 0
    tool_shortfall: int = 0
    answered: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    closed_by_target: int = 0
    open: int = 0
    peak_open: int = 0
    held: int = 0  # connections still open and usable when the step ended
    lag_max: float = 0.0
    bytes_written: int = 0

    def as_record(self, duration: float) -> dict[str, Any]:
        return {
            "intended": self.intended,
            "written": self.written,
            "backpressure": self.backpressure,
            "disconnected": self.disconnected,
            "tool_shortfall": self.tool_shortfall,
            "answered": self.answered,
            "mean_offered_rps": round(self.written / duration, 3) if duration > 0 else 0.0,
            "mean_answered_rps": round(self.answered / duration, 3) if duration > 0 else 0.0,
            "connects": self.connects,
            "connect_failures": dict(self.connect_failures),
            "closed_by_target": self.closed_by_target,
            "peak_open": self.peak_open,
            "held_at_end": self.held,
            "tool_lag_max_ms": round(self.lag_max * 1000, 3),
            "bytes_written": self.bytes_written,
        }


class ReplyJudge:
    """Classifies flood replies with the protocol module, cached: a flood repeats itself."""

    def __init__(self, protocol: Protocol, flood: FloodFrames, stats: LoadStats) -> None:
        self.protocol = protocol
        self.default = flood.frames[0]
        self.problems = dict(zip(flood.frames, flood.problems))
        self.stats = stats
        self._cache: dict[tuple[bytes, bytes], str] = {}

    def kind(self, request: bytes | None, reply: bytes) -> str:
        req = self.default if request is None else request
        key = (req, reply)
        kind = self._cache.get(key)
        if kind is None:
            kind = self.protocol.classify(req, reply).kind.value
            if kind == "normal" and self.problems.get(req):
                kind = "spec-violation"
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = kind
        return kind

    def count(self, request: bytes | None, reply: bytes, kind: str | None = None) -> None:
        kind = kind or self.kind(request, reply)
        self.stats.replies[kind] += 1
        self.stats.answered += 1


class FloodWire(asyncio.Protocol):
    """One flood connection: writes batches of requests, frames and counts what comes back."""

    def __init__(self, session: Session, flood: FloodFrames, judge: ReplyJudge | None, stats: LoadStats) -> None:
        self.session = session
        self.frames = flood.frames
        self.judge = judge
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.lost: str | None = None
        self.closing = False
        self.cursor = 0
        self.waiter: asyncio.Future[bytes | None] | None = None
        # Pairing replies with requests only matters when the flood has more than one request.
        self.pending: deque[bytes] | None = deque(maxlen=PENDING_LIMIT) if len(flood.frames) > 1 else None
        self._plain = type(session).prepare is Session.prepare

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.stats
        stats.connects += 1
        stats.open += 1
        if stats.open > stats.peak_open:
            stats.peak_open = stats.open

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.feed(data)
        out = session.take_output()
        if out and self.transport is not None:
            self.transport.write(out)
        while True:
            reply = session.next_reply()
            if reply is None:
                return
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(reply)
                continue
            if self.judge is not None:
                pending = self.pending
                self.judge.count(pending.popleft() if pending else None, reply)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def eof_received(self) -> bool:
        self._lose("closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.stats.open -= 1
        self._lose("reset" if isinstance(exc, (ConnectionResetError, BrokenPipeError)) else "closed")
        self.transport = None

    def _lose(self, how: str) -> None:
        if self.lost is None:
            self.lost = how
            if not self.closing:
                self.stats.closed_by_target += 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- sending ------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None

    def send(self, count: int) -> None:
        """Write `count` requests in one batch (cycling through the flood's frames)."""
        assert self.transport is not None
        frames = self.frames
        if len(frames) == 1 and self._plain:
            data = frames[0] * count
        else:
            prepare = self.session.prepare
            parts = []
            n = len(frames)
            pending = self.pending
            for _ in range(count):
                frame = frames[self.cursor % n]
                self.cursor += 1
                parts.append(prepare(frame))
                if pending is not None:
                    pending.append(frame)
            data = b"".join(parts)
        self.transport.write(data)
        self.stats.bytes_written += len(data)

    def send_raw(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.stats.bytes_written += len(data)

    async def handshake(self, frames: list[bytes], timeout: float) -> bool:
        """The session's opening exchange (STARTDT and the like), one reply per frame."""
        loop = asyncio.get_running_loop()
        for frame in frames:
            if not self.usable:
                return False
            self.waiter = loop.create_future()
            self.send_raw(self.session.prepare(frame))
            try:
                reply = await asyncio.wait_for(self.waiter, timeout)
            except (TimeoutError, asyncio.TimeoutError):
                reply = None
            finally:
                self.waiter = None
            if reply is None:
                return False
        return True

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


RECENT_REQUESTS = 16  # a datagram flood's reply is judged against at most this many recent requests


class DatagramFloodWire(FloodWire, asyncio.DatagramProtocol):
    """One flood socket of a datagram protocol: one request per datagram, every datagram counted."""

    def __init__(self, session: Session, flood: FloodFrames, judge: ReplyJudge | None, stats: LoadStats) -> None:
        super().__init__(session, flood, judge, stats)
        self.pending = deque(maxlen=RECENT_REQUESTS) if len(flood.frames) > 1 else None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.waiter is not None:  # the opening exchange, matched by the session
            FloodWire.data_received(self, data)
            return
        judge = self.judge
        if judge is None:
            return
        if not self.pending:
            judge.count(None, data)
            return
        first = None
        for request in reversed(self.pending):  # newest first: the reply most likely answers it
            kind = judge.kind(request, data)
            first = first or kind
            if kind != "malformed":
                judge.count(request, data, kind)
                return
        judge.count(None, data, first)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: nothing listens at the target any more (see otfuzz.transport.udp).
        if self.lost is None:
            self.lost = "refused"
            self.stats.connect_failures["refused"] += 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def send(self, count: int) -> None:
        assert self.transport is not None
        frames = self.frames
        prepare = self.session.prepare
        pending = self.pending
        n = len(frames)
        written = 0
        for _ in range(count):
            frame = frames[self.cursor % n]
            self.cursor += 1
            data = frame if self._plain else prepare(frame)
            if pending is not None:
                pending.append(frame)
            self.transport.sendto(data)  # type: ignore[attr-defined]
            written += len(data)
        self.stats.bytes_written += written

    def send_raw(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data)  # type: ignore[attr-defined]
            self.stats.bytes_written += len(data)


class LoadGenerator:
    """Runs steps against one target address; `stop` ends any step at once."""

    def __init__(self, protocol: Protocol, host: str, port: int, connect_timeout: float, connect_rate_ceiling: float,
                 stop: asyncio.Event) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.connect_rate_ceiling = connect_rate_ceiling
        self.stop = stop
        self.datagrams = not connection_oriented(protocol)

    async def run(self, step: Step, flood: FloodFrames, stats: LoadStats) -> None:
        """Drive one step to its end (its duration, its count, or `stop`)."""
        if self.datagrams and step.kind in CONNECTION_KINDS:
            raise ValueError(f"a {step.kind} step needs connections; {self.protocol.name} has none")
        if step.kind in ("rate", "ramp"):
            await self._rate(step, flood, stats, step.connections, handshake=True)
        elif step.kind == "hold":
            held = Step(step.group, "rate", step.duration, step.connections / HOLD_INTERVAL,
                        step.connections / HOLD_INTERVAL, step.connections)
            await self._rate(held, flood, stats, step.connections, handshake=True)
        elif step.kind in ("idle", "half-open"):
            await self._idle(step, flood, stats, partial=step.kind == "half-open")
        elif step.kind == "churn":
            await self._churn(step, stats)
        else:  # pragma: no cover - plans only contain the kinds above
            raise ValueError(f"unknown step kind {step.kind}")

    # -- connections --------------------------------------------------------------------------

    async def _connect(self, flood: FloodFrames, stats: LoadStats, judge: ReplyJudge | None, handshake: bool) -> FloodWire | None:
        loop = asyncio.get_running_loop()
        session = self.protocol.session()
        if self.datagrams:
            wire: FloodWire = DatagramFloodWire(session, flood, judge, stats)
            opened = loop.create_datagram_endpoint(lambda: wire, remote_addr=(self.host, self.port))
        else:
            wire = FloodWire(session, flood, judge, stats)
            opened = loop.create_connection(lambda: wire, self.host, self.port)
        try:
            transport, _ = await asyncio.wait_for(opened, self.connect_timeout)
        except ConnectionRefusedError:
            stats.connect_failures["refused"] += 1
            return None
        except (TimeoutError, asyncio.TimeoutError):
            stats.connect_failures["timeout"] += 1
            return None
        except OSError as exc:
            stats.connect_failures[type(exc).__name__] += 1
            return None
        sock = transport.get_extra_info("socket")
        if sock is not None and not self.datagrams:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if handshake:
            opening = session.opening()
            if opening and not await wire.handshake(opening, self.connect_timeout):
                stats.connect_failures["handshake"] += 1
                wire.close()
                return None
        return wire

    async def _open_many(self, count: int, flood: FloodFrames, stats: LoadStats, judge: ReplyJudge | None,
                         handshake: bool) -> list[FloodWire | None]:
        # At most OPEN_CONCURRENCY connects in flight: thousands at once only make each one time out.
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one() -> FloodWire | None:
            async with gate:
                if self.stop.is_set():
                    return None
                return await self._connect(flood, stats, judge, handshake)

        tasks = [asyncio.ensure_future(one()) for _ in range(count)]
        try:
            return list(await asyncio.gather(*tasks))
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is None and task.result() is not None:
                    task.result().close()
            raise

    # -- rate-driven floods ---------------------------------------------------------------------

    async def _rate(self, step: Step, flood: FloodFrames, stats: LoadStats, slots: int, handshake: bool) -> None:
        loop = asyncio.get_running_loop()
        judge = ReplyJudge(self.protocol, flood, stats)
        wires: list[FloodWire | None] = await self._open_many(slots, flood, stats, judge, handshake)
        reconnecting: dict[int, asyncio.Task[FloodWire | None]] = {}
        last_attempt = [0.0] * slots
        retry = max(RECONNECT_MIN_INTERVAL, slots / self.connect_rate_ceiling)
        t0 = loop.time()
        accounted = 0
        turn = 0
        last = t0
        limit = step.total
        try:
            for _ in range(int(step.duration / TICK) * 4 + 1000):  # count bound besides the time bound
                if self.stop.is_set():
                    break
                now = loop.time()
                stats.lag_max = max(stats.lag_max, now - last - TICK)
                last = now
                elapsed = now - t0
                if elapsed >= step.duration or accounted >= limit:
                    break
                for index, task in list(reconnecting.items()):
                    if task.done():
                        del reconnecting[index]
                        wires[index] = None if task.cancelled() or task.exception() else task.result()
                for index, wire in enumerate(wires):
                    if (wire is None or not wire.usable) and index not in reconnecting and now - last_attempt[index] >= retry:
                        last_attempt[index] = now
                        reconnecting[index] = asyncio.ensure_future(self._connect(flood, stats, judge, handshake))
                due = min(limit, int(step.due(elapsed)))
                n = due - accounted
                if n > 0:
                    accounted = due
                    stats.intended += n
                    cap = int(step.rate_at(elapsed) * CATCH_UP) + 1
                    if n > cap:
                        stats.tool_shortfall += n - cap
                        n = cap
                    turn = self._distribute(wires, n, turn, stats)
                await asyncio.sleep(TICK)
        finally:
            stats.held = sum(1 for w in wires if w is not None and w.usable)
            for task in reconnecting.values():
                task.cancel()
            for task in reconnecting.values():
                try:
                    wire = await task
                except (asyncio.CancelledError, Exception):
                    continue
                if wire is not None:
                    wire.close()
            for wire in wires:
                if wire is not None:
                    wire.close()
            # Give replies already on the wire a moment to be counted before the sockets go.
            await asyncio.sleep(0)

    @staticmethod
    def _distribute(wires: list[FloodWire | None], n: int, turn: int, stats: LoadStats) -> int:
        """Share `n` due requests over the connections, round robin; returns the next turn."""
        slots = len(wires)
        share, extra = divmod(n, slots)
        for offset in range(slots):
            index = (turn + offset) % slots
            k = share + (1 if offset < extra else 0)
            if k == 0:
                continue
            wire = wires[index]
            if wire is None or not wire.usable:
                stats.disconnected += k
            elif wire.paused:
                stats.backpressure += k
            else:
                wire.send(k)
                stats.written += k
        return (turn + extra) % slots

    # -- connection floods ----------------------------------------------------------------------

    async def _idle(self, step: Step, flood: FloodFrames, stats: LoadStats, partial: bool) -> None:
        wires = await self._open_many(step.connections, flood, stats, None, handshake=False)
        stats.intended += step.connections
        try:
            if partial:
                frame = flood.frames[0]
                piece = frame[: max(1, len(frame) // 2)]
                for wire in wires:
                    if wire is not None and wire.usable:
                        wire.send_raw(piece)
            stats.written += sum(1 for w in wires if w is not None)
            loop = asyncio.get_running_loop()
            end = loop.time() + step.duration
            for _ in range(int(step.duration / 0.05) + 2):
                if self.stop.is_set() or loop.time() >= end:
                    break
                await asyncio.sleep(min(0.05, max(0.0, end - loop.time())))
        finally:
            stats.held = sum(1 for w in wires if w is not None and w.usable)
            for wire in wires:
                if wire is not None:
                    wire.close()
            await asyncio.sleep(0)

    async def _churn(self, step: Step, stats: LoadStats) -> None:
        loop = asyncio.get_running_loop()
        inflight: set[asyncio.Task[None]] = set()
        bound = max(1, int(step.rate_start * self.connect_timeout) + 1)

        async def once() -> None:
            wire = FloodWire(self.protocol.session(), FloodFrames((b"\x00",), ""), None, stats)
            try:
                await asyncio.wait_for(loop.create_connection(lambda: wire, self.host, self.port), self.connect_timeout)
            except ConnectionRefusedError:
                stats.connect_failures["refused"] += 1
                return
            except (TimeoutError, asyncio.TimeoutError):
                stats.connect_failures["timeout"] += 1
                return
            except OSError as exc:
                stats.connect_failures[type(exc).__name__] += 1
                return
            wire.close()

        t0 = loop.time()
        accounted = 0
        limit = step.total
        try:
            for _ in range(int(step.duration / TICK) * 4 + 1000):
                if self.stop.is_set():
                    break
                elapsed = loop.time() - t0
                if elapsed >= step.duration or accounted >= limit:
                    break
                due = min(limit, int(step.due(elapsed)))
                n = due - accounted
                if n > 0:
                    accounted = due
                    stats.intended += n
                    for _ in range(n):
                        if len(inflight) >= bound:
                            stats.backpressure += 1  # the target is slow to accept: its backlog, not ours
                            continue
                        task = asyncio.ensure_future(once())
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                        stats.written += 1
                await asyncio.sleep(TICK)
        finally:
            if inflight:
                await asyncio.wait(list(inflight), timeout=self.connect_timeout + 0.5)
            for task in list(inflight):
                task.cancel()
