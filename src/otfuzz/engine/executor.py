"""Runs test cases over a connection and judges each reply with the protocol module.

One `CaseRunner` per worker: it keeps its connection across cases (reuse is most of the speed)
and drops it whenever the stream may be out of step (no reply, malformed reply, close), so a
late answer to one case is never taken for the answer to the next.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from otfuzz.engine.cases import TestCase
from otfuzz.protocols.base import Protocol, ReplyKind
from otfuzz.transport import open_connection
from otfuzz.transport.tcp import Connection


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to the last frame of a case (prefix failures end the case early)."""

    kind: ReplyKind
    detail: str
    reply: bytes | None
    latency: float
    frame_index: int
    request_problems: tuple[str, ...] = ()

    @property
    def request_valid(self) -> bool:
        return not self.request_problems

    def as_record(self) -> dict[str, object]:
        return {
            "reply_kind": self.kind.value,
            "reply_detail": self.detail,
            "reply_hex": self.reply.hex() if self.reply is not None else None,
            "latency_ms": round(self.latency * 1000, 3),
            "frame_index": self.frame_index,
            "request_problems": list(self.request_problems),
        }


async def read_identity(protocol: Protocol, host: str, port: int, timeout: float) -> dict[str, str]:
    """Ask the device who it is (vendor, product, revision) where the protocol allows it."""
    identity: dict[str, str] = {}
    for request in protocol.identify():
        runner = CaseRunner(protocol, host, port, timeout, timeout)
        try:
            outcome = await runner.run_frames((request,))
        finally:
            runner.drop()
        if outcome.reply is not None:
            identity.update(protocol.parse_identity(outcome.reply))
    return identity


