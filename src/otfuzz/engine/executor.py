"""Runs test cases over a connection and judges each reply with the protocol module.

One `CaseRunner` per worker: it keeps its connection across cases (reuse is most of the speed)
and, on a byte stream, drops it whenever the stream may be out of step (no reply, a malformed
reply that does not carry its request's id with nothing after it, close), so a late answer to
one case is never taken for the answer to the next. A valid
request left unanswered on a byte stream is not simply dropped: its connection is parked,
carrying nothing else, until its grace window ends, so that a late answer is still read, timed
and attributed to its own case. A datagram connection whose session matches replies by invoke
id is kept whatever happened, or used for one case only when the protocol asked for a fresh
source port per case (`Connection.reuse`, see otfuzz.transport).

A faulty frame of a kind the target has always dropped (see otfuzz.engine.silence) is not
waited for: its connection is parked for the usual silence wait (a "quiet" park, up to
`max_quiet` at once) and the next case goes out on a fresh connection, so an answer that still
comes is read, judged and attributed to its own case (`LateReply.quiet`). Where a second
connection may stand beside the first (`spares`), the next fresh connection is opened, handshake
and all, while the current case runs. Where the session can tell their answers apart (DNP3,
by sequence number), a frame that may be dropped is followed at once by the protocol's sync
request (`runner.sync`): its answer proves the frame unanswered within a round trip. Where
requests carry ids (Modbus), `run_window` sends several cases at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from otfuzz.engine.cases import TestCase
from otfuzz.engine.rules import RuleMemo
from otfuzz.engine.silence import QUICK_WAIT, SilenceBook
from otfuzz.monitor.probe import probe_exchange
from otfuzz.protocols.base import Protocol, ReplyKind
from otfuzz.transport import REUSE_CASE, REUSE_STREAM, open_connection
from otfuzz.transport.target import is_loopback
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
    framed: bool = True  # the frame is exactly one frame by the protocol's own framing
    close_allowed: bool = False  # the protocol lets the target end the connection after this request
    expected_silence: bool = False  # unanswered, like every frame breaking one of its rules so far (SilenceBook)
    synced: bool = False  # unanswered, while the request sent right behind it was answered: the target serves

    @property
    def request_valid(self) -> bool:
        """A valid request, alone in its frame, that a healthy target must answer on an open
        connection: a close or reset after anything else is no anomaly."""
        return not self.request_problems and self.framed and not self.close_allowed

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


PIPELINE_DEPTH = 4
"""Cases in flight at once on one connection where the target handles it (see `detect_pipelining`)."""


async def detect_pipelining(protocol: Protocol, host: str, port: int, timeout: float,
                            depth: int = PIPELINE_DEPTH) -> tuple[bool, str]:
    """(does the target answer `depth` requests in flight at once, each by its id?, why not).
    Asked once at the start with copies of the health probe: a target that answers only some
    of them, or out of step, is fuzzed one request at a time."""
    probe = protocol.probe().frame
    if protocol.request_id(probe) is None:
        return False, f"{protocol.name} requests carry no id a reply echoes"
    base = protocol.request_id(probe) or 0
    frames = [protocol.with_request_id(probe, (base + 0x5A5A + i) & 0xFFFF) for i in range(depth)]
    try:
        conn = await open_connection(protocol, host, port, timeout)
    except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
        return False, f"could not connect to test it: {exc}"
    try:
        got, _ = await conn.exchange_many(frames, timeout)
    finally:
        conn.close()
    by_id = {protocol.request_id(frame): frame for frame in frames}
    answered = {protocol.reply_id(reply): reply for reply, _ in got}
    if len(got) != depth or answered.keys() != by_id.keys():
        return False, f"answered {len(got)} of {depth} requests sent at once with the right ids"
    if not all(protocol.classify(by_id[key], reply).kind is ReplyKind.NORMAL for key, reply in answered.items()):
        return False, f"{depth} requests sent at once were not all answered normally"
    return True, f"{depth} requests sent at once were each answered, matched by id"


QUIET_CEILING = 16
"""Quiet parks at once (per campaign) where the target served that many connections and more
at the start (see `detect_connection_room`); against pymodbus the four of `MAX_QUIET` were all
taken for 210 of 353 full silence waits in 10 s."""
ROOM_BESIDE_PARKS = 3
"""Connections a runner holds beside its quiet parks: the case's, a spare, a parked valid request."""


