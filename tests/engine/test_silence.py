"""Learned silence against real servers: a kind of faulty frame the target always dropped is
waited for only briefly, yet an answer that still comes is read on its parked connection and
recorded against its own case; the first answer ends the learning for that kind; counts equal
the case ids issued; `--no-pipeline` keeps the full wait."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from otfuzz.engine.campaign import Campaign, CampaignConfig
from otfuzz.engine.cases import TestCase
from otfuzz.engine.executor import CaseRunner, LateReply
from otfuzz.engine.silence import LEARN_AFTER, SilenceBook
from otfuzz.protocols.base import ReplyKind
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.report.results import load_results
from otfuzz.store.evidence import EvidenceStore

INPUTS_QUANTITY_ZERO = bytes.fromhex("000700000006010400000000")  # fc 4, quantity 0: exception 3
VALID_READ = bytes.fromhex("000800000006010300000001")


def _taught(protocol: ModbusTCP, frame: bytes) -> tuple[SilenceBook, str]:
    book = SilenceBook(protocol)
    key = book.key(frame)
    for _ in range(LEARN_AFTER):
        book.note(key, answered=False)
    assert book.learned(key)
    return book, key


def test_a_late_answer_to_a_learned_silent_kind_is_read_on_its_parked_connection_for_its_own_case(faulty_server) -> None:
    host, port = faulty_server("slow:4")  # fc 4 answers come 400 ms late
    protocol = ModbusTCP()
    book, key = _taught(protocol, INPUTS_QUANTITY_ZERO)

    async def run() -> tuple:
        runner = CaseRunner(protocol, host, port, timeout=1.5, silence_timeout=0.8, silence=book)
        try:
            started = time.perf_counter()
            quiet = await runner.run(TestCase(1, "boundary", (INPUTS_QUANTITY_ZERO,), "read_input_registers", "dropped so far"))
            waited = time.perf_counter() - started
            after = await runner.run(TestCase(2, "boundary", (VALID_READ,), "read_holding_registers", "next one"))
            late = await runner.await_late(1, time.perf_counter() + 1.5)
        finally:
            runner.drop()
        return quiet, waited, after, late

    quiet, waited, after, late = asyncio.run(run())
    assert quiet.kind is ReplyKind.NO_REPLY and waited < 0.3  # not the 0.8 s silence timeout
    assert after.kind is ReplyKind.NORMAL and after.reply[:2] == VALID_READ[:2]  # its own answer, on a fresh connection
    assert isinstance(late, LateReply) and late.quiet and late.case.case_id == 1
    assert late.kind is ReplyKind.EXCEPTION and late.reply[:2] == INPUTS_QUANTITY_ZERO[:2] and 0.35 < late.latency < 1.0
    assert not book.learned(key)  # answered once: never cut short again


def test_an_unlearned_kind_waits_the_silence_timeout_and_its_answer_ends_the_learning(faulty_server) -> None:
    host, port = faulty_server("slow:4")
    protocol = ModbusTCP()
    book = SilenceBook(protocol)
    key = book.key(INPUTS_QUANTITY_ZERO)
    for _ in range(LEARN_AFTER - 1):
        book.note(key, answered=False)

    async def run():
        runner = CaseRunner(protocol, host, port, timeout=1.5, silence_timeout=0.8, silence=book)
        try:
            return await runner.run(TestCase(1, "boundary", (INPUTS_QUANTITY_ZERO,), "read_input_registers", "in time"))
        finally:
            runner.drop()

    outcome = asyncio.run(run())
    assert outcome.kind is ReplyKind.EXCEPTION and outcome.latency > 0.35  # waited, and was answered in time
    book.note(key, answered=False)
    assert not book.learned(key)


def _campaign(tmp_path: Path, port: int, name: str, **options: object) -> tuple[Campaign, EvidenceStore]:
    config = CampaignConfig(target=f"modbus://127.0.0.1:{port}", seed=5, confirm=False, **options)  # type: ignore[arg-type]
    (tmp_path / name).mkdir()
    store = EvidenceStore.create(tmp_path / name)
    return Campaign(config, tmp_path / name, store), store


def test_counts_equal_the_case_ids_issued_and_dropped_kinds_are_learned(faulty_server, tmp_path: Path) -> None:
    _, port = faulty_server()  # drops every frame whose protocol id is not 0
    totals = {}
    for name, pipeline in (("fast", True), ("fragile", False)):
        campaign, store = _campaign(tmp_path, port, name, max_cases=600, pipeline=pipeline)
        try:
            assert asyncio.run(campaign.run()) == "completed"
        finally:
            store.close()
        doc = load_results(tmp_path / name)
        totals[name] = doc["totals"]["cases"], campaign.silence
    assert totals["fast"][0] == 600 and totals["fragile"][0] == 600
    assert totals["fast"][1] is not None and totals["fast"][1].as_record()["learned_silent"] >= 1
    assert totals["fragile"][1] is None  # --no-pipeline: every faulty frame waits the full silence timeout


def test_a_quiet_late_malformed_answer_is_recorded_against_its_own_case(faulty_server, tmp_path: Path) -> None:
    _, port = faulty_server()
    campaign, store = _campaign(tmp_path, port, "late", max_cases=1)
    case = TestCase(41, "boundary", (INPUTS_QUANTITY_ZERO,), "read_input_registers", "answered after the short wait")
    late = LateReply(case, INPUTS_QUANTITY_ZERO, bytes.fromhex("0007000000030184"), 0.004, ReplyKind.MALFORMED,
                     "reply shorter than its length field", time.perf_counter(), 0, quiet=True)

    async def run() -> None:
        await campaign.start(False)
        runner = campaign._new_runner()
        try:
            await campaign._quiet_reply(late, runner)
        finally:
            runner.drop()
            campaign.probe.close()

    try:
        asyncio.run(run())
        anomalies = store.anomalies()
    finally:
        store.close()
    assert [(a["case_id"], a["class"]) for a in anomalies] == [(41, "malformed-reply")]
    assert anomalies[0]["history_case_ids"] == [41]  # its own case, not what the next connection carried
