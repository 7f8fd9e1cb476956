"""Learned silence against real servers: a kind of faulty frame the target always dropped is
waited for only briefly, yet an answer that still comes is read on its parked connection and
recorded against its own case; the first answer ends the learning for that kind; counts equal
the case ids issued; a drop the target always makes draws no probe; spare connections are ready
and never stale; `--no-pipeline` keeps the full wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from otfuzz.engine.campaign import Campaign, CampaignConfig
from otfuzz.engine.cases import TestCase
from otfuzz.engine.executor import QUIET_CEILING, ROOM_BESIDE_PARKS, CaseOutcome, CaseRunner, LateReply, detect_connection_room
from otfuzz.engine.silence import LEARN_AFTER, SilenceBook
from otfuzz.protocols.base import ReplyKind
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.report.results import load_results
from otfuzz.store.evidence import EvidenceStore

INPUTS_QUANTITY_ZERO = bytes.fromhex("000700000006010400000000")  # fc 4, quantity 0: exception 3
VALID_READ = bytes.fromhex("000800000006010300000001")


def _run_alone(runner: CaseRunner, case: TestCase) -> CaseOutcome:
    """One case on its own runner, whose connections are closed after it."""
    async def run() -> CaseOutcome:
        try:
            return await runner.run(case)
        finally:
            runner.drop()

    return asyncio.run(run())


def _taught(protocol: ModbusTCP, frame: bytes) -> tuple[SilenceBook, tuple[str, ...]]:
    book = SilenceBook(protocol)
    kinds = book.kinds(frame)
    for _ in range(LEARN_AFTER):
        book.note(kinds, answered=False)
    assert book.learned(kinds)
    return book, kinds


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
    key = book.kinds(INPUTS_QUANTITY_ZERO)
    for _ in range(LEARN_AFTER - 1):
        book.note(key, answered=False)

    outcome = _run_alone(CaseRunner(protocol, host, port, timeout=1.5, silence_timeout=0.8, silence=book),
                         TestCase(1, "boundary", (INPUTS_QUANTITY_ZERO,), "read_input_registers", "in time"))
    assert outcome.kind is ReplyKind.EXCEPTION and outcome.latency > 0.35  # waited, and was answered in time
    book.note(key, answered=False)
    assert not book.learned(key)


def _campaign(tmp_path: Path, port: int, name: str, **options: object) -> tuple[Campaign, EvidenceStore]:
    config = CampaignConfig(target=f"modbus://127.0.0.1:{port}", seed=5, confirm=False, **options)  # type: ignore[arg-type]
    (tmp_path / name).mkdir()
    store = EvidenceStore.create(tmp_path / name)
    return Campaign(config, tmp_path / name, store), store


def _on_a_started_campaign(campaign: Campaign, body: Callable[[CaseRunner], Awaitable[object]]) -> None:
    """Run `body` with a runner of the started campaign; the runner's connections and the
    probe's are closed after it."""
    async def run() -> None:
        await campaign.start(False)
        runner = campaign._new_runner()
        try:
            await body(runner)
        finally:
            runner.drop()
            campaign.probe.close()

    asyncio.run(run())


def test_counts_equal_the_case_ids_issued_and_dropped_kinds_are_learned(faulty_server, tmp_path: Path) -> None:
    _, port = faulty_server()  # drops every frame whose protocol id is not 0
    totals = {}
    for name, pipeline in (("fast", True), ("fragile", False)):
        campaign, store = _campaign(tmp_path, port, name, max_cases=600, pipeline=pipeline, groups=["structural"])
        try:
            assert asyncio.run(campaign.run()) == "completed"
        finally:
            store.close()
        doc = load_results(tmp_path / name)
        totals[name] = doc["totals"]["cases"], campaign.silence, len(doc["probes"])
    assert totals["fast"][0] == 600 and totals["fragile"][0] == 600
    # a run of drops the target always makes is no reason to probe it: far fewer probes
    assert totals["fast"][2] * 2 < totals["fragile"][2], (totals["fast"][2], totals["fragile"][2])
    assert totals["fast"][1] is not None and totals["fast"][1].as_record()["learned_silent"] >= 1
    assert totals["fragile"][1] is None  # --no-pipeline: every faulty frame waits the full silence timeout