async def detect_connection_room(protocol: Protocol, host: str, port: int, timeout: float,
                                 count: int = QUIET_CEILING + ROOM_BESIDE_PARKS) -> tuple[int, str]:
    """(how many connections open at once the target served, up to `count`; how it went).
    Opened one at a time, each asked the health probe's request while the others stay open, and
    the first asked again at the end (a target may close the oldest to make room); stops at the
    first that is not served. Asked once at the start: a target that serves fewer gets fewer
    quiet parks, never more connections than it showed it takes."""
    probe = protocol.probe().frame
    conns: list[Connection] = []

    async def served(conn: Connection) -> str | None:
        reason, _ = await probe_exchange(protocol, probe, conn, None, timeout)
        return None if reason == "ok" else reason

    try:
        async with asyncio.timeout(max(2.0, 4 * timeout)):  # (each step is bounded too; this bounds them all)
            for n in range(1, count + 1):
                try:
                    conn = await open_connection(protocol, host, port, timeout)
                except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
                    return n - 1, f"connection {n} of {count} could not be opened ({str(exc) or type(exc).__name__})"
                conns.append(conn)
                problem = await served(conn)
                if problem is not None:
                    return n - 1, f"connection {n} of {count} was not served ({problem})"
            problem = await served(conns[0])
            if problem is not None:
                return count - 1, f"the first of {count} connections open at once was not served again ({problem})"
            return count, f"{count} connections open at once were each served"
    except TimeoutError:
        return max(0, len(conns) - 1), f"the test of {count} connections ran out of time at connection {len(conns)}"
    finally:
        for conn in conns:
            conn.close()


@dataclass
class Parked:
    """A connection whose valid request went unanswered within the case timeout."""

    conn: Connection
    case: TestCase | None
    frame: bytes
    sent_at: float  # perf_counter when the frame was written
    until: float  # perf_counter when the grace window ends
    index: int = 0  # of the frame within its case (a sequence step may be the one answered late)
    quiet: tuple[str, ...] = ()  # a learned-silent frame's fault kinds (SilenceBook), parked at once


@dataclass(frozen=True)
class LateReply:
    """An answer that came after the case timeout, within the grace window."""

    case: TestCase | None
    frame: bytes
    reply: bytes
    latency: float
    kind: ReplyKind
    detail: str
    sent_at: float = 0.0  # perf_counter when its request was written
    index: int = 0  # of the frame within its case
    quiet: bool = False  # an answer to a frame of a kind the target had always dropped


