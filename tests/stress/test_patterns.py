"""Load patterns as data: profiles scale with the levels, ramps cross levels, ceilings refuse."""

from __future__ import annotations

import pytest

from otfuzz.errors import OtfuzzError
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.stress.floods import malformed_flood, protocol_flood, valid_flood
from otfuzz.stress.patterns import GROUPS, PROFILES, Ceilings, Level, Levels, Step


def test_profile_steps_scale_with_the_levels_the_operator_sets() -> None:
    quick = PROFILES["quick"]
    doubled = quick.with_overrides(Levels(Level(100.0, 16, 20.0), Level(400.0, 64, 100.0)))
    rates = [s.rate_start for p in doubled.plan(GROUPS, True) if p.group == "request-flood" for s in p.steps if s.kind == "rate"]
    assert rates == [100.0, 400.0, 400.0]
    conns = [s.connections for p in doubled.plan(GROUPS, True) if p.group == "connection-flood" for s in p.steps if s.kind != "churn"]
    assert conns == [64, 64, 64]


def test_crt_like_profile_crosses_both_levels_and_goes_beyond_level2() -> None:
    profile = PROFILES["crt-like"]
    levels = profile.levels
    seen = {s.level_at(0, levels) for p in profile.plan(GROUPS, True) for s in p.steps if s.kind == "rate"}
    assert seen == {"level-1", "level-2", "beyond"}


def test_default_ceilings_admit_the_crt_like_profile_without_flags() -> None:
    plans = PROFILES["crt-like"].plan(GROUPS, True)
    Ceilings().check(plans, overhead=15 * sum(len(p.steps) for p in plans))


def test_ramp_offers_the_integral_of_its_rate_and_is_judged_at_the_level_of_the_moment() -> None:
    ramp = Step("request-flood", "ramp", 10.0, rate_start=0.0, rate_end=200.0)
    assert ramp.due(10.0) == pytest.approx(1000.0)
    assert ramp.due(5.0) == pytest.approx(250.0)
    assert ramp.total == 1000
    levels = Levels(Level(50.0, 4, 10.0), Level(100.0, 8, 20.0))
    assert [ramp.level_at(t, levels) for t in (1.0, 4.0, 9.0)] == ["level-1", "level-2", "beyond"]


def test_constant_step_is_bounded_in_count() -> None:
    assert Step("request-flood", "rate", 2.0, 100.0, 100.0).total == 200


@pytest.mark.parametrize("flag, ceilings, levels", [
    ("--max-rate", Ceilings(rate=100.0), None),
    ("--max-connections", Ceilings(connections=8), None),
    ("--max-connect-rate", Ceilings(connect_rate=5.0), None),
    ("--max-duration", Ceilings(duration=10.0), None),
])
def test_a_plan_above_a_ceiling_is_refused_naming_the_flag_that_raises_it(flag: str, ceilings: Ceilings, levels: None) -> None:
    plans = PROFILES["quick"].plan(GROUPS, True)
    with pytest.raises(OtfuzzError, match=flag):
        ceilings.check(plans, overhead=0.0)


def test_ceilings_cannot_be_set_to_nonsense() -> None:
    with pytest.raises(OtfuzzError, match="--max-rate"):
        Ceilings(rate=0).validate()
    with pytest.raises(OtfuzzError, match="--max-connections"):
        Ceilings(connections=10**9).validate()


def test_malformed_flood_holds_only_requests_that_break_the_specification_and_never_writes() -> None:
    modbus = ModbusTCP()
    flood = malformed_flood(modbus, seed=3)
    assert len(flood.frames) >= 16
    for frame in flood.frames:
        assert modbus.check_request(frame), frame.hex()
        assert not modbus.is_write(frame), frame.hex()
    assert malformed_flood(modbus, seed=3).frames == flood.frames  # reproducible from the seed


def test_protocol_flood_is_found_through_the_protocols_public_templates() -> None:
    flood = protocol_flood(ModbusTCP())
    assert flood is not None and "return_query_data" in flood.description
    assert flood.frames[0][7] == 8  # Modbus diagnostics, sub-function 0: the echo test


def test_valid_flood_is_the_protocols_health_probe_read() -> None:
    modbus = ModbusTCP({"probe_address": "7"})
    assert valid_flood(modbus).frames == (modbus.probe().frame,)


def test_protocol_flood_group_is_planned_empty_with_a_note_when_the_protocol_has_none() -> None:
    plan = [p for p in PROFILES["quick"].plan(GROUPS, False) if p.group == "protocol-flood"][0]
    assert plan.steps == () and "no protocol-specific flood" in plan.note


def test_iec104_protocol_flood_is_testfr_act_from_the_modules_own_encoder() -> None:
    from otfuzz.protocols import iec104

    flood = protocol_flood(iec104.IEC104())
    assert flood is not None and flood.frames == (iec104.u_frame(iec104.TESTFR_ACT),)
