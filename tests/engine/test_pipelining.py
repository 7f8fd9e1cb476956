"""Pipelining against real servers: several cases in flight on one connection, replies matched by
transaction id whatever their order; a window that goes partly unanswered gives back only the
answered run from its start (the rest is sent again alone); a target that mishandles requests
in flight (pymodbus answers one of four) is detected and fuzzed one request at a time; no case
is counted twice or lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from otfuzz.engine.campaign import PIPELINE_TRIAL, Campaign, CampaignConfig
from otfuzz.engine.cases import TestCase
from otfuzz.engine.executor import PIPELINE_DEPTH, CaseRunner, detect_pipelining
from otfuzz.protocols.base import ReplyKind
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.report.results import load_results
from otfuzz.store.evidence import EvidenceStore


def _read(tid: int, code: int = 3, address: int = 0) -> bytes:
    return tid.to_bytes(2, "big") + bytes.fromhex("00000006") + bytes([1, code]) + address.to_bytes(2, "big") + b"\x00\x01"


def _cases(frames: list[bytes]) -> list[TestCase]:
    return [TestCase(i, "boundary", (frame,), "read", f"frame {i}") for i, frame in enumerate(frames)]


def test_a_target_that_frames_by_length_is_pipelined_and_pymodbus_is_not(faulty_server, pymodbus_server) -> None:
    protocol = ModbusTCP()
    host, port = faulty_server()
    handled, why = asyncio.run(detect_pipelining(protocol, host, port, 1.0))
    assert handled, why
    handled, why = asyncio.run(detect_pipelining(protocol, *pymodbus_server, 1.0))
    assert not handled and f"of {PIPELINE_DEPTH} requests sent at once" in why  # it answers one per read of the socket


def test_replies_that_come_out_of_order_are_matched_to_their_cases_by_id(faulty_server) -> None:
    host, port = faulty_server("slow:4")  # the fc 4 reply alone comes 400 ms late
    protocol = ModbusTCP()
    frames = [_read(0x0101), _read(0x0202, code=4), _read(0x0303, address=1), _read(0x0404, address=2)]

    async def run() -> list:
        runner = CaseRunner(protocol, host, port, timeout=1.5, silence_timeout=1.0)
        try:
            return await runner.run_window(_cases(frames))
        finally:
            runner.drop()

    outcomes = asyncio.run(run())
    assert len(outcomes) == 4
    assert [o.reply[:2] for o in outcomes] == [f[:2] for f in frames]
    assert all(o.kind is ReplyKind.NORMAL for o in outcomes)
    assert outcomes[1].latency > 0.35 and all(o.latency < 0.2 for o in (outcomes[0], outcomes[2], outcomes[3]))


def test_a_window_left_partly_unanswered_gives_back_only_the_answered_run_from_its_start(faulty_server) -> None:
    host, port = faulty_server("ignore:4")  # fc 4 is never answered
    protocol = ModbusTCP()
    frames = [_read(0x0101), _read(0x0202, address=1), _read(0x0303, code=4), _read(0x0404, address=2)]

    async def run() -> tuple:
        runner = CaseRunner(protocol, host, port, timeout=1.0, silence_timeout=0.1)
        try:
            outcomes = await runner.run_window(_cases(frames))
            return outcomes, runner.conn
        finally:
            runner.drop()

    outcomes, conn = asyncio.run(run())
    assert [o.reply[:2] for o in outcomes] == [frames[0][:2], frames[1][:2]]  # the fourth was answered, but after a gap
    assert conn is None  # out of step after an incomplete window: the next case gets a fresh connection


def test_faulty_frames_and_frames_without_an_id_of_their_own_go_alone() -> None:
    protocol = ModbusTCP()
    runner = CaseRunner(protocol, "127.0.0.1", 1, timeout=1.0)
    assert runner.can_pipeline(_read(7), [_read(8)])
    assert not runner.can_pipeline(_read(7), [_read(7)])  # the same transaction id twice: replies could not be told apart
    assert not runner.can_pipeline(bytes.fromhex("000700010006010300000001"), [])  # foreign protocol id
    assert not runner.can_pipeline(_read(7)[:-1], [])  # length field past the bytes sent
    assert not runner.can_pipeline(_read(7)[:-2] + b"\x00\x00", [])  # quantity 0: a faulty frame goes alone


def _campaign(tmp_path: Path, port: int, **options: object) -> tuple[Campaign, EvidenceStore]:
    config = CampaignConfig(target=f"modbus://127.0.0.1:{port}", seed=3, confirm=False, **options)  # type: ignore[arg-type]
    store = EvidenceStore.create(tmp_path)
    return Campaign(config, tmp_path, store), store


def test_a_pipelined_campaign_counts_every_case_once_and_sends_the_unanswered_again_alone(faulty_server, tmp_path: Path) -> None:
    _, port = faulty_server("ignore:4")
    campaign, store = _campaign(tmp_path, port, max_cases=800, groups=["boundary", "pairs"])
    try:
        assert asyncio.run(campaign.run()) == "completed"
        per_case = store.counts()
    finally:
        store.close()
    doc = load_results(tmp_path)
    pipelining = doc["search"]["pipelining"]
    assert pipelining["depth"] == PIPELINE_DEPTH and pipelining["windows"] > 50 and pipelining["windows_cut_short"] > 0
    assert doc["totals"]["cases"] == 800
    assert sum(sum(kinds.values()) for kinds in per_case.values()) == 800  # one result per case id, none twice
    assert doc["totals"]["replies"].get("no-reply", 0) > 0  # the fc 4 reads, judged alone after their window
    # every case sent went out once, and those cut out of a window once more, alone
    frames = doc["search"]["requests_sent"]["case_frames"]
    assert doc["totals"]["sent"] < frames <= doc["totals"]["sent"] + pipelining["windows_cut_short"] * (PIPELINE_DEPTH - 1)


def test_a_target_that_leaves_most_windows_incomplete_is_fuzzed_one_request_at_a_time(faulty_server, tmp_path: Path) -> None:
    _, port = faulty_server()
    campaign, store = _campaign(tmp_path, port, max_cases=1)
    try:
        campaign.pipeline_depth = PIPELINE_DEPTH
        for _ in range(PIPELINE_TRIAL - 1):
            campaign._note_window(complete=False)
        assert campaign.pipeline_depth == PIPELINE_DEPTH  # not judged on fewer windows
        campaign._note_window(complete=False)
    finally:
        store.close()
    assert campaign.pipeline_depth == 1 and "switched off" in campaign.pipelining_note
