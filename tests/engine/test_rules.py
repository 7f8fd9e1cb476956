"""Work moved off the path between one answer and the next request, against real pymodbus: a
frame's rules are checked once for every layer (RuleMemo), and a judged case's feedback is
taken in after the next request is sent but always before the next case is generated, so the
case stream does not depend on when that work is done."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from otfuzz.engine.campaign import Campaign, CampaignConfig
from otfuzz.engine.generator import CaseGenerator
from otfuzz.engine.rules import RuleMemo
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.store.evidence import EvidenceStore


CHECK = ModbusTCP.check_request


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[bytes]:
    """How often Modbus's check_request ran, per frame."""
    counted: Counter[bytes] = Counter()

    def counting(self: ModbusTCP, frame: bytes) -> list[str]:
        counted[frame] += 1
        return CHECK(self, frame)

    monkeypatch.setattr(ModbusTCP, "check_request", counting)
    return counted


def test_the_memo_gives_the_protocol_s_rules_and_checks_each_frame_once(calls: Counter[bytes]) -> None:
    protocol = ModbusTCP()
    memo = RuleMemo(protocol, size=2)
    valid, foreign = bytes.fromhex("000100000006010300000001"), bytes.fromhex("000100010006010300000001")
    assert memo(valid) == () and memo(valid) == ()
    assert memo(foreign) == tuple(CHECK(protocol, foreign)) and memo(foreign)
    assert calls == {valid: 1, foreign: 1}
    memo(bytes.fromhex("0001000000060103000000ff"))  # a third frame: the memo starts over (bounded)
    memo(valid)
    assert calls[valid] == 2


def test_a_campaign_checks_a_frame_about_once_and_takes_in_feedback_before_each_generation(
        pymodbus_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: Counter[bytes]) -> None:
    host, port = pymodbus_server
    store = EvidenceStore.create(tmp_path)
    campaign = Campaign(CampaignConfig(target=f"modbus://{host}:{port}", seed=3, confirm=False, max_cases=1200),
                        tmp_path, store)
    pending_at_generation: list[int] = []
    generate = CaseGenerator.case

    def case(self: CaseGenerator, case_id: int):  # type: ignore[no-untyped-def]
        pending_at_generation.append(len(campaign._unobserved))
        return generate(self, case_id)

    monkeypatch.setattr(CaseGenerator, "case", case)
    observed: list[int] = []
    observe = Campaign._observe

    def recording(self: Campaign, case, outcome) -> None:  # type: ignore[no-untyped-def]
        observed.append(case.case_id)
        observe(self, case, outcome)

    monkeypatch.setattr(Campaign, "_observe", recording)
    judged: list[int] = []
    judge = Campaign._judge

    async def judging(self: Campaign, case, outcome, runner, windowed: bool = False) -> bool:  # type: ignore[no-untyped-def]
        judged.append(case.case_id)
        return await judge(self, case, outcome, runner, windowed)

    monkeypatch.setattr(Campaign, "_judge", judging)
    try:
        assert asyncio.run(campaign.run()) == "completed"
    finally:
        store.close()
    # The runner, the silence book and the campaign's triggers read one check; the strategies that
    # test a candidate frame check it themselves (checked once per layer, it was 2.9 calls a frame).
    assert sum(calls.values()) < 2.0 * len(calls), (sum(calls.values()), len(calls))
    assert len(pending_at_generation) >= 1200 and not any(pending_at_generation)
    assert len(judged) > 900 and observed == judged and not campaign._unobserved  # each one's feedback, in order
