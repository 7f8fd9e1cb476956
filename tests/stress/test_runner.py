"""Stress runs end to end against real servers on loopback: a healthy server passes, the project's
degrading server fails exactly where its known degradation says it must, and the evidence
(results document, counts per group, anomalies, time series) is complete and schema-valid."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from otfuzz.report.results import results_schema
from otfuzz.store.evidence import EvidenceStore
from otfuzz.stress.report import stress_html
from otfuzz.stress.verdicts import Thresholds
from stress.conftest import degrading_argv, stress
from targets.servers import free_port

pytestmark = pytest.mark.integration


def _steps(doc: dict, group: str) -> list[dict]:
    return [s for p in doc["stress"]["patterns"] if p["group"] == group for s in p["steps"]]


def test_healthy_server_passes_every_pattern_and_the_evidence_is_complete(
        tmp_path: Path, degrading_server: Callable[..., tuple[str, int]]) -> None:
    _, port = degrading_server()  # no capacity limit: a healthy server
    status, doc, run_dir = stress(tmp_path, f"modbus://127.0.0.1:{port}",
                                  ["connection-flood", "request-flood", "malformed-flood", "protocol-flood"],
                                  profile="quick", step_duration=0.4)
    assert status == "completed"
    jsonschema.validate(doc, results_schema())
    assert doc["campaign"]["kind"] == "stress"
    verdicts = doc["stress"]["verdicts"]
    assert {g: v["verdict"] for g, v in verdicts.items()} == {
        "connection-flood": "pass", "request-flood": "pass", "malformed-flood": "pass", "protocol-flood": "pass", "recovery": "pass"}
    assert doc["anomalies"] == []
    # Totals per test group also reach the normal results document through the store's counts.
    groups = {g["name"]: g for g in doc["groups"]}
    written = sum(s["offered"]["written"] for s in _steps(doc, "request-flood"))
    assert groups["request-flood"]["cases"] == written and groups["request-flood"]["replies"] == {"normal": written}
    assert groups["essential-function"]["replies"].get("normal", 0) >= 20
    assert groups["recovery"]["replies"] == {"normal": sum(len(p["steps"]) for p in doc["stress"]["patterns"])}
    # The ramp is judged per moment: it crossed level-1 and level-2 and beyond.
    ramp = [s for s in _steps(doc, "request-flood") if s["kind"] == "ramp"][0]
    assert set(ramp["essential_by_level"]) == {"level-1", "level-2", "beyond"}
    # Time series are in the store for audit, and the plots in the HTML fragment.
    store = EvidenceStore.open(run_dir)
    try:
        assert len(store.samples("essential")) >= 40 and store.samples("load")
    finally:
        store.close()
    assert stress_html(doc).count("<svg") == 4


def test_degrading_server_fails_at_level2_passes_level1_and_recovers_within_the_limit(
        tmp_path: Path, degrading_server: Callable[..., tuple[str, int]]) -> None:
    # Known behaviour: answers up to 100 req/s; above that silent until 1 s of calm.
    _, port = degrading_server(capacity=100, recovery=1.0)
    status, doc, _ = stress(tmp_path, f"modbus://127.0.0.1:{port}", ["request-flood"], profile="smoke")
    assert status == "completed"
    steps = {s["label"]: s for s in _steps(doc, "request-flood")}
    assert steps["40 req/s on 1 connection"]["verdict"] == "pass"
    overloaded = steps["160 req/s on 1 connection"]
    assert overloaded["verdict"] == "fail" and "level-2" in overloaded["reasons"][0]
    assert overloaded["essential"]["miss_ratio"] > 0.3
    assert 1.0 <= overloaded["recovery"]["seconds"] <= 3.0 and overloaded["recovery"]["verdict"] == "pass"
    assert doc["stress"]["verdicts"]["request-flood"]["verdict"] == "fail"
    assert doc["stress"]["verdicts"]["recovery"]["verdict"] == "pass"
    # The failed threshold is also an anomaly of the group, for the requirement mapping.
    classes = {(a["group"], a["class"]) for a in doc["anomalies"]}
    assert ("request-flood", "hang") in classes or ("request-flood", "degradation") in classes
    jsonschema.validate(doc, results_schema())


def test_slow_recovery_fails_the_recovery_verdict_with_an_unresponsive_after_anomaly(
        tmp_path: Path, degrading_server: Callable[..., tuple[str, int]]) -> None:
    _, port = degrading_server(capacity=100, recovery=2.5)
    status, doc, _ = stress(tmp_path, f"modbus://127.0.0.1:{port}", ["request-flood"], profile="smoke",
                            thresholds=Thresholds(recovery_limit=1.0, recovery_window=6.0),
                            step_duration=0.5, level1_rate=200.0, level2_rate=400.0)
    first = _steps(doc, "request-flood")[0]
    assert first["recovery"]["verdict"] == "fail" and first["recovery"]["seconds"] >= 2.5
    assert doc["stress"]["verdicts"]["recovery"]["verdict"] == "fail"
    assert ("recovery", "unresponsive-after") in {(a["group"], a["class"]) for a in doc["anomalies"]}


def test_pymodbus_keeps_its_essential_function_under_bounded_request_floods(
        tmp_path: Path, pymodbus_server: tuple[str, int]) -> None:
    _, port = pymodbus_server
    status, doc, _ = stress(tmp_path, f"modbus://127.0.0.1:{port}", ["request-flood", "malformed-flood"], profile="smoke",
                            step_duration=0.8, level1_rate=20.0, level2_rate=50.0)
    assert status == "completed"
    assert doc["stress"]["verdicts"]["request-flood"]["verdict"] == "pass"
    assert doc["stress"]["verdicts"]["recovery"]["verdict"] == "pass"
    # pymodbus answers undecodable requests with exceptions: they show in the group's counts.
    malformed = {g["name"]: g for g in doc["groups"]}["malformed-flood"]
    assert malformed["cases"] > 0 and set(malformed["replies"]) <= {"exception", "no-reply", "malformed", "spec-violation", "normal"}


def test_leaking_target_started_by_otfuzz_fails_the_resource_verdict_and_a_clean_one_passes(tmp_path: Path) -> None:
    results = {}
    for leak in (True, False):
        port = free_port()
        command = " ".join(shlex.quote(a) for a in degrading_argv(port, leak=leak))
        status, doc, _ = stress(tmp_path / str(leak), f"modbus://127.0.0.1:{port}", ["connection-flood"], profile="smoke",
                                step_duration=0.5, target_cmd=command)
        assert status == "completed"
        results[leak] = doc["stress"]
    assert results[True]["verdicts"]["resources"]["verdict"] == "fail"
    assert "descriptors" in results[True]["verdicts"]["resources"]["reasons"][0]
    assert results[False]["verdicts"]["resources"]["verdict"] == "pass"
    assert results[True]["resources"]["samples"] and results[True]["resources"]["end"]["fds"] > results[True]["resources"]["start"]["fds"]


def test_target_dying_under_load_is_a_crash_and_the_run_restarts_it(tmp_path: Path) -> None:
    # A server that exits on any diagnostics request (fc 8), as in the protocol flood; otfuzz
    # owns it (--target-cmd), records the crash and restarts it.
    port = free_port()
    script = tmp_path / "fragile.py"
    script.write_text(
        "import asyncio, os, struct, sys\n"
        "class P(asyncio.Protocol):\n"
        "    def connection_made(self, t): self.t = t\n"
        "    def data_received(self, d):\n"
        "        if d[7] == 8: os._exit(9)\n"
        "        if d[7] != 3: self.t.write(d[:4] + struct.pack('>HBBB', 3, d[6], d[7] | 0x80, 1)); return\n"
        "        self.t.write(d[:4] + struct.pack('>HBBBH', 5, d[6], 3, 2, 0))\n"
        "async def main():\n"
        f"    s = await asyncio.get_running_loop().create_server(P, '127.0.0.1', {port})\n"
        "    print('READY', flush=True)\n"
        "    await s.serve_forever()\n"
        "asyncio.run(main())\n")
    tmp_run = tmp_path / "crash"
    tmp_run.mkdir()
    status, doc, _ = stress(tmp_run, f"modbus://127.0.0.1:{port}", ["protocol-flood"], profile="smoke",
                            step_duration=0.5, target_cmd=f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    step = _steps(doc, "protocol-flood")[0]
    assert step["target_died"] and step["verdict"] == "fail"
    assert ("protocol-flood", "crash") in {(a["group"], a["class"]) for a in doc["anomalies"]}
    assert any(e["kind"] == "target-restart" for e in doc["events"])
    assert status == "completed"
