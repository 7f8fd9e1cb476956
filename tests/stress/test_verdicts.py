"""Verdict logic from explicit thresholds: level-1 strict, level-2 degraded, otfuzz's own shortfall inconclusive."""

from __future__ import annotations

from otfuzz.stress.monitor import Cycle, cycle_stats
from otfuzz.stress.verdicts import FAIL, INCONCLUSIVE, PASS, Thresholds, judge_recovery, judge_resources, judge_step, worst

OFFERED = {"intended": 1000, "tool_shortfall": 0}


def _stats(misses: int, cycles: int = 100, outage_cycles: int = 0) -> dict:
    pattern = [Cycle(i * 0.1, None if i < misses else 0.001, i >= misses, "timeout" if i < misses else "ok") for i in range(cycles)]
    if outage_cycles:
        pattern = [Cycle(i * 0.1, None, False, "timeout") if i < outage_cycles else Cycle(i * 0.1, 0.001, True, "ok")
                   for i in range(cycles)]
    return cycle_stats(pattern, 0.1)


def test_level1_passes_at_the_threshold_and_fails_just_above_it() -> None:
    assert judge_step({"level-1": _stats(1)}, OFFERED, Thresholds(), False)[0] == PASS
    verdict, reasons = judge_step({"level-1": _stats(2)}, OFFERED, Thresholds(), False)
    assert verdict == FAIL and "level-1" in reasons[0]


def test_level2_allows_degraded_mode_within_its_own_threshold() -> None:
    assert judge_step({"level-2": _stats(8)}, OFFERED, Thresholds(), False)[0] == PASS
    assert judge_step({"level-2": _stats(11)}, OFFERED, Thresholds(), False)[0] == FAIL


def test_level2_fails_on_a_long_outage_even_with_few_misses_overall() -> None:
    verdict, reasons = judge_step({"level-2": _stats(0, cycles=400, outage_cycles=30)}, OFFERED, Thresholds(), False)
    assert verdict == FAIL and any("in a row" in r for r in reasons)


def test_beyond_level2_is_informative_only() -> None:
    verdict, reasons = judge_step({"beyond": _stats(100)}, OFFERED, Thresholds(), False)
    assert verdict == PASS and "informative" in reasons[0]


def test_load_otfuzz_could_not_offer_makes_a_passing_step_inconclusive() -> None:
    verdict, reasons = judge_step({"level-1": _stats(0)}, {"intended": 1000, "tool_shortfall": 200}, Thresholds(), False)
    assert verdict == INCONCLUSIVE and "otfuzz" in reasons[0]


def test_a_target_failing_at_lower_load_than_planned_still_fails() -> None:
    verdict, _ = judge_step({"level-1": _stats(50)}, {"intended": 1000, "tool_shortfall": 500}, Thresholds(), False)
    assert verdict == FAIL


def test_a_target_process_dying_under_load_fails_the_step() -> None:
    assert judge_step({"level-1": _stats(0)}, OFFERED, Thresholds(), True)[0] == FAIL


def test_recovery_is_judged_against_the_limit() -> None:
    assert judge_recovery(True, 4.9, Thresholds())[0] == PASS
    assert judge_recovery(True, 5.1, Thresholds())[0] == FAIL
    assert judge_recovery(False, None, Thresholds())[0] == FAIL


def test_resource_growth_beyond_thresholds_fails_as_a_leak() -> None:
    start = {"fds": 10, "threads": 2, "rss_mb": 50.0}
    assert judge_resources(start, {"fds": 20, "threads": 3, "rss_mb": 60.0}, Thresholds())[0] == PASS
    verdict, reasons = judge_resources(start, {"fds": 100, "threads": 2, "rss_mb": 50.0}, Thresholds())
    assert verdict == FAIL and "descriptors" in reasons[0]


def test_worst_verdict_orders_fail_over_inconclusive_over_pass() -> None:
    assert worst([PASS, INCONCLUSIVE, PASS]) == INCONCLUSIVE
    assert worst([INCONCLUSIVE, FAIL]) == FAIL
    assert worst([]) == PASS


def test_cycle_stats_counts_misses_percentiles_and_the_longest_outage() -> None:
    cycles = [Cycle(0, 0.001, True, "ok"), Cycle(0.1, None, False, "timeout"), Cycle(0.2, None, False, "closed"),
              Cycle(0.3, 0.003, True, "ok")]
    stats = cycle_stats(cycles, 0.1)
    assert stats["misses"] == 2 and stats["miss_ratio"] == 0.5
    assert stats["miss_reasons"] == {"timeout": 1, "closed": 1}
    assert stats["longest_outage_s"] == 0.2
    assert stats["latency_max_ms"] == 3.0
