"""Security-level capability (SL-C) per foundational requirement, and what blocks the next level.

The rule is the standard's, from security_levels.md section 4: SL-C of an FR is the highest n
such that every applicable requirement of that FR with `sl_min <= n` is met. Requirements the
user justified as not applicable drop out. A requirement without evidence is *unverified*, not
failed, so each FR also reports the ceiling it could reach if every unverified requirement
were shown met: the level below the first failed requirement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from otfuzz.compliance.catalogue import SECURITY_LEVELS, Catalogue, FoundationalRequirement, Requirement
from otfuzz.compliance.verdicts import RequirementVerdict, Verdict, requirement_sort_key

MAX_LEVEL = SECURITY_LEVELS[-1]

# How a requirement that is not met blocks a level, in the report's words.
STATUS_BY_VERDICT: Mapping[Verdict, str] = MappingProxyType({
    Verdict.FAIL: "failed",
    Verdict.PARTIAL: "partial evidence",
    Verdict.NOT_TESTED: "no evidence",
})


@dataclass(frozen=True)
class Blocker:
    requirement: Requirement
    status: str  # failed, partial evidence, no evidence


@dataclass(frozen=True)
class FrCapability:
    fr: FoundationalRequirement
    sl_t: int | None
    sl_c: int
    ceiling: int  # highest level not blocked by a failed requirement
    next_level_blockers: tuple[Blocker, ...]
    missing: tuple[Blocker, ...]  # everything not met up to SL-T

    @property
    def gap(self) -> int | None:
        return None if self.sl_t is None else max(0, self.sl_t - self.sl_c)

    @property
    def next_level(self) -> int | None:
        return self.sl_c + 1 if self.sl_c < MAX_LEVEL else None

    @property
    def unverified_above(self) -> bool:
        """SL-C is limited by missing evidence rather than by failures."""
        return self.ceiling > self.sl_c


def capability(catalogue: Catalogue, object_type: str, verdicts: Mapping[str, RequirementVerdict],
               sl_t: Sequence[int] | None = None) -> tuple[FrCapability, ...]:
    """SL-C, ceiling and blockers for each FR of `object_type` ("system" or a type code).

    `verdicts` maps requirement id to its verdict; a requirement with no entry has no evidence.
    """
    applicable = [r for r in catalogue.applicable(object_type)
                  if not _verdict_is(verdicts, r, Verdict.NOT_APPLICABLE)]
    result = []
    for index, fr in enumerate(catalogue.foundational_requirements):
        target = sl_t[index] if sl_t is not None else None
        members = [r for r in applicable if r.fr == fr.id]
        unmet = sorted((r for r in members if not _verdict_is(verdicts, r, Verdict.PASS)), key=requirement_sort_key)
        failed = [r for r in unmet if _verdict_is(verdicts, r, Verdict.FAIL)]
        sl_c = _highest_level_clear_of(unmet)
        ceiling = _highest_level_clear_of(failed)
        blockers = tuple(_blocker(r, verdicts) for r in unmet if sl_c < MAX_LEVEL and r.sl_min <= sl_c + 1)
        missing = tuple(_blocker(r, verdicts) for r in unmet if target is not None and r.sl_min <= target)
        result.append(FrCapability(fr, target, sl_c, ceiling, blockers, missing))
    return tuple(result)


def _highest_level_clear_of(blocking: Sequence[Requirement]) -> int:
    lowest = min((r.sl_min for r in blocking if r.sl_min is not None), default=MAX_LEVEL + 1)
    return lowest - 1


def _verdict_is(verdicts: Mapping[str, RequirementVerdict], requirement: Requirement, verdict: Verdict) -> bool:
    found = verdicts.get(requirement.id)
    return found is not None and found.verdict is verdict


def _blocker(requirement: Requirement, verdicts: Mapping[str, RequirementVerdict]) -> Blocker:
    found = verdicts.get(requirement.id)
    return Blocker(requirement, STATUS_BY_VERDICT.get(found.verdict, "no evidence") if found else "no evidence")
