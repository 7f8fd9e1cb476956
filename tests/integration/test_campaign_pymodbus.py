"""A campaign end to end against a real third-party server (pymodbus), with the run folder as
an auditor would receive it: exact counts, a valid results document, replay by id, resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from otfuzz.cli import main
from otfuzz.engine.generator import GROUPS, CaseGenerator
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.report.json_report import validate_results
from otfuzz.report.results import load_results
from otfuzz.store.evidence import EvidenceStore


def _otfuzz(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from otfuzz.cli import main; sys.exit(main())", *args]


def _read_registers(host: str, port: int, count: int = 100) -> bytes:
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(bytes.fromhex("000100000006010300000000")[:10] + count.to_bytes(2, "big"))
        return sock.recv(300)


def _read_coils(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(bytes.fromhex("000200000006010100000100"))
        return sock.recv(300)


def test_short_campaign_counts_every_case_and_writes_a_valid_results_document(pymodbus_server, tmp_path: Path) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    assert main(["run", f"modbus://{host}:{port}", "--cases", "600", "--seed", "7", "--out", str(run), "--quiet",
                 "--operator", "tester", "--minimise-budget", "8"]) == 0
    doc = load_results(run)
    validate_results(doc)
    assert doc["totals"]["cases"] == 600
    assert sum(g["cases"] for g in doc["groups"]) == 600
    assert {g["name"] for g in doc["groups"]} == set(GROUPS)
    assert doc["campaign"]["status"] == "completed" and doc["campaign"]["seed"] == 7
    assert doc["campaign"]["operator"] == "tester"
    assert len(doc["campaign"]["config_sha256"]) == 64
    assert doc["target"]["identity"].get("vendor") == "otfuzz-test"
    assert doc["liveness"]["baseline_ms"]["samples"] == 10
    assert doc["probes"] and all(p["ok"] for p in doc["probes"] if p["reason"] == "ok")
    assert main(["report", str(run), "--format", "json"]) == 0
    written = json.loads((run / "reports" / "results.json").read_text())
    assert written["totals"]["cases"] == 600
    # A healthy pymodbus: far fewer findings than anomalies, each one reply-level (it acts on
    # out-of-spec input, or answers some requests oddly), every one replayed or honestly marked.
    findings = doc["findings"]
    assert findings and len(findings) < len(doc["anomalies"])
    assert sum(f["occurrences"] for f in findings) == len(doc["anomalies"])
    assert all(f["class"] in ("spec-violation", "malformed-reply") for f in findings), [f["title"] for f in findings]
    assert all(f["confirmation"]["status"] in ("confirmed", "not reproduced") for f in findings)
    assert len({f["key"] for f in findings}) == len(findings)
    # one leniency is one finding whatever request types show it (trailing bytes accepted by the
    # shared framer, say), with the request types listed
    lenient = [f["behaviour"] for f in findings if f["violated_rules"]]
    assert len(set(lenient)) == len(lenient), sorted(lenient)
    assert any(len(f["request_types"]) > 1 for f in findings), [(f["title"], f["request_types"]) for f in findings]


def test_replay_by_case_id_regenerates_the_same_bytes(pymodbus_server, tmp_path: Path, capsys) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    assert main(["run", f"modbus://{host}:{port}", "--cases", "50", "--seed", "9", "--out", str(run), "--quiet", "--no-confirm"]) == 0
    capsys.readouterr()
    # a case no feedback shapes (corpus-derived ones: tests/integration/test_search.py)
    generator = CaseGenerator(ModbusTCP(), seed=9)
    case_id = next(i for i in range(40, 50) if generator.case(i).group in ("boundary", "structural", "pairs"))
    assert main(["replay", str(run), "--case", str(case_id), "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    expected = generator.case(case_id)
    assert replayed["frames_hex"] == [f.hex() for f in expected.frames]
    assert replayed["group"] == expected.group
    assert replayed["probe_after"]["ok"] is True


def test_replay_of_an_anomaly_sends_its_minimised_reproducer(pymodbus_server, tmp_path: Path, capsys) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    assert main(["run", f"modbus://{host}:{port}", "--cases", "300", "--seed", "7", "--out", str(run), "--quiet",
                 "--minimise-budget", "8"]) == 0
    doc = load_results(run)
    confirmed = [a for a in doc["anomalies"] if a["reproducible"] and a["class"] in ("malformed-reply", "spec-violation")]
    assert confirmed, "pymodbus 3.16.1 answers some invalid requests normally; the campaign should find one"
    anomaly = confirmed[0]
    capsys.readouterr()
    assert main(["replay", str(run), "--anomaly", str(anomaly["id"]), "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["frames_hex"] == anomaly["reproducer"]["frames_hex"]
    expected_kind = {"malformed-reply": "malformed", "spec-violation": "spec-violation"}[anomaly["class"]]
    assert replayed["reply_kind"] == expected_kind


def test_read_only_campaign_leaves_every_register_and_coil_unchanged(fresh_pymodbus, tmp_path: Path) -> None:
    host, port = fresh_pymodbus
    registers, coils = _read_registers(host, port), _read_coils(host, port)
    assert main(["run", f"modbus://{host}:{port}", "--cases", "1500", "--seed", "4", "--read-only", "--out", str(tmp_path / "r"),
                 "--quiet", "--no-confirm"]) == 0
    assert _read_registers(host, port) == registers
    assert _read_coils(host, port) == coils


def test_sigkill_loses_no_anomaly_and_resume_completes_with_exact_counts(pymodbus_server, tmp_path: Path) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    proc = subprocess.Popen(_otfuzz("run", f"modbus://{host}:{port}", "--cases", "4000", "--seed", "5", "--out", str(run),
                                    "--quiet", "--minimise-budget", "4"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if (run / "evidence.sqlite").exists():
            store = EvidenceStore(run / "evidence.sqlite")
            next_case, _ = store.progress()
            store.close()
            if next_case > 200:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    store = EvidenceStore.open(run)
    next_case, _ = store.progress()
    counted = sum(sum(r.values()) for r in store.counts().values())
    anomalies_before = store.anomalies()
    store.close()
    assert 0 < next_case < 4000
    assert counted == next_case  # counts and the resume point are committed together
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    doc = load_results(run)
    assert doc["totals"]["cases"] == 4000
    assert doc["campaign"]["status"] == "completed"
    ids_after = {(a["case_id"], a["class"]) for a in doc["anomalies"]}
    assert {(a["case_id"], a["class"]) for a in anomalies_before} <= ids_after
    assert len(ids_after) == len(doc["anomalies"])  # nothing recorded twice


def test_ctrl_c_stops_cleanly_and_resume_continues_with_the_same_case_ids(pymodbus_server, tmp_path: Path) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    proc = subprocess.Popen(_otfuzz("run", f"modbus://{host}:{port}", "--duration", "60s", "--seed", "5", "--out", str(run),
                                    "--quiet", "--no-confirm", "--groups", "boundary"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert f"--resume {run}" in err
    store = EvidenceStore.open(run)
    next_case, elapsed = store.progress()
    assert store.get_meta("campaign")["status"] == "interrupted"
    store.close()
    assert next_case > 0 and 0 < elapsed < 60
    # Resume runs the remaining time; case ids continue where they stopped.
    store = EvidenceStore.open(run)
    meta = store.get_meta("campaign")
    meta["config"]["duration"] = elapsed + 1.0  # shorten what is left to keep the test quick
    store.set_meta("campaign", meta)
    store.close()
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    doc = load_results(run)
    assert doc["totals"]["cases"] > next_case
    assert any(e["kind"] == "resume" and f"case {next_case}" in e["detail"] for e in doc["events"])


def test_rate_cap_holds_across_all_connections(pymodbus_server, tmp_path: Path) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    assert main(["run", f"modbus://{host}:{port}", "--cases", "60", "--rate", "40", "--concurrency", "3", "--seed", "2",
                 "--out", str(run), "--quiet", "--no-confirm", "--groups", "boundary"]) == 0
    doc = load_results(run)
    assert doc["totals"]["cases"] == 60
    # 60 cases spaced at least 1/40 s apart cannot take less than 59/40 s, whatever the concurrency.
    assert doc["campaign"]["fuzzing_s"] >= 59 / 40


def test_concurrent_connections_count_every_case_exactly_once(pymodbus_server, tmp_path: Path) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    assert main(["run", f"modbus://{host}:{port}", "--cases", "800", "--concurrency", "4", "--seed", "6",
                 "--out", str(run), "--quiet", "--no-confirm"]) == 0
    doc = load_results(run)
    assert doc["totals"]["cases"] == 800
    store = EvidenceStore.open(run)
    try:
        assert store.progress()[0] == 800  # the resume point passed every case
    finally:
        store.close()


def test_a_known_malformed_answer_in_step_keeps_the_connection_its_history_on_it_goes_on(fresh_pymodbus, tmp_path: Path) -> None:
    """pymodbus answers reads of file records, by their transaction ids, with records of the
    wrong length: a reply-level finding. Once it is known, an occurrence is recorded and the
    connection carries on (nothing but the probe went to the target), so a later anomaly's
    history on that connection reaches back past it; the old code opened a new connection for
    every occurrence, and no history ever held an earlier anomaly's case."""
    host, port = fresh_pymodbus
    run = tmp_path / "run"
    assert main(["run", f"modbus://{host}:{port}", "--cases", "3000", "--seed", "1", "--out", str(run), "--quiet"]) == 0
    store = EvidenceStore.open(run, read_only=True)
    try:
        anomalies = store.anomalies()
    finally:
        store.close()
    seen: set[int] = set()
    carried_on = 0
    for anomaly in anomalies:
        if anomaly["class"] in ("malformed-reply", "spec-violation") and seen & set(anomaly["history_case_ids"][:-1]):
            carried_on += 1
        seen.add(anomaly["case_id"])
    assert any(a["class"] == "malformed-reply" and "record data" in a["reply_detail"] for a in anomalies)
    assert carried_on >= 5, f"{carried_on} of {len(anomalies)} anomalies came after another on the same connection"
    doc = load_results(run)
    assert doc["totals"]["cases"] == 3000  # (and every case counted once)
    assert sum(f["occurrences"] for f in doc["findings"]) == len(anomalies)
