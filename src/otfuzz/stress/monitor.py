"""The essential-function monitor and the resource monitor of a stress run.

While load runs, a separate process keeps doing the essential function at its normal cadence,
like the master of a control loop: one valid request per cycle on a persistent connection, an
answer judged against the expected value, and a deadline. The protocol's health probe also
needs its observer's witness where the protocol names one (monitor.probe.probe_exchange). A cycle without a good answer in time
is a missed cycle. Running it in its own process means the flood's event loop cannot delay it:
what the monitor measures is the target, not otfuzz's own scheduling. Both processes use the
same system-wide monotonic clock, so cycles line up with the load timeline.

The resource monitor samples CPU, memory, open descriptors and threads of a local target process
(and its children) so leaks show as a trend (CR 7.2).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otfuzz.errors import OtfuzzError
from otfuzz.monitor.probe import probe_exchange
from otfuzz.protocols.base import Protocol, ReplyKind
from otfuzz.transport import open_connection
from otfuzz.transport.target import Target
from otfuzz.transport.tcp import Connection


@dataclass(frozen=True)
class EssentialFunction:
    """What the monitor does every cycle and how it judges the answer.

    mode: "probe" (the protocol's health probe and its own check), "normal-reply" (a user request
    whose answer must classify as normal) or "expected-bytes" (the answer must equal `expect`,
    where `mask` bytes of 0 are wildcards).
    """

    request: bytes
    mode: str
    description: str
    cadence: float
    deadline: float
    expect: bytes = b""
    mask: bytes = b""

    def judge(self, protocol: Protocol, reply: bytes) -> str:
        """'ok', or why the answer is not the expected one."""
        if self.mode == "probe":
            return "ok" if protocol.probe_ok(reply) else "bad-reply"
        if self.mode == "expected-bytes":
            if len(reply) != len(self.expect):
                return "bad-reply"
            for got, want, care in zip(reply, self.expect, self.mask):
                if care and got != want:
                    return "bad-reply"
            return "ok"
        verdict = protocol.classify(self.request, reply)
        if verdict.kind is ReplyKind.NORMAL:
            return "ok"
        return "exception" if verdict.kind is ReplyKind.EXCEPTION else "bad-reply"

    def as_record(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "request_hex": self.request.hex(),
            "check": self.mode,
            "expect_hex": _masked_hex(self.expect, self.mask) if self.mode == "expected-bytes" else None,
            "cadence_s": self.cadence,
            "deadline_s": self.deadline,
            "connection": "persistent, reconnected after any miss",
        }


def _masked_hex(expect: bytes, mask: bytes) -> str:
    return "".join(f"{b:02x}" if m else "??" for b, m in zip(expect, mask))


def _parse_hex(text: str, what: str, wildcards: bool = False) -> tuple[bytes, bytes]:
    clean = "".join(text.split()).replace(":", "")
    if len(clean) % 2 or not clean:
        raise OtfuzzError(f"{what} '{text}' is not an even number of hex digits")
    data, mask = bytearray(), bytearray()
    for i in range(0, len(clean), 2):
        pair = clean[i : i + 2]
        if wildcards and pair == "??":
            data.append(0)
            mask.append(0)
            continue
        try:
            data.append(int(pair, 16))
        except ValueError:
            hint = " (use ?? for a byte that may be anything)" if wildcards else ""
            raise OtfuzzError(f"{what} '{text}' is not hex{hint}") from None
        mask.append(1)
    return bytes(data), bytes(mask)


def essential_function(protocol: Protocol, request_hex: str | None, expect_hex: str | None, cadence: float,
                       deadline: float) -> EssentialFunction:
    """Build the essential function from the options; the default is the protocol's health probe."""
    if not 0.01 <= cadence <= 60:
        raise OtfuzzError(f"--cadence must be from 0.01 to 60 s, got {cadence:g}")
    if not 0 < deadline <= cadence:
        raise OtfuzzError(f"--deadline must be positive and at most the cadence ({cadence:g} s): "
                          f"a cycle's answer is due before the next cycle starts; got {deadline:g}")
    if request_hex is None:
        if expect_hex is not None:
            raise OtfuzzError("--essential-expect needs --essential-request (the default request has its own check)")
        probe = protocol.probe()
        return EssentialFunction(probe.frame, "probe", probe.description, cadence, deadline)
    request, _ = _parse_hex(request_hex, "--essential-request")
    problems = protocol.check_request(request)
    if problems:
        raise OtfuzzError(f"--essential-request is not a valid {protocol.name} request: {problems[0]}")
    if protocol.is_write(request):
        raise OtfuzzError("--essential-request must be a read: a stress run repeats it many times a second")
    description = f"user request {protocol.describe(request)}"
    if expect_hex is None:
        return EssentialFunction(request, "normal-reply", description, cadence, deadline)
    expect, mask = _parse_hex(expect_hex, "--essential-expect", wildcards=True)
    return EssentialFunction(request, "expected-bytes", description, cadence, deadline, expect, mask)