class CaseRunner:
    def __init__(self, protocol: Protocol, host: str, port: int, timeout: float, connect_timeout: float = 2.0,
                 history_limit: int = 256, silence_timeout: float | None = None) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.timeout = timeout
        # A request the specification says must be rejected is usually dropped in silence by a
        # conforming target: waiting the full timeout for it would make the target's silence,
        # not its speed, set the pace. Valid requests always get the full timeout.
        self.silence_timeout = timeout if silence_timeout is None else min(silence_timeout, timeout)
        self.connect_timeout = connect_timeout
        self.conn: Connection | None = None
        # Cases sent on the current connection, oldest first: the state a reply may depend on.
        self.history: deque[TestCase] = deque(maxlen=history_limit)

    async def connect(self, opening: bool = True) -> Connection:
        if not opening:  # a case about the state before the handshake gets a connection of its own
            self.drop()
            self.history.clear()
            self.conn = await open_connection(self.protocol, self.host, self.port, self.connect_timeout, opening=False)
        elif self.conn is None or not self.conn.alive:
            self.drop()
            self.history.clear()
            self.conn = await open_connection(self.protocol, self.host, self.port, self.connect_timeout)
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def run(self, case: TestCase, meanwhile: Callable[[], object] | None = None) -> CaseOutcome:
        """Run a case; `meanwhile` runs once while the target works on the first frame."""
        outcome = await self.run_frames(case.frames, meanwhile)
        self.history.append(case)
        return outcome

    async def run_frames(self, frames: tuple[bytes, ...] | list[bytes], meanwhile: Callable[[], object] | None = None) -> CaseOutcome:
        protocol = self.protocol
        # A frame that tests the state before the handshake goes out on a fresh connection
        # without it, also when a sequence puts it after other frames.
        fresh = [not protocol.needs_opening(frame) for frame in frames]
        conn = await self._open(not fresh[0], 0)
        if isinstance(conn, CaseOutcome):
            return conn
        last = len(frames) - 1
        try:
            return await self._exchange_all(conn, frames, last, meanwhile, fresh)
        finally:
            if any(fresh):
                self.drop()  # never reuse a connection that skipped the handshake

    async def _open(self, opening: bool, index: int) -> Connection | CaseOutcome:
        """A connection for frame `index`, or the outcome that says why there is none."""
        try:
            return await self.connect(opening)
        except ConnectionRefusedError:
            return CaseOutcome(ReplyKind.RESET, "connection refused", None, 0.0, index)
        except (TimeoutError, asyncio.TimeoutError):
            return CaseOutcome(ReplyKind.NO_REPLY, "connect timed out", None, 0.0, index)
        except ConnectionError as exc:
            return CaseOutcome(ReplyKind.CLOSED, f"connection failed: {exc}", None, 0.0, index)
        except OSError as exc:
            return CaseOutcome(ReplyKind.RESET, f"connect failed: {exc.strerror or exc}", None, 0.0, index)

    async def _exchange_all(self, conn: Connection, frames: tuple[bytes, ...] | list[bytes], last: int,
                            meanwhile: Callable[[], object] | None, fresh: list[bool]) -> CaseOutcome:
        protocol = self.protocol
        for index, frame in enumerate(frames):
            if index and fresh[index]:
                opened = await self._open(False, index)
                if isinstance(opened, CaseOutcome):
                    return opened
                conn = opened
            elif index and not conn.alive:
                # the frame before ended the connection (it expected no answer): the case ends there
                self.drop()
                before = frames[index - 1]
                return CaseOutcome(ReplyKind.CLOSED, "connection ended", None, 0.0, index - 1,
                                   tuple(protocol.check_request(before) + protocol.may_reject(before)))
            wait = self.timeout
            if self.silence_timeout < wait and protocol.check_request(frame):
                wait = self.silence_timeout
            exchange = await conn.exchange(frame, wait, protocol.expects_reply(frame), meanwhile)
            meanwhile = None
            if exchange.outcome == "reply":
                assert exchange.reply is not None
                verdict = protocol.classify(frame, exchange.reply)
                kind, detail = verdict.kind, verdict.detail
                problems: tuple[str, ...] = ()
                if kind is ReplyKind.NORMAL and index == last:
                    problems = tuple(protocol.check_request(frame))
                    if problems:
                        kind, detail = ReplyKind.SPEC_VIOLATION, "answered normally: " + "; ".join(problems)
                if kind is ReplyKind.MALFORMED:
                    self.drop()
                else:
                    framed = protocol.frame_length(frame)
                    if framed is not None and framed != len(frame):
                        self.drop()  # more (or fewer) bytes than one frame: the stream is out of step
                if index < last and kind in (ReplyKind.NORMAL, ReplyKind.EXCEPTION):
                    continue
                return CaseOutcome(kind, detail, exchange.reply, exchange.latency, index, problems)
            if exchange.outcome == "timeout" and not protocol.expects_reply(frame):
                framed = protocol.frame_length(frame)
                if framed is not None and framed != len(frame):
                    self.drop()  # the rest would reach the target as the start of the next request
                elif index < last:
                    continue
                return CaseOutcome(ReplyKind.NO_REPLY, "no reply expected", None, 0.0, index)
            self.drop()
            if exchange.outcome == "timeout":
                if exchange.leftover:
                    return CaseOutcome(ReplyKind.MALFORMED, f"incomplete reply of {len(exchange.leftover)} bytes",
                                       exchange.leftover, exchange.latency, index, tuple(protocol.check_request(frame)))
                kind = ReplyKind.NO_REPLY
                required = protocol.silence_violation(frame)
                if required:
                    return CaseOutcome(ReplyKind.SPEC_VIOLATION, f"no answer: {required}", None, exchange.latency, index,
                                       tuple(protocol.check_request(frame)))
            else:
                kind = ReplyKind.RESET if exchange.outcome == "reset" else ReplyKind.CLOSED
            # a target may also refuse what the specification only advises against (may_reject)
            return CaseOutcome(kind, exchange.outcome, exchange.leftover or None, exchange.latency, index,
                               tuple(protocol.check_request(frame) + protocol.may_reject(frame)))
        raise AssertionError("a case has at least one frame")
