"""Health probing: is the target alive, and how well?

Many field devices silently drop malformed frames, so silence after a fuzz case proves nothing;
liveness is decided only by a valid request with a known good answer. The probe runs on its own
connection (or, for single-association protocols such as DNP3, after the fuzzing connection has
been closed, so the probe never displaces an association and then blames the target for it).
Its latency baseline is learned before the first case, which is what makes "degradation"
measurable rather than a guess. Where the protocol names an observer (`Protocol.probe_observer`,
an MQTT client subscribed to the probe topic), the probe's answer is not enough: the observer, on
a connection of its own, must also receive what the probe did, so a broker that acknowledges but
no longer delivers is not taken for a healthy one.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from otfuzz.protocols.base import Protocol, Session
from otfuzz.transport import open_connection
from otfuzz.transport.tcp import Connection, Exchange


@dataclass(frozen=True)
class ProbeResult:
    """`reason`: ok, slow, refused, timeout, closed, reset, bad-reply, unobserved (answered, but
    the protocol's observer did not see the probe's effect) or error."""

    ok: bool
    reason: str
    latency: float | None
    at: float = field(default_factory=time.monotonic)

    def as_record(self, t0: float) -> dict[str, object]:
        return {
            "t": round(self.at - t0, 3),
            "ok": self.ok,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 3),
            "reason": self.reason,
        }


@dataclass
class Baseline:
    median: float
    p95: float
    samples: int

    def as_record(self) -> dict[str, float | int]:
        return {"median": round(self.median * 1000, 3), "p95": round(self.p95 * 1000, 3), "samples": self.samples}


async def probe_exchange(protocol: Protocol, frame: bytes, conn: Connection, observer: Connection | None,
                         timeout: float) -> tuple[str, float | None]:
    """Send the probe on `conn` and judge it: (reason, latency), reason "ok", "bad-reply",
    "unobserved" or the exchange's outcome (timeout, closed, reset).

    With an `observer` connection, the probe passes only when the observer also receives a
    message `probe_observed` accepts, within the same timeout. The latency stays the answer's:
    the observer is a witness, and its first delivery on a fresh connection can wait for TCP's
    delayed acknowledgement (40 ms on Linux when the peer runs Nagle's algorithm), which would
    otherwise set every learned timeout. The observer starts listening before the probe leaves,
    so a fast delivery cannot slip past it.
    """
    watching: asyncio.Future[Exchange] | None = None
    if observer is not None:
        watching = asyncio.ensure_future(observer.exchange(b"", timeout))
        await asyncio.sleep(0)  # let it clear stale deliveries and start waiting
    try:
        exchange = await conn.exchange(frame, timeout)
        if exchange.outcome != "reply" or exchange.reply is None:
            return exchange.outcome, None
        if not protocol.probe_ok(exchange.reply):
            return "bad-reply", exchange.latency
        if watching is None:
            return "ok", exchange.latency
        seen = await watching
        watching = None
    finally:
        if watching is not None:
            watching.cancel()
    if seen.outcome != "reply" or seen.reply is None or not protocol.probe_observed(seen.reply):
        return "unobserved", None
    return "ok", exchange.latency


class HealthProbe:
    """Sends the protocol's probe request and judges the answer against the learned baseline."""

    def __init__(self, protocol: Protocol, host: str, port: int, deadline: float = 2.0, degradation_factor: float = 10.0,
                 degradation_floor: float = 0.05) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.deadline = deadline
        self.degradation_factor = degradation_factor
        self.degradation_floor = degradation_floor
        self.baseline: Baseline | None = None
        self._probe = protocol.probe()
        self._kept: Connection | None = None
        self._observed = protocol.probe_observer() is not None
        self._observer: Connection | None = None  # kept with _kept

    @property
    def slow_threshold(self) -> float:
        """Latency above which the target counts as degraded."""
        if self.baseline is None:
            return self.deadline
        return max(self.baseline.p95 * self.degradation_factor, self.baseline.p95 + self.degradation_floor)

    async def check(self) -> ProbeResult:
        """One probe on the probe's own connection.

        The connection is kept between probes (a probe then costs one round trip, so probing
        after every anomaly stays cheap); any failure on it is decided again on a fresh
        connection, which is what tells a refused connection (crash) from a dead one.
        Single-association protocols never keep it: it would displace the fuzzing association.
        """
        kept, observer = self._kept, self._observer
        if kept is not None:
            self._kept = self._observer = None
            if kept.alive and (observer is None or observer.alive):
                reason, latency = await probe_exchange(self.protocol, self._probe.frame, kept, observer, self.deadline)
                if reason == "ok" and latency is not None:
                    self._kept, self._observer = kept, observer
                    slow = latency > self.slow_threshold
                    return ProbeResult(True, "slow" if slow else "ok", latency)
                if reason in ("timeout", "unobserved"):
                    _close(kept, observer)  # silence on live connections is the answer: no second chance
                    return ProbeResult(False, reason, None)
            _close(kept, observer)  # closed while idle (devices do that) or a stray reply: decide afresh
        return await self._fresh()

    def close(self) -> None:
        _close(self._kept, self._observer)
        self._kept = self._observer = None

    async def _connect(self, start: float, session: Session | None = None) -> Connection | ProbeResult:
        """A new connection (with `session`, or the protocol's own) within what is left of the deadline."""
        remaining = max(0.01, self.deadline - (time.perf_counter() - start))
        try:
            return await open_connection(self.protocol, self.host, self.port, remaining, session=session)
        except ConnectionRefusedError:
            return ProbeResult(False, "refused", None)
        except (TimeoutError, asyncio.TimeoutError):
            return ProbeResult(False, "timeout", None)
        except ConnectionError:
            return ProbeResult(False, "closed", None)
        except OSError:  # not a refusal (ports or descriptors exhausted, network): never a crash
            return ProbeResult(False, "error", None)

    async def _fresh(self) -> ProbeResult:
        start = time.perf_counter()
        observer: Connection | None = None
        if self._observed:
            opened = await self._connect(start, self.protocol.probe_observer())
            if isinstance(opened, ProbeResult):
                return opened
            observer = opened
        opened = await self._connect(start)
        if isinstance(opened, ProbeResult):
            _close(observer)
            return opened
        conn = opened
        keep = False
        try:
            remaining = max(0.01, self.deadline - (time.perf_counter() - start))
            reason, latency = await probe_exchange(self.protocol, self._probe.frame, conn, observer, remaining)
            keep = not self.protocol.single_association and reason == "ok"
        finally:
            if keep:
                self._kept, self._observer = conn, observer
            else:
                _close(conn, observer)
        if reason != "ok" or latency is None:
            return ProbeResult(False, reason, latency)
        if latency > self.slow_threshold:
            return ProbeResult(True, "slow", latency)
        return ProbeResult(True, "ok", latency)

    async def learn_baseline(self, samples: int = 10) -> Baseline | None:
        """Measure normal probe latency on fresh connections; None when a probe fails."""
        latencies: list[float] = []
        for _ in range(samples):
            self.close()
            result = await self._fresh()
            if not result.ok or result.latency is None:
                return None
            latencies.append(result.latency)
        latencies.sort()
        p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
        self.baseline = Baseline(statistics.median(latencies), p95, len(latencies))
        return self.baseline

    async def settle(self, count: int = 3) -> list[ProbeResult]:
        """Several probes in a row: one slow answer on a busy host is noise, three is a finding."""
        return [await self.check() for _ in range(count)]


def _close(*connections: Connection | None) -> None:
    for conn in connections:
        if conn is not None:
            conn.close()