@dataclass(frozen=True)
class Cycle:
    """One cycle of the essential function; `t` is the scheduled time (system monotonic clock)."""

    t: float
    latency: float | None
    ok: bool
    reason: str


# -- the monitor process ------------------------------------------------------------------------


async def _cycles(control: Any, target: Target, host: str, port: int, function: EssentialFunction,
                  max_duration: float) -> None:
    from otfuzz.protocols import protocol_for

    protocol = protocol_for(target)
    conn: Connection | None = None
    observed = function.mode == "probe" and protocol.probe_observer() is not None
    observer: Connection | None = None
    start = time.monotonic()
    cadence, deadline = function.cadence, function.deadline
    max_cycles = int(max_duration / cadence) + 2
    k = 0
    try:
        while k < max_cycles and time.monotonic() - start < max_duration:
            if control.poll():
                break
            scheduled = start + k * cadence
            wait = scheduled - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            begin = time.perf_counter()
            latency: float | None = None
            reason = "ok"
            try:
                if conn is None or not conn.alive or (observed and (observer is None or not observer.alive)):
                    for each in (conn, observer):
                        if each is not None:
                            each.close()
                    conn = observer = None
                    if observed:
                        observer = await open_connection(protocol, host, port, deadline, session=protocol.probe_observer())
                    conn = await open_connection(protocol, host, port, deadline)
                remaining = max(0.001, deadline - (time.perf_counter() - begin))
                if observer is not None:
                    reason, _ = await probe_exchange(protocol, function.request, conn, observer, remaining)
                    if reason in ("ok", "bad-reply"):
                        latency = time.perf_counter() - begin
                else:
                    exchange = await conn.exchange(function.request, remaining)
                    if exchange.outcome == "reply" and exchange.reply is not None:
                        latency = time.perf_counter() - begin
                        reason = function.judge(protocol, exchange.reply)
                    else:
                        reason = exchange.outcome
            except ConnectionRefusedError:
                reason = "refused"
            except (TimeoutError, asyncio.TimeoutError):
                reason = "connect-timeout"
            except ConnectionError:
                reason = "closed"
            except OSError:
                reason = "refused"
            if reason != "ok":
                # A late answer must never be taken for the next cycle's: start afresh.
                for each in (conn, observer):
                    if each is not None:
                        each.close()
                conn = observer = None
            control.send((scheduled, latency, reason == "ok", reason))
            # A cycle that overran its slot (scheduler stall) skips slots: each is a missed cycle.
            next_k = k + 1
            behind = int((time.monotonic() - start) / cadence)
            for skipped in range(next_k, behind):
                control.send((start + skipped * cadence, None, False, "overrun"))
            k = max(next_k, behind)
    finally:
        for each in (conn, observer):
            if each is not None:
                each.close()