def test_a_quiet_late_malformed_answer_is_recorded_against_its_own_case(faulty_server, tmp_path: Path) -> None:
    _, port = faulty_server()
    campaign, store = _campaign(tmp_path, port, "late", max_cases=1)
    case = TestCase(41, "boundary", (INPUTS_QUANTITY_ZERO,), "read_input_registers", "answered after the short wait")
    late = LateReply(case, INPUTS_QUANTITY_ZERO, bytes.fromhex("0007000000030184"), 0.004, ReplyKind.MALFORMED,
                     "reply shorter than its length field", time.perf_counter(), 0, quiet=True)

    try:
        _on_a_started_campaign(campaign, lambda runner: campaign._quiet_reply(late, runner))
        anomalies = store.anomalies()
    finally:
        store.close()
    assert [(a["case_id"], a["class"]) for a in anomalies] == [(41, "malformed-reply")]
    assert anomalies[0]["history_case_ids"] == [41]  # its own case, not what the next connection carried


FOREIGN_PROTOCOL_READ = bytes.fromhex("000900070006010300000001")  # protocol id 7: dropped by faulty_modbus.py
FOREIGN_PROTOCOL_WRITE = bytes.fromhex("000a00070006010600010005")


def test_a_rule_learned_on_one_request_type_shortens_the_wait_for_every_frame_that_breaks_it() -> None:
    protocol = ModbusTCP()
    book = SilenceBook(protocol)
    for _ in range(LEARN_AFTER):
        book.note(book.kinds(FOREIGN_PROTOCOL_READ), answered=False)
    assert book.learned(book.kinds(FOREIGN_PROTOCOL_WRITE))  # same fault, another request type
    assert not book.learned(book.kinds(INPUTS_QUANTITY_ZERO))  # another fault
    # an answer to any frame breaking the rule ends its learning, also beside other rules
    both = bytes.fromhex("000b00070006010300000000")  # protocol id 7 and quantity 0
    def rules(kinds: tuple[str, ...]) -> set[str]:
        return {k for k in kinds if "|" not in k}  # (not those learned on one request type)

    assert rules(book.kinds(both)) == rules(book.kinds(FOREIGN_PROTOCOL_READ)) | rules(book.kinds(INPUTS_QUANTITY_ZERO))
    assert book.learned(book.kinds(both))
    book.note(book.kinds(both), answered=True)
    assert not book.learned(book.kinds(FOREIGN_PROTOCOL_READ))


def test_a_rule_answered_on_one_request_type_is_still_learned_on_another_that_always_drops_it() -> None:
    book = SilenceBook(ModbusTCP())
    book.note(book.kinds(FOREIGN_PROTOCOL_READ), answered=True)  # a read with protocol id 7 was answered once
    write = book.kinds(FOREIGN_PROTOCOL_WRITE)
    assert write == ("protocol_id=# is not a defined value", "write_single_register|protocol_id=# is not a defined value")
    for _ in range(LEARN_AFTER - 1):
        book.note(write, answered=False)
    assert not book.learned(write)
    book.note(write, answered=False)
    assert book.learned(write)  # on writes, that rule was always dropped
    assert not book.learned(book.kinds(FOREIGN_PROTOCOL_READ))  # on reads it was answered: always waited for in full
    record = book.as_record()
    assert record["learned_silent"] == 0 and record["learned_silent_on_a_request_type"] == 1
    book.note(write, answered=True)
    assert not book.learned(write)


