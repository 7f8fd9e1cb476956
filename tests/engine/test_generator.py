"""Case generation: pure, deterministic, covering every group, and safe in read-only mode."""

from __future__ import annotations

import pytest

from otfuzz.engine.generator import CaseGenerator
from otfuzz.engine.strategies import GROUPS
from otfuzz.errors import OtfuzzError
from otfuzz.protocols.modbus import ModbusTCP


def test_a_case_is_a_pure_function_of_seed_and_id() -> None:
    first = CaseGenerator(ModbusTCP(), seed=7)
    second = CaseGenerator(ModbusTCP(), seed=7)
    for case_id in list(range(200)) + [4711, 10**6]:
        assert first.case(case_id) == second.case(case_id)


def test_regenerating_out_of_order_gives_the_same_bytes() -> None:
    gen = CaseGenerator(ModbusTCP(), seed=3)
    forward = [gen.case(i) for i in range(100)]
    backward = [gen.case(i) for i in reversed(range(100))][::-1]
    assert forward == backward


def test_different_seeds_give_different_campaigns() -> None:
    one, two = CaseGenerator(ModbusTCP(), seed=1), CaseGenerator(ModbusTCP(), seed=2)
    a = [one.case(i).frames for i in range(100)]
    b = [two.case(i).frames for i in range(100)]
    assert sum(x != y for x, y in zip(a, b)) > 30


def test_every_hundred_cases_cover_every_group_by_weight_and_spread_evenly() -> None:
    gen = CaseGenerator(ModbusTCP(), seed=0)
    groups = [gen.schedule[i][0] for i in range(100)]
    assert {g: groups.count(g) for g in GROUPS} == GROUPS
    first = [gen.schedule[i][0] for i in range(20)]
    assert {"boundary", "structural", "mutation", "sequence", "pairs"} <= set(first)  # not in blocks


def test_group_selection_restricts_the_schedule() -> None:
    gen = CaseGenerator(ModbusTCP(), seed=0, groups=["boundary"])
    assert {gen.case(i).group for i in range(50)} == {"boundary"}


def test_unknown_group_is_a_user_error() -> None:
    with pytest.raises(OtfuzzError, match="unknown test group 'nonsense'"):
        CaseGenerator(ModbusTCP(), seed=0, groups=["nonsense"])


def test_read_only_mode_never_generates_a_write_even_after_mutation() -> None:
    protocol = ModbusTCP()
    gen = CaseGenerator(protocol, seed=11, read_only=True)
    for case_id in range(5000):
        case = gen.case(case_id)
        for frame in case.frames:
            assert not protocol.is_write(frame), (case_id, case.description, frame.hex())


def test_read_only_mode_drops_write_and_disruptive_templates() -> None:
    gen = CaseGenerator(ModbusTCP(), seed=0, read_only=True)
    assert gen.templates and not any(t.writes or t.disruptive for t in gen.templates)


def test_sequence_cases_hold_up_to_six_requests_with_the_fault_at_any_step() -> None:
    protocol = ModbusTCP()
    gen = CaseGenerator(protocol, seed=5, groups=["sequence"])
    positions = set()
    for case_id in range(300):
        case = gen.case(case_id)
        if case.description.startswith("alone"):
            continue
        assert 2 <= len(case.frames) <= 6
        invalid = [i for i, frame in enumerate(case.frames) if protocol.check_request(frame)]
        assert len(invalid) <= 1, case.description  # the other steps are valid requests
        positions.update(invalid)
    assert {0, 1, 2} <= positions  # the fault is not only last


def test_sequence_steps_share_values_so_a_write_and_a_read_meet_at_one_address() -> None:
    protocol = ModbusTCP()
    gen = CaseGenerator(protocol, seed=5, groups=["sequence"])
    met = 0
    for case_id in range(400):
        frames = gen.case(case_id).frames
        writes = [f for f in frames if len(f) > 9 and f[7] in (5, 6, 15, 16) and not protocol.check_request(f)]
        reads = [f for f in frames if len(f) > 9 and f[7] in (1, 2, 3, 4) and not protocol.check_request(f)]
        if any(w[8:10] == r[8:10] and w[8:10] not in (b"\0\0", b"\0\1") for w in writes for r in reads):
            met += 1
    assert met >= 5
def test_where_the_probe_is_a_write_the_read_only_fallback_is_a_valid_read() -> None:
    """An MQTT probe is a publish (a second client must receive it): never a read-only case."""
    from otfuzz.engine.generator import valid_read
    from otfuzz.protocols.mqtt import MQTT
    from otfuzz.stress.floods import valid_flood

    mqtt = MQTT()
    assert mqtt.is_write(mqtt.probe().frame)
    frame, request_type, description = valid_read(mqtt)
    assert request_type == "subscribe" and not mqtt.is_write(frame) and mqtt.check_request(frame) == []
    assert valid_flood(mqtt).frames == (frame,) and description in valid_flood(mqtt).description
    gen = CaseGenerator(mqtt, seed=5, read_only=True)
    assert not mqtt.is_write(gen._fallback)  # what read-only mode sends when every retry was a write
    cases = [gen.case(i) for i in range(300)]
    assert not any(mqtt.is_write(f) for c in cases for f in c.frames)
    modbus = ModbusTCP()
    assert valid_read(modbus) == (modbus.probe().frame, "probe", modbus.probe().description)
