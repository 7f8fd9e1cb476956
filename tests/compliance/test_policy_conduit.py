"""Conduit policy tests through the project's filtering relay in front of a real pymodbus server.

One relay obeys the policy (reads only), one leaks everything: the test must record a clean
pass for the first and, for the second, every disallowed operation that came through, the writes
the server acted on (seen by reading the server directly) and the requirements that fail.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from system_fixtures import otfuzz, servers

from otfuzz.compliance.policy import PolicyTest, PolicyTestConfig, run_policy_test
from otfuzz.errors import OtfuzzError
from otfuzz.report.results import load_results

READS = [1, 2, 3, 4]


def _mapped_verdict(run_dir: Path, requirement: str) -> str:
    from otfuzz.compliance.evidence import build_evidence

    evidence = build_evidence(load_results(run_dir))
    return next(r["verdict"] for r in evidence["requirements"] if r["id"] == requirement)


def run(config: PolicyTestConfig, run_dir: Path) -> dict:
    return asyncio.run(asyncio.wait_for(run_policy_test(config, run_dir), timeout=60))


def by_name(section: dict) -> dict[str, dict]:
    return {op["name"]: op for op in section["operations"]}


def verdicts(section: dict) -> dict[str, str]:
    return {v["requirement"]: v["verdict"] for v in section["verdicts"]}


def test_conduit_that_obeys_its_policy_passes_and_leaves_the_server_unchanged(tmp_path: Path) -> None:
    with servers() as s:
        server = s.modbus()
        relay = s.relay(server, READS, mode="exception")
        section = run(PolicyTestConfig(f"modbus://127.0.0.1:{relay}", READS, observe=f"127.0.0.1:{server}", timeout=0.5), tmp_path / "run")
    ops = by_name(section)
    assert {n for n, op in ops.items() if op["allowed"]} == {"read_coils", "read_discrete_inputs", "read_holding_registers", "read_input_registers"}
    assert all(op["outcome"] == "passed" and op["reply_kind"] == "normal" for op in ops.values() if op["allowed"])
    disallowed = [op for op in ops.values() if not op["allowed"] and op["sent"]]
    assert disallowed and all(op["outcome"] == "blocked" and op["reply_kind"] == "exception" for op in disallowed)
    assert ops["write_single_register"]["changed"] is False  # observed on the server itself: untouched
    assert section["summary"]["violations"] == 0 and section["conclusive"]
    assert verdicts(section) == {"SR 5.2": "pass", "SR 5.1": "pass"}
    assert _mapped_verdict(tmp_path / "run", "SR 5.2") == "pass"
    # disruptive requests are never sent unless asked
    assert ops["diagnostics/force_listen_only_mode"]["outcome"] == "skipped"


def test_leaking_conduit_records_each_violation_and_the_writes_the_device_took(tmp_path: Path) -> None:
    with servers() as s:
        server = s.modbus()
        relay = s.relay(server, READS, leak=True)
        section = run(PolicyTestConfig(f"modbus://127.0.0.1:{relay}", READS, observe=f"127.0.0.1:{server}", timeout=0.5,
                                       conduit="sup-ctl", channel="polls"), tmp_path / "run")
    ops = by_name(section)
    write = ops["write_single_register"]
    assert (write["allowed"], write["reply_kind"], write["changed"], write["outcome"]) == (False, "normal", True, "violation")
    assert write["accepted"] and write["came_through"]
    for name in ("write_single_coil", "write_multiple_registers", "mask_write_register"):
        assert ops[name]["changed"] is True and ops[name]["outcome"] == "violation"
    assert ops["read_exception_status"]["outcome"] == "violation" and ops["read_exception_status"]["changed"] is None
    summary = section["summary"]
    violations = [op["name"] for op in section["operations"] if op["outcome"] == "violation"]
    assert summary["violations"] == len(violations) > 10
    assert verdicts(section) == {"SR 5.2": "fail", "SR 5.1": "fail", "SR 3.5": "fail"}
    # The run-level compliance section agrees: the mapping reads the policy test's own judgement.
    assert _mapped_verdict(tmp_path / "run", "SR 5.2") == "fail"
    sr35 = next(v for v in section["verdicts"] if v["requirement"] == "SR 3.5")
    assert "write_single_register" in sr35["operations"] and "read_exception_status" not in sr35["operations"]


def test_policy_run_folder_is_a_results_document_with_the_policy_section(tmp_path: Path) -> None:
    with servers() as s:
        server = s.modbus()
        relay = s.relay(server, READS, leak=True)
        run(PolicyTestConfig(f"modbus://127.0.0.1:{relay}", READS, timeout=0.5), tmp_path / "run")
    doc = load_results(tmp_path / "run")
    assert doc["campaign"]["kind"] == "policy" and doc["campaign"]["status"] == "completed"
    assert doc["target"]["port"] == relay
    assert doc["totals"]["cases"] == doc["policy"]["summary"]["sent"]
    assert [g["name"] for g in doc["groups"]] == ["conduit-policy"]
    assert doc["policy"]["observe"] is None
    assert any("no inside observation endpoint" in note for note in doc["policy"]["notes"])
    assert sum(e["kind"] == "policy-violation" for e in doc["events"]) == doc["policy"]["summary"]["violations"]


def test_silently_dropping_conduit_counts_as_refusal(tmp_path: Path) -> None:
    with servers() as s:
        server = s.modbus()
        relay = s.relay(server, [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24], mode="drop")  # only fc 43 refused
        section = run(PolicyTestConfig(f"modbus://127.0.0.1:{relay}", ["all"], timeout=0.3), tmp_path / "run")
    ops = by_name(section)
    assert ops["read_device_identification"]["allowed"] and ops["read_device_identification"]["reply_kind"] == "no-reply"
    assert ops["read_device_identification"]["outcome"] == "over-blocked"
    assert section["summary"]["over_blocked"] == 1
    assert verdicts(section) == {"SR 5.2": "inconclusive", "SR 5.1": "inconclusive"}  # nothing was disallowed


def test_read_only_test_of_a_live_target_sends_no_write_and_claims_only_partial(tmp_path: Path) -> None:
    with servers() as s:
        server = s.modbus()
        relay = s.relay(server, READS)
        section = run(PolicyTestConfig(f"modbus://127.0.0.1:{relay}", READS, timeout=0.5, read_only=True), tmp_path / "run")
    assert all(not op["sent"] for op in section["operations"] if op["writes"])
    assert verdicts(section) == {"SR 5.2": "partial", "SR 5.1": "partial"}


def test_endpoint_that_carries_nothing_is_inconclusive_not_a_pass(tmp_path: Path) -> None:
    with servers() as s:
        server = s.modbus()
        relay = s.relay(server, [], mode="drop")  # blocks even the allowed reads
        section = run(PolicyTestConfig(f"modbus://127.0.0.1:{relay}", READS, timeout=0.1), tmp_path / "run")
    assert not section["conclusive"]
    assert verdicts(section) == {"SR 5.2": "inconclusive", "SR 5.1": "inconclusive"}


def test_policy_test_refuses_targets_outside_the_scope() -> None:
    with pytest.raises(OtfuzzError, match="outside the declared scope"):
        PolicyTest(PolicyTestConfig("modbus://192.0.2.10:502", READS))
    with pytest.raises(OtfuzzError, match="outside the declared scope"):
        PolicyTest(PolicyTestConfig("modbus://127.0.0.1:502", READS, observe="192.0.2.10:502"))


def test_policy_test_command_reports_violations_and_keeps_evidence(tmp_path: Path) -> None:
    with servers() as s:
        server = s.modbus()
        relay = s.relay(server, READS, leak=True)
        result = otfuzz("policy-test", f"modbus://127.0.0.1:{relay}", "--allow", "read", "--observe", f"127.0.0.1:{server}",
                        "--timeout", "0.5", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "SR 5.2: fail" in result.stdout and "policy violation(s)" in result.stdout
    assert load_results(tmp_path / "run")["policy"]["summary"]["violations"] > 0
    bad = otfuzz("policy-test", "modbus://127.0.0.1:1", "--allow", "read,nonsense", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "'nonsense' is not" in bad.stderr
    assert not (tmp_path / "bad").exists()