def test_a_set_of_rules_always_dropped_is_learned_though_each_rule_was_answered_elsewhere() -> None:
    """pymodbus answered a frame or two whose ADU ran past 256 bytes but dropped every one that
    also had a byte count off its quantity: that set is learned, not the rule alone."""
    book = SilenceBook(ModbusTCP())
    book.note(book.kinds(FOREIGN_PROTOCOL_READ), answered=True)  # each rule answered once on its own
    book.note(book.kinds(INPUTS_QUANTITY_ZERO), answered=True)
    both = book.kinds(bytes.fromhex("000b00070006010300000000"))  # protocol id 7 and quantity 0
    for _ in range(LEARN_AFTER - 1):
        book.note(both, answered=False)
    assert not book.learned(both)
    book.note(both, answered=False)
    assert book.learned(both)
    assert not book.learned(book.kinds(FOREIGN_PROTOCOL_READ)) and not book.learned(book.kinds(INPUTS_QUANTITY_ZERO))
    assert book.as_record()["learned_silent_sets"] == 1
    book.note(both, answered=True)  # the first answer to the set ends its learning
    assert not book.learned(both)


def test_a_spare_connection_is_ready_for_the_next_case_and_a_dead_one_is_never_used(faulty_server) -> None:
    host, port = faulty_server()
    protocol = ModbusTCP()

    async def run() -> tuple:
        runner = CaseRunner(protocol, host, port, timeout=1.0, silence_timeout=0.05)
        runner.spares = True
        try:
            first = await runner.run(TestCase(1, "boundary", (VALID_READ,), "read_holding_registers", "first"))
            await asyncio.sleep(0.1)
            spare = runner._spare.result()  # opened while the first case ran
            dropped = await runner.run(TestCase(2, "boundary", (FOREIGN_PROTOCOL_READ,), "read_holding_registers", "dropped"))
            after = await runner.run(TestCase(3, "boundary", (VALID_READ,), "read_holding_registers", "on the spare"))
            used = runner.conn is spare
            await asyncio.sleep(0.1)
            stale = runner._spare.result()
            stale.close()  # as when the target went away: the next case opens its own
            await asyncio.sleep(0.05)
            runner.drop_current()
            last = await runner.run(TestCase(4, "boundary", (VALID_READ,), "read_holding_registers", "fresh"))
            fresh = runner.conn is not stale and runner.conn is not None and runner.conn.alive
        finally:
            runner.drop()
        return first, dropped, after, used, last, fresh, runner._spare

    first, dropped, after, used, last, fresh, left = asyncio.run(run())
    assert first.kind is ReplyKind.NORMAL and dropped.kind is ReplyKind.NO_REPLY
    assert after.kind is ReplyKind.NORMAL and after.reply[:2] == VALID_READ[:2] and used
    assert last.kind is ReplyKind.NORMAL and fresh
    assert left is None  # drop() closes the spare too


def test_a_drop_the_target_always_makes_is_marked_expected_and_is_not_parked_on_a_single_association(faulty_server) -> None:
    host, port = faulty_server()  # drops every frame whose protocol id is not 0
    protocol = ModbusTCP()
    book, _ = _taught(protocol, FOREIGN_PROTOCOL_READ)

    async def run(single: bool) -> tuple:
        protocol.single_association = single  # (an instance attribute: DNP3 sets it on the class)
        runner = CaseRunner(protocol, host, port, timeout=1.0, silence_timeout=0.2, silence=book)
        try:
            started = time.perf_counter()
            outcome = await runner.run(TestCase(1, "structural", (FOREIGN_PROTOCOL_WRITE,), "write_single_register", "dropped"))
            return outcome, time.perf_counter() - started, len(runner.quiet)
        finally:
            runner.drop()

    parked, parked_s, quiet = asyncio.run(run(False))
    waited, waited_s, none_quiet = asyncio.run(run(True))
    assert parked.kind is ReplyKind.NO_REPLY and parked.expected_silence and quiet == 1 and parked_s < 0.1
    assert waited.kind is ReplyKind.NO_REPLY and waited.expected_silence and none_quiet == 0 and waited_s >= 0.2
    first = _run_alone(CaseRunner(protocol, host, port, timeout=1.0, silence_timeout=0.05, silence=SilenceBook(protocol)),
                       TestCase(2, "structural", (FOREIGN_PROTOCOL_WRITE,), "write_single_register", "first drop"))
    assert first.kind is ReplyKind.NO_REPLY and not first.expected_silence  # the first drops still count as silence


