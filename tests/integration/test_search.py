"""Search power: each strategy reaches the defect of the faulty server planted for it, replay
regenerates feedback and sequence cases byte for byte (also after --resume), and the
connection group stays within its ceilings and stops at Ctrl-C."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from otfuzz.cli import main
from otfuzz.engine.pairwise import covering_array
from otfuzz.report.results import load_results
from targets.servers import TARGETS, free_port, interrupt_when


def test_a_covering_array_holds_every_pair_of_every_two_fields_and_is_deterministic() -> None:
    values = [[0, 1, 2, 3, 4], ["a", "b", "c", "d", "e"], [10, 20, 30, 40, 50]]
    rows = covering_array(values)
    for i in range(3):
        for j in range(i + 1, 3):
            pairs = {(row[i], row[j]) for row in rows}
            assert pairs == {(a, b) for a in range(5) for b in range(5)}, (i, j)
    assert rows == covering_array(values) and len(rows) <= 30  # 25 is the minimum; IPOG stays close


def _campaign(tmp_path: Path, defects: list[str], groups: str, cases: int, *extra: str, server: tuple[str, ...] = (),
              seed: int = 1) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, str(TARGETS / "faulty_modbus.py"), "--port", str(port), "--hang-seconds", "1", *server]
    for defect in defects:
        command += ["--defect", defect]
    run = tmp_path / f"run-{groups}-{seed}"
    status = main(["run", f"modbus://127.0.0.1:{port}", "--cases", str(cases), "--seed", str(seed), "--out", str(run), "--quiet",
                   "--groups", groups, "--target-cmd", shlex.join(command), "--probe-deadline", "0.5",
                   "--recovery-timeout", "3", "--minimise-budget", "16", *extra])
    assert status == 0
    return load_results(run)


def _crashes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["class"] == "crash"]


def test_pairs_reach_a_defect_that_needs_two_fields_off_their_defaults(tmp_path: Path) -> None:
    doc = _campaign(tmp_path, ["pair-crash"], "pairs", 3000)
    [crash] = _crashes(doc)
    frame = bytes.fromhex(crash["reproducer"]["frames_hex"][-1])
    assert frame[6] == 0 and frame[7] == 3 and frame[10:12] == (125).to_bytes(2, "big")  # unit 0 and quantity 125
    coverage = doc["search"]["pairs"]
    assert coverage["covered"] > 0 and coverage["by_request_type"]["read_holding_registers"]["total"] > 0


def test_pairs_and_boundary_alone_do_not_get_there_by_one_field_at_a_time(tmp_path: Path) -> None:
    assert not _crashes(_campaign(tmp_path, ["pair-crash"], "boundary", 1500))


def test_the_dictionary_reaches_a_magic_value(tmp_path: Path) -> None:
    doc = _campaign(tmp_path, ["magic-crash"], "mutation", 10000)
    [crash] = _crashes(doc)
    assert "KeyError" in crash["target_evidence"]["report"]
    assert "dead" in "".join(crash["reproducer"]["frames_hex"])


def test_sequences_reach_a_defect_that_needs_state_an_earlier_request_set(tmp_path: Path) -> None:
    doc = _campaign(tmp_path, ["state-crash"], "sequence", 1500)
    [crash] = _crashes(doc)
    frames = [bytes.fromhex(h) for h in crash["reproducer"]["frames_hex"]]
    assert len(frames) >= 2 and frames[-1][7] == 3 and any(f[7] in (6, 16) for f in frames[:-1])


def test_a_crash_replay_cuts_the_frames_sent_after_the_target_died(tmp_path: Path) -> None:
    """A reproducer ends with the frame the target died on: a frame sent after it went to a dead
    target and must not label the finding, even when no minimisation trial is left to drop it."""
    import asyncio

    from otfuzz.engine.cases import TestCase
    from otfuzz.engine.executor import CaseRunner
    from otfuzz.engine.investigate import Investigator
    from otfuzz.monitor.anomaly import AnomalyClass
    from otfuzz.monitor.probe import HealthProbe
    from otfuzz.monitor.process import TargetProcess
    from otfuzz.protocols.modbus import ModbusTCP

    modbus, port = ModbusTCP(), free_port()
    by_name = {t.name: t for t in modbus.templates()}
    write = by_name["write_single_register"].message.encode({**by_name["write_single_register"].message.defaults(),
                                                               **dict(by_name["write_single_register"].values),
                                                               "address": 256, "value": 1})
    read = by_name["read_holding_registers"].message.encode({**by_name["read_holding_registers"].message.defaults(),
                                                               **dict(by_name["read_holding_registers"].values),
                                                               "address": 256, "quantity": 4})
    after = by_name["read_coils"].encode()
    process = TargetProcess(shlex.join([sys.executable, str(TARGETS / "faulty_modbus.py"), "--port", str(port),
                                        "--defect", "state-crash"]), tmp_path / "target.log")
    history = [TestCase(1, "sequence", (write,), "write_single_register", "write"),
               TestCase(2, "sequence", (read,), "read_holding_registers", "read"),
               TestCase(3, "sequence", (after,), "read_coils", "sent after the crash")]

    async def run() -> dict[str, Any]:
        investigator = Investigator(modbus, HealthProbe(modbus, "127.0.0.1", port, 1.0),
                                    lambda: CaseRunner(modbus, "127.0.0.1", port, timeout=0.5), process,
                                    recovery_timeout=3.0, minimise_budget=0, log=lambda kind, detail: None)
        process.start()
        assert await investigator.wait_ready()
        return await investigator.confirm_and_minimise(AnomalyClass.CRASH, history)

    try:
        result = asyncio.run(asyncio.wait_for(run(), timeout=60))
    finally:
        process.stop()
    assert result["reproducible"] is True
    assert result["reproducer"]["case_ids"] == [1, 2]
    assert result["reproducer"]["frames_hex"] == [write.hex(), read.hex()]


def test_connection_patterns_reach_a_slow_read_hang_and_connection_exhaustion(tmp_path: Path) -> None:
    doc = _campaign(tmp_path, ["slow-read-hang", "connection-exhaustion"], "connection", 8, "--hold-time", "1.5",
                    "--max-connections", "40", server=("--max-clients", "15"))
    kinds = {f["request_type"] for f in doc["findings"] if f["class"] in ("hang", "unresponsive-after", "degradation")}
    assert {"connection:slow-read", "connection:many-connections"} <= kinds, [f["title"] for f in doc["findings"]]
    # Keyed by the pattern, not by the valid request it carries: otherwise every valid read would
    # count as this finding's known input and be held back for the rest of the campaign.
    for finding in doc["findings"]:
        assert "|connection:" in finding["key"] or "|evidence: " in finding["key"], finding["key"]
        assert all(t.startswith("connection:") for t in finding["triggers"]), finding["triggers"]
    for finding in doc["findings"]:
        assert finding["confirmation"]["status"] in ("confirmed", "not reproduced"), finding["confirmation"]


def test_a_target_that_stalls_during_a_pattern_and_answers_late_is_a_hang_not_degradation(tmp_path: Path) -> None:
    # The server blocks 1.5 s; the probe beside the pattern waits up to 2.5 s, so it is answered,
    # late: a stall that ends by itself is a hang, however slow its one reply.
    doc = _campaign(tmp_path, ["slow-read-hang"], "connection", 8, "--hold-time", "1.5", "--probe-deadline", "2.5",
                    server=("--hang-seconds", "1.5"))
    slow_read = [f for f in doc["findings"] if f["request_type"] == "connection:slow-read"]
    assert [f["class"] for f in slow_read] == ["hang"], [(f["class"], f["title"]) for f in doc["findings"]]


def test_a_healthy_server_gives_no_connection_finding(tmp_path: Path) -> None:
    doc = _campaign(tmp_path, [], "connection", 8, "--hold-time", "1", "--max-connections", "30")
    assert doc["findings"] == [] and doc["totals"]["cases"] == 8


def test_the_connection_group_stays_within_its_ceiling_and_stops_at_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    peak = tmp_path / "peak"
    command = [sys.executable, str(TARGETS / "faulty_modbus.py"), "--port", str(port), "--peak-file", str(peak)]
    run = tmp_path / "run"
    argv = [sys.executable, "-c", "import sys; from otfuzz.cli import main; sys.exit(main())", "run",
            f"modbus://127.0.0.1:{port}", "--cases", "1000", "--groups", "connection", "--out", str(run), "--quiet",
            "--target-cmd", shlex.join(command), "--hold-time", "20", "--max-connections", "25"]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (peak.exists() and int(peak.read_text() or 0) >= 10):
            time.sleep(0.1)
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert child.wait(15) == 130
        assert time.monotonic() - started < 8  # a 20 s hold is not waited out
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    # the pattern's connections, the kept probe connection and the fresh one that decides a failure
    assert 10 <= int(peak.read_text()) <= 25 + 3


def test_replay_regenerates_feedback_and_sequence_cases_byte_for_byte_also_after_resume(fresh_pymodbus, tmp_path: Path,
                                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    host, port = fresh_pymodbus
    run = tmp_path / "run"
    interrupt_when(["run", f"modbus://{host}:{port}", "--cases", "6000", "--seed", "4", "--out", str(run), "--quiet",
                    "--groups", "mutation,sequence", "--no-confirm"], run, lambda store: store.lineage_count() > 50, 30)
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    doc = load_results(run)
    assert doc["search"]["corpus_size"] > 5
    from otfuzz.store.evidence import EvidenceStore

    store = EvidenceStore.open(run)
    try:
        derived = {a["case_id"] for a in doc["anomalies"] if (store.lineage_of(a["case_id"]) or (None, 0))[0]}
    finally:
        store.close()
    checked = 0
    candidates = [a for a in doc["anomalies"] if a["group"] == "sequence" or a["case_id"] in derived]
    # spread over the run, before and after the resume, the last one included (each replay
    # regenerates the campaign up to its case)
    sample = candidates[:: max(1, len(candidates) // 10)] + candidates[-1:]
    for anomaly in sample:
        capsys.readouterr()
        assert main(["replay", str(run), "--case", str(anomaly["case_id"]), "--dry-run", "--json"]) == 0
        replayed = json.loads(capsys.readouterr().out)["frames_hex"]
        assert replayed[: len(anomaly["frames_hex"])] == anomaly["frames_hex"], anomaly["description"]
        checked += 1
    assert checked >= 5 and derived, (checked, len(derived))
