"""The case generator: maps a case id to exactly one test case, forever.

The schedule interleaves the test groups by weight (out of every 100 cases by default: boundary
24, structural 16, mutation 32, sequence 12, pairs 15, connection 1), spread evenly by smooth
weighted round robin, so any prefix of a campaign covers every group and a resumed or replayed
case id yields the same bytes. Feedback cases (mutations of corpus entries, values the target
reported) depend on the lineage the campaign recorded for them, which `Feedback` supplies. Read-only mode filters templates *and* every
generated frame: a bit flip must never turn a read into a write on a live plant. Frames the
protocol says may only go to a loopback address (`Protocol.loopback_only`: broadcasts a device
would relay to its networks) are filtered the same way for any other target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from otfuzz.engine.cases import TestCase, case_rng
from otfuzz.engine.feedback import Feedback
from otfuzz.engine.strategies import GROUPS, Context, Pairs, StrategyOptions, build_strategies
from otfuzz.engine.values import Dictionary
from otfuzz.errors import OtfuzzError
from otfuzz.protocols.base import Protocol
from otfuzz.transport import connection_oriented

if TYPE_CHECKING:
    from otfuzz.capture.seeds import CapturedSeeds

READ_ONLY_RETRIES = 32
CAPTURE_GROUP = "capture"
"""The group of the cases that send each captured request once, as seen, before any other."""


def valid_read(protocol: Protocol) -> tuple[bytes, str, str]:
    """A valid request that changes nothing, as (frame, request type, description): the health
    probe when it is a read, else the first template that is neither a write nor disruptive,
    valid, answered and sent after the session's opening. (A probe may itself be a write: an
    MQTT publish that a second client must receive.)"""
    probe = protocol.probe()
    if not protocol.is_write(probe.frame):
        return probe.frame, "probe", probe.description
    for template in protocol.templates():
        frame = template.encode()
        if (template.writes or template.disruptive or protocol.is_write(frame) or protocol.check_request(frame)
                or not protocol.expects_reply(frame) or not protocol.needs_opening(frame)):
            continue
        return frame, template.name, protocol.describe(frame)
    raise OtfuzzError(f"{protocol.name}: no valid read-only request to fall back on")


class CaseGenerator:
    def __init__(self, protocol: Protocol, seed: int, groups: Sequence[str] | None = None, read_only: bool = False,
                 loopback: bool = True, feedback: Feedback | None = None, options: StrategyOptions | None = None,
                 seeds: CapturedSeeds | None = None) -> None:
        self.protocol = protocol
        self.seed = seed
        self.read_only = read_only
        self.loopback = loopback
        groups = list(groups or GROUPS)
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise OtfuzzError(f"unknown test group '{unknown[0]}' (known: {', '.join(GROUPS)})")
        if "connection" in groups and not connection_oriented(protocol):
            if groups != list(GROUPS):
                raise OtfuzzError(f"the connection group needs connections; {protocol.name} runs over datagrams")
            groups.remove("connection")  # every group: every group this protocol has
        # Captured requests (otfuzz run --seeds) come first: templates with the device's real
        # values, and each request once as seen before the schedule starts.
        captured = list(seeds.templates) if seeds is not None else []
        templates = [t for t in [*captured, *protocol.templates()] if not (read_only and (t.writes or t.disruptive))]
        if not templates:
            raise OtfuzzError(f"{protocol.name}: no request types left to send in read-only mode")
        self.templates = templates
        self.dictionary = feedback.dictionary if feedback is not None else Dictionary(protocol.dictionary())
        self.feedback = feedback
        # The safe fallback when read-only mode rejects every retry: a known valid read.
        self._fallback, self._fallback_type, fallback_text = valid_read(protocol)
        self._fallback_note = f"read-only fallback: {fallback_text}"
        sessions = seeds.sessions if seeds is not None else ()
        self.strategies = build_strategies(protocol, templates, groups, self.dictionary, self._fallback, options, sessions)
        self.replay: list[tuple[bytes, str]] = []
        if seeds is not None:
            self.replay = [(frame, t.name) for frame, t in zip(seeds.requests, seeds.templates)
                           if not (read_only and (t.writes or t.disruptive)) and not self._refused(frame)]
        self.weights = {name: GROUPS[name] for name in groups}
        self.schedule = smooth_schedule(self.weights)

    @property
    def groups(self) -> list[str]:
        return list(self.strategies)

    def case(self, case_id: int) -> TestCase:
        """The test case with this id: a pure function of (seed, case id, configuration)."""
        if case_id < 0:
            raise ValueError("case ids start at 0")
        if case_id < len(self.replay):
            frame, name = self.replay[case_id]
            return TestCase(case_id, CAPTURE_GROUP, (frame,), name,
                            f"captured request {case_id + 1} of {len(self.replay)}, as seen: {self.protocol.describe(frame)}")
        cycle, slot = divmod(case_id - len(self.replay), len(self.schedule))
        group, rank = self.schedule[slot]
        index = cycle * self.weights[group] + rank
        strategy = self.strategies[group]
        rng = case_rng(self.seed, case_id)
        ctx = Context(case_id, self.feedback, self.dictionary)
        made = strategy.make(index, rng, ctx)
        if self.read_only or not self.loopback:
            for _ in range(READ_ONLY_RETRIES):
                if not any(self._refused(frame) for frame in made.frames):
                    break
                made = strategy.make(rng.randrange(1 << 30), rng, ctx)
            else:
                return TestCase(case_id, group, (self._fallback,), self._fallback_type, self._fallback_note)
        return TestCase(case_id, group, made.frames, made.template, made.description, made.fault, made.pattern, made.parent)

    def pairs_coverage(self, cases: int) -> dict[str, dict[str, int]]:
        """Pairwise coverage per request type after `cases` cases of the pairs group."""
        strategy = self.strategies.get("pairs")
        return strategy.coverage(cases) if isinstance(strategy, Pairs) else {}

    def _refused(self, frame: bytes) -> bool:
        """A frame this configuration must never send: a write in read-only mode, or a frame only
        a loopback target may get."""
        if self.read_only and self.protocol.is_write(frame):
            return True
        return not self.loopback and self.protocol.loopback_only(frame) is not None


def smooth_schedule(weights: dict[str, int]) -> list[tuple[str, int]]:
    """(group, rank) for every slot of one cycle, each group's slots spread evenly over it
    (smooth weighted round robin), so a short campaign meets every group early and often."""
    total = sum(weights.values())
    credit = {name: 0 for name in weights}
    ranks = {name: 0 for name in weights}
    out: list[tuple[str, int]] = []
    for _ in range(total):
        for name, weight in weights.items():
            credit[name] += weight
        best = max(weights, key=lambda n: (credit[n], -list(weights).index(n)))
        credit[best] -= total
        out.append((best, ranks[best]))
        ranks[best] += 1
    return out
