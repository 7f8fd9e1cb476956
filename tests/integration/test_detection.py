"""Every anomaly class is detected, classified, confirmed by replay and minimised.

The target is the project's own faulty Modbus server, started and restarted by otfuzz itself
through --target-cmd, with one fault switched on per test. Boundary cases of read coils (fc 1)
start with valid requests (transaction id boundaries), so case 0 already triggers the fault.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any


from otfuzz.cli import main
from otfuzz.report.results import load_results
from targets.servers import TARGETS, free_port


def run_against_faulty(tmp_path: Path, *faults: str, cases: int = 1, extra: tuple[str, ...] = (), server_args: tuple[str, ...] = ()) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, str(TARGETS / "faulty_modbus.py"), "--port", str(port), *server_args]
    for fault in faults:
        command += ["--fault", fault]
    run = tmp_path / "run"
    status = main([
        "run", f"modbus://127.0.0.1:{port}", "--cases", str(cases), "--seed", "1", "--groups", "boundary",
        "--out", str(run), "--quiet", "--target-cmd", shlex.join(command), "--probe-deadline", "0.5",
        "--recovery-timeout", "1.5", "--minimise-budget", "24", *extra,
    ])
    assert status == 0
    return load_results(run)


def only(results: dict[str, Any], anomaly_class: str) -> dict[str, Any]:
    found = [a for a in results["anomalies"] if a["class"] == anomaly_class]
    assert found, f"no {anomaly_class} in {[a['class'] for a in results['anomalies']]}"
    return found[0]


def assert_confirmed_and_minimised(anomaly: dict[str, Any]) -> None:
    assert anomaly["reproducible"] is True
    assert anomaly["confirmation"]["status"] == "confirmed"
    assert anomaly["reproducer"]["minimised"] is True
    reproducer = [bytes.fromhex(h) for h in anomaly["reproducer"]["frames_hex"]]
    original = [bytes.fromhex(h) for h in anomaly["frames_hex"]]
    assert len(reproducer) <= len(original)
    assert len(reproducer[-1]) <= len(original[-1])
    assert reproducer[-1][7:8] == b"\x01"  # the function code that triggers the fault survives


def test_crash_is_detected_with_signal_and_stderr_then_confirmed_after_restart(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, "crash:1")
    anomaly = only(results, "crash")
    assert anomaly["case_id"] == 0
    assert anomaly["target_exit"]["signal"] == "SIGSEGV"
    assert "crash triggered" in anomaly["target_exit"]["stderr_tail"]
    assert_confirmed_and_minimised(anomaly)
    assert any(e["kind"] == "restart" for e in results["events"])


def test_transient_hang_is_told_apart_from_a_crash(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, "hang:1", server_args=("--hang-seconds", "1.0"))
    anomaly = only(results, "hang")
    assert not any(p["ok"] for p in anomaly["probes"][:1])
    assert anomaly["probes"][-1]["ok"] is True  # it came back by itself
    assert_confirmed_and_minimised(anomaly)


def test_target_that_stops_answering_for_good_is_unresponsive_after(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, "unresponsive:1")
    anomaly = only(results, "unresponsive-after")
    assert not any(p["ok"] for p in anomaly["probes"])
    assert_confirmed_and_minimised(anomaly)


def test_latency_far_above_baseline_is_degradation(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, "degrade:1", server_args=("--degrade-ms", "250"))
    anomaly = only(results, "degradation")
    slow = [p["latency_ms"] for p in anomaly["probes"] if p["latency_ms"] is not None]
    assert slow and min(slow) >= 200
    assert results["liveness"]["baseline_ms"]["p95"] < 50
    assert_confirmed_and_minimised(anomaly)


def test_malformed_reply_is_recorded_with_the_reply_bytes(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, "malformed:1")
    anomaly = only(results, "malformed-reply")
    assert anomaly["reply_hex"]
    assert_confirmed_and_minimised(anomaly)


def test_normal_answer_to_an_out_of_range_quantity_is_a_spec_violation(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, "specviolation:1", cases=60)
    anomaly = only(results, "spec-violation")
    assert "quantity" in anomaly["reply_detail"]
    assert_confirmed_and_minimised(anomaly)
    # Every other case of the run was answered as the specification says.
    assert set(a["class"] for a in results["anomalies"]) == {"spec-violation"}


def test_connection_reset_instead_of_an_answer(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, "reset:1")
    anomaly = only(results, "connection-reset")
    assert anomaly["reply_kind"] == "reset"
    assert_confirmed_and_minimised(anomaly)


def test_healthy_faulty_server_without_faults_yields_no_anomaly(tmp_path: Path) -> None:
    results = run_against_faulty(tmp_path, cases=400, extra=("--groups", "boundary,structural,mutation,sequence"))
    assert results["totals"]["cases"] == 400
    assert results["anomalies"] == []


def test_target_that_dies_without_target_cmd_ends_the_run_resumably(tmp_path: Path, capsys) -> None:
    """Exit 3 with one line naming the problem; the crash is kept; --resume continues after a restart."""
    from targets.servers import script, start_server, stop_server

    port = free_port()
    server = start_server([*script("faulty_modbus.py"), "--port", str(port), "--fault", "crash:1:0"], port)
    run = tmp_path / "run"
    try:
        status = main(["run", f"modbus://127.0.0.1:{port}", "--cases", "200", "--seed", "1", "--groups", "boundary",
                       "--out", str(run), "--quiet", "--probe-deadline", "0.5", "--recovery-timeout", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 3
        assert err[-1].startswith("otfuzz: error: target stopped answering after case")
        assert f"otfuzz run --resume {run}" in err[-1]
        doc = load_results(run)
        assert doc["campaign"]["status"] == "failed"
        crash = only(doc, "crash")
        assert crash["target_exit"] is None  # otfuzz did not start it, so it cannot know how it died
        stopped_at = doc["totals"]["cases"]
    finally:
        stop_server(server)
    # The operator brings the device back (this time without the fault) and resumes.
    server = start_server([*script("faulty_modbus.py"), "--port", str(port)], port)
    try:
        assert main(["run", "--resume", str(run), "--quiet"]) == 0
    finally:
        stop_server(server)
    doc = load_results(run)
    assert doc["campaign"]["status"] == "completed"
    assert doc["totals"]["cases"] == 200 and stopped_at < 200
    assert len([a for a in doc["anomalies"] if a["class"] == "crash"]) == 1


def test_target_down_with_several_connections_is_recorded_once_and_stops_every_worker(tmp_path: Path, capsys,
                                                                                     faulty_server) -> None:
    _, port = faulty_server("crash:1")
    run = tmp_path / "run"
    status = main(["run", f"modbus://127.0.0.1:{port}", "--cases", "500", "--concurrency", "3", "--groups", "boundary",
                   "--out", str(run), "--quiet", "--probe-deadline", "0.5", "--recovery-timeout", "1"])
    assert status == 3
    assert "target stopped answering" in capsys.readouterr().err
    doc = load_results(run)
    assert doc["campaign"]["status"] == "failed"
    assert [a["class"] for a in doc["anomalies"]] == ["crash"]
    assert doc["totals"]["cases"] < 500


def test_a_valid_request_type_a_healthy_target_never_answers_costs_one_short_wait_not_its_grace_window(tmp_path: Path) -> None:
    # fc 4 alone is never answered (25 valid reads of it in these 400 cases); the grace window is 6 s
    results = run_against_faulty(tmp_path, "ignore:4", cases=400, extra=("--recovery-timeout", "6", "--no-confirm"))
    assert results["totals"]["cases"] == 400
    assert results["campaign"]["fuzzing_s"] < 4.0  # waiting out one grace window alone would take 6 s
    # never answered is not answered late: no finding for it (a loaded machine may slow other answers)
    assert not [f for f in results["findings"] if f["request_type"] == "read_input_registers"]
    silent = [e for e in results["events"] if e["kind"] == "silent"]
    assert len(silent) == 1 and silent[0]["detail"].startswith("read_input_registers:")
