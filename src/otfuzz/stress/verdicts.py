"""Verdicts of a stress run from explicit thresholds, set before the test and recorded with it.

A step is judged by the cycles of the essential function that fell in it, split by the level the
load was at in that moment (a ramp crosses levels as it climbs): under level-1 load at most
`max_missed_level1` of cycles may be missed; under level-2 load degraded mode is allowed, within
`max_missed_level2` and with no outage longer than `max_outage_level2`; beyond level-2 the step
is informative. A step in which otfuzz itself could not offer the load is inconclusive, unless
the target already failed at the lower load it did get. Recovery is judged after every step:
the essential function must be back to baseline within `recovery_limit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from otfuzz.errors import OtfuzzError

PASS, FAIL, INCONCLUSIVE, NOT_RUN = "pass", "fail", "inconclusive", "not-run"
_RANK = {PASS: 0, NOT_RUN: 0, INCONCLUSIVE: 1, FAIL: 2}


@dataclass(frozen=True)
class Thresholds:
    """Pass criteria of a stress run (defaults are documented in docs/stress.md)."""

    max_missed_level1: float = 0.01
    max_missed_level2: float = 0.10
    max_outage_level2: float = 2.0
    recovery_limit: float = 5.0
    recovery_window: float = 15.0
    recovery_latency_factor: float = 3.0
    recovery_cycles: int = 5
    max_tool_shortfall: float = 0.10
    max_fd_growth: int = 16
    max_thread_growth: int = 4
    max_rss_growth_mb: float = 64.0

    def validate(self) -> None:
        for name in ("max_missed_level1", "max_missed_level2", "max_tool_shortfall"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise OtfuzzError(f"--{name.replace('_', '-')} must be from 0% to 100%, got {value:g}")
        for name in ("max_outage_level2", "recovery_limit", "recovery_window", "recovery_latency_factor"):
            if getattr(self, name) <= 0:
                raise OtfuzzError(f"--{name.replace('_', '-')} must be positive")
        if self.recovery_window < self.recovery_limit:
            raise OtfuzzError(f"--recovery-window ({self.recovery_window:g} s) must be at least --recovery-limit "
                              f"({self.recovery_limit:g} s)")
        if self.recovery_cycles < 1:
            raise OtfuzzError("--recovery-cycles must be at least 1")

    def as_record(self) -> dict[str, float | int]:
        return asdict(self)


def worst(verdicts: Iterable[str]) -> str:
    out = PASS
    for v in verdicts:
        if _RANK[v] > _RANK[out]:
            out = v
    return out


def judge_step(by_level: Mapping[str, Mapping[str, Any]], offered: Mapping[str, Any], thresholds: Thresholds,
               target_died: bool) -> tuple[str, list[str]]:
    """Verdict and reasons of one step from its per-level essential-function statistics."""
    fails: list[str] = []
    doubts: list[str] = []
    judged = False
    one = by_level.get("level-1")
    if one and one["cycles"]:
        judged = True
        if one["miss_ratio"] > thresholds.max_missed_level1:
            fails.append(f"level-1 load: {one['misses']} of {one['cycles']} cycles missed ({one['miss_ratio']:.1%}), "
                         f"more than {thresholds.max_missed_level1:.1%}")
    two = by_level.get("level-2")
    if two and two["cycles"]:
        judged = True
        if two["miss_ratio"] > thresholds.max_missed_level2:
            fails.append(f"level-2 load: {two['misses']} of {two['cycles']} cycles missed ({two['miss_ratio']:.1%}), "
                         f"more than {thresholds.max_missed_level2:.1%}")
        if two["longest_outage_s"] > thresholds.max_outage_level2:
            fails.append(f"level-2 load: essential function lost for {two['longest_outage_s']:g} s in a row, "
                         f"longer than {thresholds.max_outage_level2:g} s")
    if target_died:
        fails.append("the target process died under this load")
    intended = offered.get("intended", 0)
    if intended and judged:
        short = offered.get("tool_shortfall", 0) / intended
        if short > thresholds.max_tool_shortfall:
            doubts.append(f"otfuzz offered {short:.0%} less than the planned load (its own limit, not the target's)")
    if fails:
        return FAIL, fails
    if doubts:
        return INCONCLUSIVE, doubts
    if not judged:
        return PASS, ["beyond level-2: informative only"]
    return PASS, []


def judge_recovery(recovered: bool, seconds: float | None, thresholds: Thresholds) -> tuple[str, str]:
    if not recovered or seconds is None:
        return FAIL, f"essential function not back to baseline within {thresholds.recovery_window:g} s"
    if seconds > thresholds.recovery_limit:
        return FAIL, f"recovery took {seconds:.2f} s, more than {thresholds.recovery_limit:g} s"
    return PASS, ""


def judge_resources(start: Mapping[str, Any] | None, end: Mapping[str, Any] | None, thresholds: Thresholds) -> tuple[str, list[str]]:
    """Leak check: descriptors, threads and memory after all load and recovery versus before."""
    if start is None or end is None:
        return INCONCLUSIVE, ["the target process could not be sampled before and after the load"]
    fails = []
    fd_growth = end["fds"] - start["fds"]
    if fd_growth > thresholds.max_fd_growth:
        fails.append(f"open descriptors grew by {fd_growth} ({start['fds']} to {end['fds']}), more than {thresholds.max_fd_growth}")
    thread_growth = end["threads"] - start["threads"]
    if thread_growth > thresholds.max_thread_growth:
        fails.append(f"threads grew by {thread_growth} ({start['threads']} to {end['threads']}), more than {thresholds.max_thread_growth}")
    rss_growth = end["rss_mb"] - start["rss_mb"]
    if rss_growth > thresholds.max_rss_growth_mb:
        fails.append(f"memory grew by {rss_growth:.1f} MiB, more than {thresholds.max_rss_growth_mb:g} MiB")
    return (FAIL, fails) if fails else (PASS, [])