class CaseRunner:
    MAX_PARKED = 1  # an open connection each: fragile devices have few connection slots
    MAX_QUIET = 4  # quiet parks at once (only with a SilenceBook: never for fragile targets)

    def __init__(self, protocol: Protocol, host: str, port: int, timeout: float, connect_timeout: float = 2.0,
                 history_limit: int = 256, silence_timeout: float | None = None, grace: float = 0.0,
                 silence: SilenceBook | None = None) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.timeout = timeout
        # A request the specification says must be rejected is usually dropped in silence by a
        # conforming target: waiting the full timeout for it would make the target's silence,
        # not its speed, set the pace. Valid requests always get the full timeout.
        self.silence_timeout = timeout if silence_timeout is None else min(silence_timeout, timeout)
        self.connect_timeout = connect_timeout
        self.loopback = is_loopback(host)
        self.conn: Connection | None = None
        # Cases sent on the current connection, oldest first: the state a reply may depend on.
        self.history: deque[TestCase] = deque(maxlen=history_limit)
        # Seconds a valid request's late answer is still awaited (0: drop it at the timeout).
        self.grace = grace
        self.parked: list[Parked] = []
        # Kinds of faulty frames the target always dropped (None: always wait the silence timeout).
        self.silence = silence
        self.quiet: list[Parked] = []
        self.max_quiet = self.MAX_QUIET  # (the campaign sets it from detect_connection_room)
        self._late: list[LateReply] = []
        self._case: TestCase | None = None
        # A connection opened ahead, handshake done, for the next case that needs a fresh one
        # (set by the campaign: never for fragile or single-association targets).
        self.spares = False
        self._spare: asyncio.Task[Connection] | None = None
        # The protocol's sync request, sent right behind a frame that may be dropped (set by the
        # campaign: never for fragile targets).
        self.sync: bytes | None = None
        # What this runner handed to the transport: case frames (a case cut out of a pipelined
        # window and run alone counts twice) and sync requests. The search summary reports them.
        self.frames_sent = 0
        self.syncs_sent = 0
        # The rules each frame breaks (the campaign shares its memo: it checked the frame first).
        self.rules: Callable[[bytes], tuple[str, ...]] = RuleMemo(protocol)

    async def connect(self, opening: bool = True) -> Connection:
        if not opening:  # a case about the state before the handshake gets a connection of its own
            self.drop_current()
            self.history.clear()
            self.conn = await open_connection(self.protocol, self.host, self.port, self.connect_timeout, opening=False)
        elif self.conn is None or not self.conn.alive:
            self.drop_current()
            self.history.clear()
            conn = await self._take_spare() if self._spare is not None else None
            if conn is None:
                conn = await open_connection(self.protocol, self.host, self.port, self.connect_timeout)
            self.conn = conn
            if self.spares:
                self._spare = asyncio.ensure_future(open_connection(self.protocol, self.host, self.port, self.connect_timeout))
                self._spare.add_done_callback(_retrieved)
        return self.conn

    async def _take_spare(self) -> Connection | None:
        """The spare connection if it is ready and still open (None: open one now). One still on its
        way is awaited, and its failure is the connect's own; one that failed earlier is stale:
        the target may have come back since."""
        spare, self._spare = self._spare, None
        assert spare is not None
        if not spare.done():
            return await spare
        if spare.cancelled() or spare.exception() is not None:
            return None
        conn = spare.result()
        if conn.alive:
            return conn
        conn.close()
        return None

    def drop(self) -> None:
        """Close the connection, the spare and every parked one; answers that had already arrived
        on a parked connection are kept for `late_replies` (replay decides what they mean)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        spare, self._spare = self._spare, None
        if spare is not None:
            if spare.done() and not spare.cancelled() and spare.exception() is None:
                spare.result().close()
            else:
                spare.cancel()  # (Connection.open closes what it had opened)
        self._harvest(close_all=True)

    def late_replies(self) -> list[LateReply]:
        """Late answers that arrived on parked connections; expired ones are closed."""
        self._harvest(close_all=False)
        found, self._late = self._late, []
        return found

    async def await_late(self, case_id: int, until: float) -> LateReply | None:
        """Wait (up to perf_counter `until`) for the late answer to one parked case."""
        while True:
            self._harvest(close_all=False)
            for late in self._late:
                if late.case is not None and late.case.case_id == case_id:
                    self._late.remove(late)
                    return late
            if (not any(p.case is not None and p.case.case_id == case_id for p in (*self.parked, *self.quiet))
                    or time.perf_counter() >= until):
                return None
            await asyncio.sleep(0.005)

    def parked_until(self, case_id: int) -> float | None:
        """When the grace window of a valid request's parked connection ends (quiet parks excluded)."""
        return next((p.until for p in self.parked if p.case is not None and p.case.case_id == case_id), None)

    @property
    def has_late(self) -> bool:
        return bool(self.parked or self.quiet or self._late)

    def _harvest(self, close_all: bool) -> None:
        if self.parked:
            self.parked = self._harvest_list(self.parked, close_all)
        if self.quiet:
            self.quiet = self._harvest_list(self.quiet, close_all)

    def _harvest_list(self, parks: list[Parked], close_all: bool) -> list[Parked]:
        now = time.perf_counter()
        kept: list[Parked] = []
        for parked in parks:
            late = parked.conn.late_reply()
            if late is not None:
                reply, arrived = late
                verdict = self.protocol.classify(parked.frame, reply)
                self._late.append(LateReply(parked.case, parked.frame, reply, arrived - parked.sent_at, verdict.kind,
                                            verdict.detail, parked.sent_at, parked.index, bool(parked.quiet)))
                if parked.quiet and self.silence is not None:
                    self.silence.note(parked.quiet, True, len(parked.frame))  # not cut short for this kind again, at this length
                parked.conn.close()
            elif close_all or now >= parked.until or not parked.conn.alive:
                parked.conn.close()
            else:
                kept.append(parked)
        return kept

    async def run(self, case: TestCase, meanwhile: Callable[[], object] | None = None) -> CaseOutcome:
        """Run a case; `meanwhile` runs once while the target works on the first frame."""
        self._case = case
        try:
            outcome = await self.run_frames(case.frames, meanwhile)
        finally:
            self._case = None
        self.history.append(case)
        if self.conn is not None and self.conn.reuse == REUSE_CASE:
            self.drop_current()  # the next case comes from a new source port
        return outcome

    async def run_frames(self, frames: tuple[bytes, ...] | list[bytes], meanwhile: Callable[[], object] | None = None) -> CaseOutcome:
        protocol = self.protocol
        if not self.loopback:
            for frame in frames:  # the generator never makes these for such a target: the last guard
                why = protocol.loopback_only(frame)
                if why:
                    return CaseOutcome(ReplyKind.NO_REPLY, f"not sent: {why}; only a loopback target may get it", None, 0.0, 0)
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
                self.drop_current()  # never reuse a connection that skipped the handshake

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
        except OSError as exc:  # not a refusal: our side (ports, descriptors) or the network
            return CaseOutcome(ReplyKind.NO_REPLY, f"connect failed: {exc.strerror or exc}", None, 0.0, index)

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
                self.drop_current()
                before = frames[index - 1]
                # (or after anything the target may refuse that went over it before: see close_excused)
                return CaseOutcome(ReplyKind.CLOSED, "connection ended", None, 0.0, index - 1,
                                   (*self.rules(before), *protocol.may_reject(before)),
                                   close_allowed=conn.close_excused or not protocol.keeps_connection(before, b""))
            wait = self.timeout
            excused = conn.close_excused
            checked = self.rules(frame)  # (pure: remembered per frame)
            broken = bool(checked)
            if (broken or protocol.frame_length(frame) not in (None, len(frame)) or not protocol.keeps_connection(frame, b"")
                    or (not conn.close_excused and protocol.may_reject(frame))):
                conn.close_excused = True
            # Silence is only recorded as a violation after the full timeout: a request the
            # specification says must be answered even when wrong never gets the short wait.
            kinds: tuple[str, ...] = ()
            quick = expected = False
            if broken and self.silence_timeout < wait and not protocol.silence_violation(frame):
                wait = self.silence_timeout
                if self.silence is not None and protocol.expects_reply(frame) and conn.reuse == REUSE_STREAM:
                    kinds = self.silence.kinds(frame)
                    expected = self.silence.learned(kinds, len(frame))
                    # no quiet park where a second connection would displace the first
                    quick = expected and self.conn is conn and not protocol.single_association and self._quiet_room()
            sent = time.perf_counter()
            self.frames_sent += 1
            in_step: bool | None = None
            if (self.sync is not None and not quick and (wait < self.timeout or self.grace == 0) and protocol.expects_reply(frame)
                    and conn.reuse == REUSE_STREAM and protocol.frame_length(frame) in (None, len(frame))):
                # The sync request right behind it: its answer ends the wait for a dropped frame;
                # for a valid request too where no connection may be parked to catch a late answer.
                exchange, in_step = await conn.exchange_synced(frame, self.sync, wait, meanwhile)
                self.syncs_sent += in_step is not None
            else:
                exchange = await conn.exchange(frame, min(wait, QUICK_WAIT) if quick else wait, protocol.expects_reply(frame),
                                               meanwhile)
            meanwhile = None
            if quick and exchange.outcome == "timeout":
                if exchange.leftover:  # part of an answer came: wait for the rest as usual
                    exchange = await conn.wait_more(max(0.0, sent + wait - time.perf_counter()), sent)
                else:
                    # Dropped as always, so far: the connection waits out the usual silence
                    # timeout parked, carrying nothing else, and the next case gets a fresh one.
                    self.conn = None
                    self.quiet.append(Parked(conn, self._case, frame, sent, sent + wait, index, kinds))
                    problems = (*checked, *protocol.may_reject(frame))
                    return CaseOutcome(ReplyKind.NO_REPLY, "timeout", None, exchange.latency, index, problems,
                                       protocol.frame_length(frame) in (None, len(frame)), expected_silence=True)
            if kinds:
                if exchange.outcome == "reply":
                    self.silence.note(kinds, True, len(frame))  # type: ignore[union-attr]
                elif exchange.outcome == "timeout" and not exchange.leftover:
                    self.silence.note(kinds, False, len(frame))  # type: ignore[union-attr]
            if in_step and exchange.outcome == "timeout" and not exchange.leftover:
                # Dropped: the request sent right behind it was answered first. The connection is
                # replaced all the same, as after any silence: kept, it would carry on a state (an
                # outstation's learned master) that a replay of the case, without the sync, never meets.
                self._out_of_step()
                problems = (*checked, *protocol.may_reject(frame))
                return CaseOutcome(ReplyKind.NO_REPLY, "no answer (the request sent right behind it was answered)", None,
                                   exchange.latency, index, problems, True, synced=True)
            if in_step is False and exchange.outcome == "reply":
                self._out_of_step()  # answered, but the sync request was not: the stream is not in step
            if exchange.outcome == "reply":
                assert exchange.reply is not None
                verdict = protocol.classify(frame, exchange.reply)
                kind, detail = verdict.kind, verdict.detail
                problems: tuple[str, ...] = ()
                if kind is ReplyKind.NORMAL and index == last:
                    problems = tuple(checked)
                    if problems:
                        kind, detail = ReplyKind.SPEC_VIOLATION, "answered normally: " + "; ".join(problems)
                if kind is ReplyKind.MALFORMED and not self._answered_in_step(conn, frame, exchange.reply):
                    self._out_of_step()
                elif not protocol.keeps_connection(frame, exchange.reply):
                    self.drop_current()  # the target may close it after this answer: not its fault then
                else:
                    framed_at = protocol.frame_length(frame)
                    if framed_at is not None and framed_at != len(frame):
                        self._out_of_step()  # more (or fewer) bytes than one frame
                if index < last and kind in (ReplyKind.NORMAL, ReplyKind.EXCEPTION) and self.conn is conn:
                    continue  # (a dropped connection ends the case: the rest would go nowhere)
                return CaseOutcome(kind, detail, exchange.reply, exchange.latency, index, problems)
            if exchange.outcome == "timeout" and not protocol.expects_reply(frame):
                framed = protocol.frame_length(frame)
                if framed is not None and framed != len(frame):
                    self._out_of_step()  # the rest would reach the target as the start of the next request
                elif index < last:
                    continue
                return CaseOutcome(ReplyKind.NO_REPLY, "no reply expected", None, 0.0, index)
            if exchange.outcome == "refused":
                # Nothing listens at the target (ICMP port unreachable on a datagram transport):
                # like a refused connect, this says nothing about the request itself.
                self.drop_current()
                return CaseOutcome(ReplyKind.RESET, "connection refused", None, exchange.latency, index)
            framed = protocol.frame_length(frame) in (None, len(frame))
            # a target may also refuse what the specification only advises against (may_reject)
            problems = (*checked, *protocol.may_reject(frame))
            if exchange.outcome == "timeout" and not exchange.leftover:
                required = protocol.silence_violation(frame)
                if required:
                    self._out_of_step()
                    return CaseOutcome(ReplyKind.SPEC_VIOLATION, f"no answer: {required}", None, exchange.latency, index,
                                       problems, framed)
                if (self.grace > 0 and framed and not problems and self.conn is conn and conn.reuse == REUSE_STREAM
                        and len(self.parked) < self.MAX_PARKED):
                    # A valid request unanswered: park its connection (it carries nothing else) so
                    # a late answer is still read and timed; the next case gets a fresh connection.
                    # With no parking space left, the oldest keeps its chance and this one is dropped.
                    self.conn = None
                    sent = time.perf_counter() - exchange.latency
                    self.parked.append(Parked(conn, self._case, frame, sent, sent + self.grace, index))
                    return CaseOutcome(ReplyKind.NO_REPLY, "timeout", None, exchange.latency, index, problems, framed)
            self._out_of_step()
            if exchange.outcome == "timeout":
                if exchange.leftover:
                    return CaseOutcome(ReplyKind.MALFORMED, f"incomplete reply of {len(exchange.leftover)} bytes",
                                       exchange.leftover, exchange.latency, index, problems, framed)
                return CaseOutcome(ReplyKind.NO_REPLY, "timeout", None, exchange.latency, index, problems, framed,
                                   expected_silence=expected)
            kind = ReplyKind.RESET if exchange.outcome == "reset" else ReplyKind.CLOSED
            # the target may end it after this request, or after garbage it got earlier on it
            allowed = excused or not protocol.keeps_connection(frame, exchange.leftover or b"")
            return CaseOutcome(kind, exchange.outcome, exchange.leftover or None, exchange.latency, index, problems, framed,
                               allowed)
        raise AssertionError("a case has at least one frame")

    def can_pipeline(self, frame: bytes, with_frames: list[bytes]) -> bool:
        """True when `frame` may go out in one pipelined window with `with_frames`: a valid request
        with an id none of them has, answered on the connection it came on. A faulty frame
        always goes alone: it is the one that may stall or kill the target, and in a window
        neither the blame nor the resend of what the window left unanswered would be clean (a
        truncated write that stalls faulty_modbus.py, sent twice, stalled it twice)."""
        protocol = self.protocol
        request_id = protocol.request_id(frame)
        return not (request_id is None or any(protocol.request_id(other) == request_id for other in with_frames)
                    or not protocol.expects_reply(frame) or not protocol.needs_opening(frame)
                    or not protocol.keeps_connection(frame, b"") or (not self.loopback and protocol.loopback_only(frame))
                    or self.rules(frame))

    async def run_window(self, cases: list[TestCase], meanwhile: Callable[[], object] | None = None) -> list[CaseOutcome]:
        """Send single-frame cases, each one `can_pipeline` allows, back to back on one connection
        and match the replies by request id (they may come in any order). Speculative: the
        outcomes returned are those of the longest run of cases, from the first, that each got an
        answer within the silence timeout; the caller runs the rest alone, through `run`, where
        silence, late answers and closes are judged as always. After a window that did not end
        cleanly the connection is replaced.

        A case's latency is timed from when the target could start on it: the later of the
        window's write and the previous case's answer."""
        protocol = self.protocol
        conn = await self._open(True, 0)
        if isinstance(conn, CaseOutcome):
            return []  # (the case run alone meets the same failure and records it)
        frames = [case.frames[0] for case in cases]
        self.frames_sent += len(frames)
        got, sent = await conn.exchange_many(frames, self.silence_timeout, meanwhile)
        wanted = {protocol.request_id(frame): i for i, frame in enumerate(frames)}
        answers: dict[int, tuple[bytes, float]] = {}
        clean = True
        for reply, arrived in got:
            index = wanted.get(protocol.reply_id(reply))  # type: ignore[arg-type]
            if index is None or index in answers:
                clean = False  # an answer to nothing in flight: the stream is out of step
            else:
                answers[index] = (reply, arrived)
        outcomes: list[CaseOutcome] = []
        previous = sent
        for index, (case, frame) in enumerate(zip(cases, frames)):
            if index not in answers:
                break
            reply, arrived = answers[index]
            verdict = protocol.classify(frame, reply)  # (a valid request: no rule to find broken)
            kind = verdict.kind
            outcomes.append(CaseOutcome(kind, verdict.detail, reply, max(0.0, arrived - max(sent, previous)), 0))
            previous = arrived  # (the caller puts each case in `history` as it judges it)
            if kind is ReplyKind.MALFORMED or not protocol.keeps_connection(frame, reply):
                clean = False  # what follows on this stream may not be what it seems
                break
        if not clean or len(outcomes) < len(cases) or conn.lost is not None:
            self._out_of_step()
        return outcomes

    def _quiet_room(self) -> bool:
        """Room for one more quiet park (expired ones are closed first)."""
        if len(self.quiet) >= self.max_quiet:
            self._harvest(close_all=False)
        return len(self.quiet) < self.max_quiet

    def _answered_in_step(self, conn: Connection, frame: bytes, reply: bytes) -> bool:
        """A malformed answer that carries the id of the one request in flight, with nothing
        received after it: the target framed exactly that request and answered it, and only what
        the answer says is wrong, so the stream is in step and the connection is kept. (Against
        pymodbus, which answers some reads of file records with the wrong record length, a fresh
        connection per malformed answer was one connect in four.)"""
        request_id = self.protocol.request_id(frame)
        return (request_id is not None and self.protocol.reply_id(reply) == request_id
                and conn.reuse == REUSE_STREAM and conn.drained)

    def _out_of_step(self) -> None:
        """The stream may carry a late or stray answer: a byte stream is replaced (a datagram
        connection whose session matches replies by invoke id cannot fall out of step)."""
        if self.conn is not None and self.conn.reuse == REUSE_STREAM:
            self.drop_current()

    def drop_current(self) -> None:
        """Close the case connection only; parked connections wait out their grace window."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _retrieved(task: asyncio.Task[Connection]) -> None:
    """A spare that failed or was never used: its error is no one's (the next connect meets its own)."""
    if not task.cancelled():
        task.exception()