def test_a_quiet_case_answered_after_all_is_counted_by_its_answer_not_as_no_reply(faulty_server, tmp_path: Path) -> None:
    _, port = faulty_server()
    campaign, store = _campaign(tmp_path, port, "recount", max_cases=4)
    exception = bytes.fromhex("000700000003018403")  # illegal data value, for fc 4
    answered = CaseOutcome(ReplyKind.NORMAL, "read holding registers", bytes.fromhex("0008000000050103020000"), 0.001, 0)

    async def judge_all(runner: CaseRunner) -> None:
        ids = [campaign._take_id() for _ in range(4)]
        cases = [TestCase(i, "boundary", (INPUTS_QUANTITY_ZERO if i % 2 == 0 else VALID_READ,), "read_input_registers", "")
                 for i in ids]
        for quiet, flush_between in ((cases[0], True), (cases[2], False)):
            parked = CaseOutcome(ReplyKind.NO_REPLY, "timeout", None, 0.0, 0, (), True, expected_silence=True)
            assert await campaign._judge(quiet, parked, runner)
            if flush_between:
                campaign._flush()  # committed as no reply before its answer is read
            runner._late.append(LateReply(quiet, INPUTS_QUANTITY_ZERO, exception, 0.004, ReplyKind.EXCEPTION,
                                          "illegal data value", time.perf_counter(), 0, quiet=True))
            assert await campaign._judge(cases[quiet.case_id + 1], answered, runner)
        campaign._flush()

    try:
        _on_a_started_campaign(campaign, judge_all)
        counts = store.counts()
    finally:
        store.close()
    assert counts["boundary"].get("no-reply", 0) == 0 and counts["boundary"]["exception"] == 2, counts
    assert sum(counts["boundary"].values()) == 4  # every case once


def _echo(transaction_id: int, data_bytes: int) -> bytes:
    """Diagnostics 8/0 (return query data) with `data_bytes` of data: past 250 the ADU is longer
    than the 260-byte maximum (the same two rules broken); pymodbus still echoes up to 254 and
    drops longer ones."""
    pdu = bytes([0x08, 0, 0]) + bytes(data_bytes)
    return transaction_id.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + b"\x01" + pdu


def test_a_kind_answered_when_short_is_learned_silent_above_the_longest_frame_answered() -> None:
    book = SilenceBook(ModbusTCP())
    answered, longer = _echo(1, 254), [_echo(1, n) for n in (300, 280, 400, 290, 350)]
    assert book.kinds(answered) == book.kinds(longer[0])  # the sizes are blanked: one kind
    kinds = book.kinds(answered)
    book.note(kinds, True, len(answered))
    for frame in longer[:LEARN_AFTER - 1]:
        book.note(kinds, False, len(frame))
    assert not book.learned(kinds, 500)
    book.note(kinds, False, len(longer[LEARN_AFTER - 1]))  # 300, 280, 400 and 290 dropped: learned from 400 on
    assert book.learned(kinds, len(longer[2])) and book.learned(kinds, 10_000)
    assert not book.learned(kinds, len(_echo(1, 399))) and not book.learned(kinds, len(answered)) and not book.learned(kinds)
    assert book.as_record()["learned_silent_above_a_length"] >= 1
    book.note(kinds, True, len(_echo(1, 320)))  # answered longer: the bar rises, and the learning starts again above it
    assert not book.learned(kinds, len(longer[2]))
    for n in (330, 335, 340):
        book.note(kinds, False, len(_echo(1, n)))
    assert book.learned(kinds, len(longer[2])) and not book.learned(kinds, len(_echo(1, 399)))  # 400 still counts
    book.note(kinds, False, len(_echo(1, 345)))
    assert book.learned(kinds, len(_echo(1, 345))) and not book.learned(kinds, len(_echo(1, 344)))