def _monitor_main(control: Any, target: Target, host: str, port: int, function: EssentialFunction,
                  max_duration: float) -> None:
    """Entry point of the monitor process: Ctrl-C is the parent's to handle, not ours."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_cycles(control, target, host, port, function, max_duration))
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    finally:
        try:
            control.send(None)
        except (BrokenPipeError, OSError):
            pass


class EssentialMonitor:
    """Runs the essential function in a child process and collects its cycles in this one."""

    def __init__(self, target: Target, host: str, port: int, function: EssentialFunction,
                 max_duration: float, on_cycle: Callable[[Cycle], None]) -> None:
        self.function = function
        self.on_cycle = on_cycle
        self._args = (target, host, port, function, max_duration)
        self._ctx = multiprocessing.get_context("spawn")
        self._conn: Any = None
        self._proc: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.finished = False

    def start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        self._proc = self._ctx.Process(target=_monitor_main, args=(child, *self._args), daemon=True,
                                       name="otfuzz-essential-monitor")
        self._proc.start()
        child.close()
        self._conn = parent
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(parent.fileno(), self._readable)

    def _readable(self) -> None:
        conn = self._conn
        try:
            while conn is not None and conn.poll():
                message = conn.recv()
                if message is None:
                    self._detach()
                    return
                self.on_cycle(Cycle(*message))
        except (EOFError, OSError):
            self._detach()

    def _detach(self) -> None:
        self.finished = True
        if self._loop is not None and self._conn is not None:
            try:
                self._loop.remove_reader(self._conn.fileno())
            except (ValueError, OSError):
                pass

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive() and not self.finished

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the monitor to stop, collect its last cycles, and make sure the process is gone."""
        if self._proc is None:
            return
        try:
            if self._conn is not None and not self.finished:
                self._conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
        if self._proc.is_alive():  # pragma: no cover - SIGTERM is not ignored by the child
            self._proc.kill()
            self._proc.join(timeout)
        if self._conn is not None:
            if not self.finished:
                self._readable()
            self._detach()
            self._conn.close()
            self._conn = None
        self._proc = None


def cycle_stats(cycles: list[Cycle], cadence: float) -> dict[str, Any]:
    """Missed cycles, latency percentiles and the longest outage of a run of cycles."""
    latencies = sorted(c.latency for c in cycles if c.ok and c.latency is not None)
    misses = [c for c in cycles if not c.ok]
    reasons: dict[str, int] = {}
    for c in misses:
        reasons[c.reason] = reasons.get(c.reason, 0) + 1
    longest = run = 0
    for c in cycles:
        run = run + 1 if not c.ok else 0
        longest = max(longest, run)

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(round(p * (len(latencies) - 1))))] * 1000, 3)

    return {
        "cycles": len(cycles),
        "misses": len(misses),
        "miss_ratio": round(len(misses) / len(cycles), 6) if cycles else 0.0,
        "miss_reasons": reasons,
        "latency_p50_ms": None if not latencies else round(statistics.median(latencies) * 1000, 3),
        "latency_p95_ms": pct(0.95),
        "latency_max_ms": None if not latencies else round(latencies[-1] * 1000, 3),
        "longest_outage_s": round(longest * cadence, 3),
    }


# -- resources of a local target ----------------------------------------------------------------


class ResourceMonitor:
    """Samples CPU, memory, descriptors and threads of a process and its children."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        try:
            self.root = psutil.Process(pid)
        except psutil.Error:
            raise OtfuzzError(f"no process {pid} to monitor (--target-pid)") from None
        self.pid = pid
        self._known: dict[int, Any] = {}

    def sample(self) -> dict[str, float | int] | None:
        """One sample, or None when the process is gone."""
        psutil = self._psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None
        cpu = rss = fds = threads = 0.0
        alive: dict[int, Any] = {}
        for proc in procs:
            known = self._known.get(proc.pid, proc)
            try:
                with known.oneshot():
                    cpu += known.cpu_percent(None)
                    rss += known.memory_info().rss
                    fds += known.num_fds()
                    threads += known.num_threads()
            except psutil.Error:
                continue
            alive[proc.pid] = known
        if self.root.pid not in alive:
            return None
        self._known = alive
        return {"cpu_percent": round(cpu, 1), "rss_mb": round(rss / 2**20, 3), "fds": int(fds), "threads": int(threads),
                "processes": len(alive)}
