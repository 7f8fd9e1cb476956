"""Health probing: is the target alive, and how well?

Many field devices silently drop malformed frames, so silence after a fuzz case proves nothing;
liveness is decided only by a valid request with a known good answer. The probe runs on its own
connection (or, for single-association protocols such as DNP3, after the fuzzing connection has
been closed, so the probe never displaces an association and then blames the target for it).
Its latency baseline is learned before the first case, which is what makes "degradation"
measurable rather than a guess.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from otfuzz.protocols.base import Protocol
from otfuzz.transport import open_connection
from otfuzz.transport.tcp import Connection


@dataclass(frozen=True)
class ProbeResult:
    """`reason`: ok, slow, refused, timeout, closed, reset, bad-reply or error."""

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
        kept = self._kept
        if kept is not None:
            self._kept = None
            if kept.alive:
                exchange = await kept.exchange(self._probe.frame, self.deadline)
                if exchange.outcome == "reply" and exchange.reply is not None and self.protocol.probe_ok(exchange.reply):
                    self._kept = kept
                    slow = exchange.latency > self.slow_threshold
                    return ProbeResult(True, "slow" if slow else "ok", exchange.latency)
                if exchange.outcome == "timeout":
                    kept.close()  # silence on a live connection is the answer: no second chance
                    return ProbeResult(False, "timeout", None)
            kept.close()  # closed while idle (devices do that) or a stray reply: decide afresh
        return await self._fresh()

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    async def _fresh(self) -> ProbeResult:
        start = time.perf_counter()
        try:
            conn = await open_connection(self.protocol, self.host, self.port, self.deadline)
        except ConnectionRefusedError:
            return ProbeResult(False, "refused", None)
        except (TimeoutError, asyncio.TimeoutError):
            return ProbeResult(False, "timeout", None)
        except ConnectionError:
            return ProbeResult(False, "closed", None)
        except OSError:  # not a refusal (ports or descriptors exhausted, network): never a crash
            return ProbeResult(False, "error", None)
        keep = False
        try:
            remaining = max(0.01, self.deadline - (time.perf_counter() - start))
            exchange = await conn.exchange(self._probe.frame, remaining)
            keep = (not self.protocol.single_association and exchange.outcome == "reply"
                    and exchange.reply is not None and self.protocol.probe_ok(exchange.reply))
        finally:
            if keep:
                self._kept = conn
            else:
                conn.close()
        if exchange.outcome != "reply" or exchange.reply is None:
            return ProbeResult(False, exchange.outcome, None)
        if not self.protocol.probe_ok(exchange.reply):
            return ProbeResult(False, "bad-reply", exchange.latency)
        if exchange.latency > self.slow_threshold:
            return ProbeResult(True, "slow", exchange.latency)
        return ProbeResult(True, "ok", exchange.latency)

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