def test_against_pymodbus_a_frame_longer_than_any_answered_of_its_kind_is_parked_and_a_shorter_one_waited_for(
        fresh_pymodbus) -> None:
    host, port = fresh_pymodbus
    protocol = ModbusTCP()
    book = SilenceBook(protocol)

    async def run() -> list[tuple[ReplyKind, bool, float]]:
        runner = CaseRunner(protocol, host, port, timeout=1.0, silence_timeout=0.3, silence=book)
        results = []
        try:
            for case_id, data in enumerate((254, 300, 310, 320, 330, 400, 252)):
                started = time.perf_counter()
                outcome = await runner.run(TestCase(case_id, "mutation", (_echo(case_id + 1, data),), "diagnostics", f"{data} bytes"))
                results.append((outcome.kind, outcome.expected_silence, time.perf_counter() - started))
        finally:
            runner.drop()
        return results

    results = asyncio.run(run())
    first, *dropped, learned, shorter = results
    assert first[0] is not ReplyKind.NO_REPLY  # pymodbus answers an ADU of 264 bytes
    assert all(kind is ReplyKind.NO_REPLY and waited >= 0.3 for kind, _, waited in dropped)  # longer ones: dropped, waited for
    assert learned[0] is ReplyKind.NO_REPLY and learned[1] and learned[2] < 0.15  # then parked at once
    assert book.kinds(_echo(1, 252)) == book.kinds(_echo(1, 400))  # the same kind, shorter
    assert shorter[0] is not ReplyKind.NO_REPLY  # so it is still waited for, and answered


def test_the_connection_room_test_counts_every_connection_pymodbus_serves_and_stops_where_a_target_stalls(
        fresh_pymodbus, faulty_server) -> None:
    protocol = ModbusTCP()
    wanted = QUIET_CEILING + ROOM_BESIDE_PARKS
    served, note = asyncio.run(detect_connection_room(protocol, *fresh_pymodbus, 1.0))
    assert served == wanted and "each served" in note
    # stops answering anyone while more than 12 connections are open
    stalling = faulty_server(hang_seconds=0.5, extra=("--defect", "connection-exhaustion", "--max-clients", "12"))
    served, note = asyncio.run(detect_connection_room(protocol, *stalling, 0.3))
    assert served == 12 and "connection 13 of 19 was not served (timeout)" in note, note


def test_a_campaign_takes_as_many_quiet_parks_as_the_target_showed_room_for(fresh_pymodbus, faulty_server, tmp_path: Path) -> None:
    stalling = faulty_server(hang_seconds=0.5, extra=("--defect", "connection-exhaustion", "--max-clients", "12"))
    narrow = faulty_server(hang_seconds=0.5, extra=("--defect", "connection-exhaustion", "--max-clients", "8"))
    parks = {}
    for name, (_, port) in (("pymodbus", fresh_pymodbus), ("stalling", stalling), ("narrow", narrow)):
        campaign, store = _campaign(tmp_path, port, name, max_cases=400, groups=["structural"])
        try:
            assert asyncio.run(campaign.run()) == "completed"
        finally:
            store.close()
        doc = load_results(tmp_path / name)
        assert doc["totals"]["cases"] == 400
        parks[name] = doc["search"]["quiet_parks"], [f["class"] for f in doc["findings"]]
    assert parks["pymodbus"][0]["per_worker"] == QUIET_CEILING
    # 11 served beside the health probe's own: 7 beside the case's, a spare, a parked one and one closing: the usual four
    assert parks["stalling"][0]["per_worker"] == CaseRunner.MAX_QUIET and "connection 12 of 19 was not served" in parks["stalling"][0]["note"]
    assert parks["stalling"][1] == []  # its stall during the test at the start is no finding of any case
    # 7 served beside the probe's: 3 beside the case's, a spare, a parked one and one closing
    assert parks["narrow"][0]["per_worker"] == 3 and parks["narrow"][1] == [], parks["narrow"]
