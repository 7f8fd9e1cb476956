"""Load patterns, named load levels, profiles and the hard ceilings, all as plain data.

A stress run is a list of patterns (one per test group: connection-flood, request-flood,
malformed-flood, protocol-flood), each a list of bounded steps. A profile states its steps as
multiples of two named levels, so an operator who knows the device's nominal load sets the
levels and the whole profile scales with them:

- level-1: load the component must carry with its essential function intact (strict threshold);
- level-2: a flood under which degraded mode is allowed, within a looser threshold;
- beyond level-2: informative only (capacity, knee of the curve), but recovery is still judged.

The ceilings are the product's own safety limits on rate, connections, connection rate and
duration; a plan above any of them is refused until the operator raises that ceiling by flag.
Protocol-specific floods are found through the protocol module's public templates by name, so
no protocol module has to know about stress testing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

from otfuzz.errors import OtfuzzError

GROUPS: tuple[str, ...] = ("connection-flood", "request-flood", "malformed-flood", "protocol-flood")
"""Load test groups in the order a run executes them (recovery is judged after each)."""

VERDICT_GROUPS: tuple[str, ...] = GROUPS + ("recovery",)

LEVELS: tuple[str, ...] = ("level-1", "level-2", "beyond")

RATE_KINDS = ("rate", "ramp")
CONNECTION_KINDS = ("idle", "half-open", "hold", "churn")



# Absolute limits no flag can raise: beyond them a single process cannot keep its own books.
ABSOLUTE_MAX_RATE = 1_000_000.0
ABSOLUTE_MAX_CONNECTIONS = 60_000
ABSOLUTE_MAX_DURATION = 24 * 3600.0


@dataclass(frozen=True)
class Level:
    """One named load level: request rate (all connections together), open connections, connects/s."""

    request_rate: float
    connections: int
    connect_rate: float


@dataclass(frozen=True)
class Levels:
    level1: Level
    level2: Level

    def get(self, name: str) -> Level:
        return {"level-1": self.level1, "level-2": self.level2}[name]

    def as_record(self) -> dict[str, dict[str, float | int]]:
        return {"level-1": asdict(self.level1), "level-2": asdict(self.level2)}

    def classify_rate(self, rate: float) -> str:
        return _classify(rate, self.level1.request_rate, self.level2.request_rate)

    def classify_connections(self, count: float) -> str:
        return _classify(count, self.level1.connections, self.level2.connections)

    def classify_connect_rate(self, rate: float) -> str:
        return _classify(rate, self.level1.connect_rate, self.level2.connect_rate)


def _classify(value: float, one: float, two: float) -> str:
    # A small tolerance so a step defined as exactly the level is judged at that level.
    if value <= one * 1.0001:
        return "level-1"
    if value <= two * 1.0001:
        return "level-2"
    return "beyond"


@dataclass(frozen=True)
class Step:
    """One bounded step of load.

    kind: rate (constant request rate), ramp (linear from rate_start to rate_end), idle (open
    `connections` and send nothing), half-open (open them, send a partial frame, stay idle),
    hold (open them and keep each active with one valid request a second), churn (connect and
    close at `rate_start` connections/s).
    """

    group: str
    kind: str
    duration: float
    rate_start: float = 0.0
    rate_end: float = 0.0
    connections: int = 1

    @property
    def peak_rate(self) -> float:
        return max(self.rate_start, self.rate_end)

    def rate_at(self, t: float) -> float:
        if self.kind == "ramp" and self.duration > 0:
            frac = min(max(t / self.duration, 0.0), 1.0)
            return self.rate_start + (self.rate_end - self.rate_start) * frac
        return self.rate_start

    def due(self, t: float) -> float:
        """Requests (or connects) due in the first `t` seconds: the integral of the rate."""
        t = min(max(t, 0.0), self.duration)
        if self.kind == "ramp" and self.duration > 0:
            return self.rate_start * t + (self.rate_end - self.rate_start) * t * t / (2 * self.duration)
        return self.rate_start * t

    @property
    def total(self) -> int:
        """The count bound: no step sends more than this many requests or connects."""
        return int(math.ceil(self.due(self.duration)))

    def level_at(self, t: float, levels: Levels) -> str:
        """The level a moment of this step is judged at (a ramp crosses levels as it climbs)."""
        if self.kind in RATE_KINDS:
            return levels.classify_rate(self.rate_at(t))
        if self.kind == "churn":
            return levels.classify_connect_rate(self.rate_start)
        return levels.classify_connections(self.connections)

    @property
    def label(self) -> str:
        conns = f"{self.connections} connection{'s' if self.connections != 1 else ''}"
        if self.kind == "rate":
            return f"{self.rate_start:g} req/s on {conns}"
        if self.kind == "ramp":
            return f"ramp {self.rate_start:g} to {self.rate_end:g} req/s on {conns}"
        if self.kind == "churn":
            return f"connect/disconnect at {self.rate_start:g}/s"
        return f"{self.kind}: {conns}"

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "duration_s": self.duration, "rate_start": self.rate_start,
                "rate_end": self.rate_end, "connections": self.connections}


@dataclass(frozen=True)
class PatternPlan:
    group: str
    steps: tuple[Step, ...]
    note: str = ""

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.steps)


# Step shapes, relative to the levels: (level, factor[, connections]).
ConnShape = tuple[str, str, float]  # (kind, level, factor of level.connections or level.connect_rate)
RateShape = tuple[str, float, int]  # (level, factor of level.request_rate, connections)


@dataclass(frozen=True)
class Profile:
    """A named set of patterns, stated relative to the levels."""

    name: str
    description: str
    levels: Levels
    step_duration: float
    ramp_duration: float
    connection_steps: tuple[ConnShape, ...]
    request_steps: tuple[RateShape, ...]
    request_ramp: tuple[str, float] | None
    malformed_steps: tuple[RateShape, ...]
    protocol_steps: tuple[RateShape, ...]

    def with_overrides(self, levels: Levels | None = None, step_duration: float | None = None) -> Profile:
        """The same shape at other levels or another step length (the ramp keeps its proportion)."""
        if step_duration is None:
            return replace(self, levels=levels or self.levels)
        ramp = self.ramp_duration * step_duration / self.step_duration
        return replace(self, levels=levels or self.levels, step_duration=step_duration, ramp_duration=ramp)

    def plan(self, groups: Sequence[str], protocol_flood_available: bool, connections: bool = True) -> list[PatternPlan]:
        """The patterns to run, in order, for the selected test groups; `connections` False for a
        datagram protocol, whose connection flood is recorded as not applicable (no steps)."""
        out: list[PatternPlan] = []
        d = self.step_duration
        for group in GROUPS:
            if group not in groups:
                continue
            steps: list[Step] = []
            note = ""
            if group == "connection-flood" and not connections:
                note = "not applicable: this protocol runs over datagrams (UDP), there are no connections to flood"
            elif group == "connection-flood":
                for kind, level, factor in self.connection_steps:
                    lv = self.levels.get(level)
                    if kind == "churn":
                        steps.append(Step(group, kind, d, rate_start=round(lv.connect_rate * factor, 3), connections=1))
                    else:
                        steps.append(Step(group, kind, d, connections=max(1, int(round(lv.connections * factor)))))
            elif group == "request-flood":
                steps += self._rate_steps(group, self.request_steps)
                if self.request_ramp is not None:
                    level, factor = self.request_ramp
                    top = round(self.levels.get(level).request_rate * factor, 3)
                    steps.append(Step(group, "ramp", self.ramp_duration, rate_start=0.0, rate_end=top, connections=1))
            elif group == "malformed-flood":
                steps += self._rate_steps(group, self.malformed_steps)
            elif group == "protocol-flood":
                if protocol_flood_available:
                    steps += self._rate_steps(group, self.protocol_steps)
                else:
                    note = "this protocol has no protocol-specific flood message"
            out.append(PatternPlan(group, tuple(steps), note))
        return out

    def _rate_steps(self, group: str, shapes: Sequence[RateShape]) -> list[Step]:
        steps = []
        for level, factor, conns in shapes:
            rate = round(self.levels.get(level).request_rate * factor, 3)
            steps.append(Step(group, "rate", self.step_duration, rate_start=rate, rate_end=rate, connections=conns))
        return steps


PROFILES: Mapping[str, Profile] = MappingProxyType({
    "smoke": Profile(
        name="smoke",
        description="setup check: one or two one-second steps per pattern, no ramp",
        levels=Levels(Level(50.0, 8, 10.0), Level(200.0, 32, 50.0)),
        step_duration=1.0,
        ramp_duration=1.0,
        connection_steps=(("idle", "level-2", 1.0), ("churn", "level-2", 1.0)),
        request_steps=(("level-1", 1.0, 1), ("level-2", 1.0, 1)),
        request_ramp=None,
        malformed_steps=(("level-2", 1.0, 1),),
        protocol_steps=(("level-2", 1.0, 1),),
    ),
    "quick": Profile(
        name="quick",
        description="short smoke test: each pattern at level-1 and level-2 for a couple of seconds",
        levels=Levels(Level(50.0, 8, 10.0), Level(200.0, 32, 50.0)),
        step_duration=2.0,
        ramp_duration=4.0,
        connection_steps=(("idle", "level-2", 1.0), ("half-open", "level-2", 1.0), ("hold", "level-2", 1.0),
                          ("churn", "level-2", 1.0)),
        request_steps=(("level-1", 1.0, 1), ("level-2", 1.0, 1), ("level-2", 1.0, 4)),
        request_ramp=("level-2", 2.0),
        malformed_steps=(("level-1", 1.0, 1), ("level-2", 1.0, 1)),
        protocol_steps=(("level-1", 1.0, 1), ("level-2", 1.0, 1)),
    ),
    "crt-like": Profile(
        name="crt-like",
        description="certification-lab style: rising steps through level-1 and level-2 to 5x level-2, "
                    "a ramp, floods on one and on many connections, 10 s per step",
        levels=Levels(Level(100.0, 16, 10.0), Level(1000.0, 64, 100.0)),
        step_duration=10.0,
        ramp_duration=30.0,
        connection_steps=(("idle", "level-1", 1.0), ("idle", "level-2", 1.0), ("idle", "level-2", 2.0),
                          ("half-open", "level-1", 1.0), ("half-open", "level-2", 1.0),
                          ("hold", "level-1", 1.0), ("hold", "level-2", 1.0),
                          ("churn", "level-1", 1.0), ("churn", "level-2", 1.0), ("churn", "level-2", 2.0)),
        request_steps=(("level-1", 0.1, 1), ("level-1", 0.5, 1), ("level-1", 1.0, 1), ("level-2", 0.5, 1),
                       ("level-2", 1.0, 1), ("level-2", 2.0, 1), ("level-2", 5.0, 1),
                       ("level-1", 1.0, 8), ("level-2", 1.0, 8), ("level-2", 5.0, 8)),
        request_ramp=("level-2", 5.0),
        malformed_steps=(("level-1", 0.1, 1), ("level-1", 1.0, 1), ("level-2", 1.0, 1), ("level-2", 2.0, 1),
                         ("level-2", 1.0, 8)),
        protocol_steps=(("level-1", 1.0, 1), ("level-2", 1.0, 1), ("level-2", 5.0, 1)),
    ),
})


@dataclass(frozen=True)
class Ceilings:
    """Hard safety limits of the product; the operator raises each one explicitly by flag."""

    rate: float = 5000.0  # requests/s, all flood connections together
    connections: int = 256  # flood connections open at once
    connect_rate: float = 200.0  # new connections/s
    duration: float = 1200.0  # seconds for the whole run, recovery waits included

    FLAGS = MappingProxyType({"rate": "--max-rate", "connections": "--max-connections",
                              "connect_rate": "--max-connect-rate", "duration": "--max-duration"})

    def validate(self) -> None:
        if not 0 < self.rate <= ABSOLUTE_MAX_RATE:
            raise OtfuzzError(f"--max-rate must be from 1 to {ABSOLUTE_MAX_RATE:g} requests/s, got {self.rate:g}")
        if not 0 < self.connections <= ABSOLUTE_MAX_CONNECTIONS:
            raise OtfuzzError(f"--max-connections must be from 1 to {ABSOLUTE_MAX_CONNECTIONS}, got {self.connections}")
        if not 0 < self.connect_rate <= ABSOLUTE_MAX_RATE:
            raise OtfuzzError(f"--max-connect-rate must be positive and at most {ABSOLUTE_MAX_RATE:g}, got {self.connect_rate:g}")
        if not 0 < self.duration <= ABSOLUTE_MAX_DURATION:
            raise OtfuzzError(f"--max-duration must be positive and at most 24h, got {self.duration:g} s")

    def check(self, plans: Sequence[PatternPlan], overhead: float) -> None:
        """Refuse a plan that exceeds a ceiling, naming the flag that raises it."""
        for plan in plans:
            for step in plan.steps:
                if step.kind in RATE_KINDS and step.peak_rate > self.rate:
                    self._refuse("rate", f"{plan.group} step '{step.label}' offers {step.peak_rate:g} requests/s", step.peak_rate)
                if step.kind == "churn" and step.rate_start > self.connect_rate:
                    self._refuse("connect_rate", f"{plan.group} step '{step.label}' opens {step.rate_start:g} connections/s", step.rate_start)
                if step.kind != "churn" and step.connections > self.connections:
                    self._refuse("connections", f"{plan.group} step '{step.label}' opens {step.connections} connections", step.connections)
        total = sum(p.duration for p in plans) + overhead
        if total > self.duration:
            self._refuse("duration", f"the plan needs up to {total:.0f} s (load plus recovery windows)", math.ceil(total))

    def _refuse(self, name: str, what: str, needed: float) -> None:
        limit = getattr(self, name)
        raise OtfuzzError(f"{what}, above the ceiling of {limit:g}; if you are authorised to load the target that hard, "
                          f"raise it with {self.FLAGS[name]} {needed:g}")

    def as_record(self) -> dict[str, float | int]:
        return {"rate": self.rate, "connections": self.connections, "connect_rate": self.connect_rate, "duration_s": self.duration}


@dataclass(frozen=True)
class FloodFrames:
    """The requests a flood cycles through, with why they were chosen."""

    frames: tuple[bytes, ...]
    description: str
    problems: tuple[bool, ...] = field(default=())  # per frame: does it break the specification?
