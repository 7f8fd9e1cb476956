"""Connection-level test cases: what a device does with connections, not with bytes.

Four patterns, each bounded by `--hold-time` and `--max-connections` (and never above the
stress layer's connection ceiling): a partial frame left open (slow-read: many servers block
on a read that never completes), many connections opened and held while the probe runs
(connection exhaustion), rapid open/close bursts, and half-closed connections (a request, then
the write side shut). The health probe runs in the middle of the pattern and after it: a probe
that is refused, unanswered or slow then is a finding, with the pattern as its reproducer.
The load itself is the stress layer's generator (one implementation of connection floods).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otfuzz.monitor.probe import HealthProbe, ProbeResult
    from otfuzz.protocols.base import Protocol

PATTERNS = ("slow-read", "many-connections", "open-close-burst", "half-closed")
CEILING = 256
"""The stress layer's default connection ceiling: no connection case opens more."""


@dataclass(frozen=True)
class ConnectionPattern:
    kind: str
    connections: int
    hold: float  # seconds
    cut: int = 1  # bytes of the frame a slow read sends

    def describe(self) -> str:
        what = {
            "slow-read": "a partial frame left open",
            "many-connections": f"{self.connections} connections held open",
            "open-close-burst": f"{self.connections} connections opened and closed",
            "half-closed": f"{self.connections} half-closed connections",
        }[self.kind]
        return f"connection pattern {self.kind}: {what} for {self.hold:g} s"


@dataclass(frozen=True)
class PatternResult:
    during: ProbeResult | None
    connects: int
    refused: int
    detail: str


async def run_pattern(protocol: Protocol, host: str, port: int, pattern: ConnectionPattern, frame: bytes,
                      probe: HealthProbe, stop: asyncio.Event, max_connections: int) -> PatternResult:
    """Run one pattern against the target, probing it half-way through."""
    from otfuzz.stress.load import LoadGenerator, LoadStats
    from otfuzz.stress.patterns import FloodFrames, Step

    count = max(1, min(pattern.connections, max_connections, CEILING))
    stats = LoadStats()
    flood = FloodFrames((frame,), pattern.describe(), (False,))

    async def load() -> None:
        if pattern.kind == "half-closed":
            await _half_closed(host, port, frame, count, pattern.hold, stop, stats)
            return
        generator = LoadGenerator(protocol, host, port, min(2.0, pattern.hold), max(1.0, count / max(pattern.hold, 0.1)), stop)
        kind = {"slow-read": "half-open", "many-connections": "idle", "open-close-burst": "churn"}[pattern.kind]
        rate = count / max(pattern.hold, 0.1) if kind == "churn" else 0.0
        await generator.run(Step("connection", kind, pattern.hold, rate, rate, 1 if kind == "half-open" else count), flood, stats)

    async def probe_midway() -> ProbeResult | None:
        await asyncio.sleep(pattern.hold / 2)
        return None if stop.is_set() else await probe.check()

    _, during = await asyncio.gather(load(), probe_midway())
    refused = int(stats.connect_failures.get("refused", 0))
    detail = f"{stats.connects} connects, {refused} refused, peak {stats.peak_open} open"
    return PatternResult(during, stats.connects, refused, detail)


async def _half_closed(host: str, port: int, frame: bytes, count: int, hold: float, stop: asyncio.Event, stats: object) -> None:
    """Open `count` connections, send the request on each and shut the write side at once."""
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(count):
            if stop.is_set():
                break
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
            except (OSError, asyncio.TimeoutError):
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(frame)
            if writer.can_write_eof():
                writer.write_eof()
            writers.append(writer)
            stats.connects = getattr(stats, "connects", 0) + 1  # type: ignore[attr-defined]
        stats.peak_open = max(getattr(stats, "peak_open", 0), len(writers))  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        end = loop.time() + hold
        while not stop.is_set() and loop.time() < end:
            await asyncio.sleep(min(0.05, max(0.0, end - loop.time())))
    finally:
        for writer in writers:
            writer.close()
