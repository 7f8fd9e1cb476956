"""Planning at zone boundaries, and run-plan end to end against real servers on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from system_fixtures import EXAMPLE, otfuzz, servers, write_system
from targets.plants import three_zone_plant

from otfuzz.compliance.gap import gap_section
from otfuzz.compliance.plan import build_plan, load_plan, write_plan
from otfuzz.compliance.system import load_system
from otfuzz.protocols import protocol_class
from otfuzz.report.results import load_results


def test_three_zone_plan_protects_the_highest_sl_t_zone_first() -> None:
    plan = build_plan(load_system(EXAMPLE))
    zones = [e.zone for e in plan.entries]
    assert zones == sorted(zones, key=["control", "supervisory", "enterprise"].index)
    kinds = [(e.zone, e.kind) for e in plan.entries]
    assert kinds.index(("control", "policy")) < kinds.index(("control", "fuzz"))  # cheap policy test before fuzzing
    control_fuzz = next(e for e in plan.entries if e.zone == "control" and e.kind == "fuzz" and e.protocol == "modbus")
    supervisory_fuzz = next(e for e in plan.entries if e.zone == "supervisory" and e.kind == "fuzz")
    # depth follows max(SL-T FR3, FR7): control 3 -> every group, 2 h; supervisory 2 -> no sequences or connection
    # patterns, 30 min
    assert control_fuzz.groups == ["boundary", "structural", "mutation", "sequence", "pairs", "connection"]
    assert control_fuzz.duration_s == 7200
    assert supervisory_fuzz.groups == ["boundary", "structural", "mutation", "pairs"] and supervisory_fuzz.duration_s == 1800
    # the live PLC is fuzzed read-only; the gateway is reached through the firewall's published port
    assert control_fuzz.read_only and not supervisory_fuzz.read_only
    assert supervisory_fuzz.target == "modbus://10.10.0.1:1502?unit=1" and supervisory_fuzz.scope == ["10.10.0.1"]
    ids = {r["id"] for r in control_fuzz.requirements}
    assert {"SR 3.5", "SR 7.1"} <= ids and not any(i.startswith(("CR", "SVV")) for i in ids)  # asset owner: 3-3 only
    policy = next(e for e in plan.entries if e.kind == "policy" and e.zone == "supervisory")
    assert policy.allow == [1, 2, 3, 4] and policy.channels == ["enterprise-supervisory/reporting-reads"]
    assert {r["id"] for r in policy.requirements} == {"SR 5.2", "SR 5.1", "SR 3.5"}
    assert [p["part"] for p in plan.organisation["applicable_parts"]] == ["2-1", "3-2", "3-3", "2-4"]


def test_channels_otfuzz_cannot_test_are_listed_not_dropped() -> None:
    plan = build_plan(load_system(EXAMPLE))
    planned = {c for e in plan.entries for c in e.channels}
    unplanned = {item["channel"] for item in plan.not_planned}
    assert planned | unplanned == {"enterprise-supervisory/reporting-reads", "supervisory-control/scada-polls-plc",
                                   "supervisory-control/scada-polls-rtu"}
    assert not planned & unplanned


def test_product_vendor_plan_cites_component_and_process_requirements(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("role: asset-owner", "role: product-vendor")
    plan = build_plan(load_system(write_system(tmp_path, text)))
    fuzz = next(e for e in plan.entries if e.kind == "fuzz" and e.asset == "plc-filtration")
    ids = {r["id"] for r in fuzz.requirements}
    assert {"CR 3.5", "SVV-3"} <= ids and not any(i.startswith("SR") for i in ids)
    assert [p["part"] for p in plan.organisation["applicable_parts"]] == ["4-1", "4-2"]


def test_plan_file_round_trips_and_the_command_prints_what_applies(tmp_path: Path) -> None:
    plan = build_plan(load_system(EXAMPLE), duration_s=30)
    again = load_plan(write_plan(plan, tmp_path / "plan.yaml"))
    assert [e.__dict__ for e in again.entries] == [e.__dict__ for e in plan.entries]
    result = otfuzz("plan", str(EXAMPLE), "--out", str(tmp_path / "cli.yaml"))
    assert result.returncode == 0, result.stderr
    assert "IEC 62443 parts that apply to the organisation's role (Asset owner)" in result.stdout
    assert "run-plan --scope 10.10.0.1 --scope 10.10.2.10" in result.stdout
    assert yaml.safe_load((tmp_path / "cli.yaml").read_text())["entries"][0]["zone"] == "control"


def test_run_plan_refuses_endpoints_outside_the_scope_and_starts_nothing(tmp_path: Path) -> None:
    write_plan(build_plan(load_system(EXAMPLE)), tmp_path / "plan.yaml")
    result = otfuzz("run-plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.startswith("otfuzz: error: plan entry 01-policy-plc-filtration-modbus: target 10.10.2.10")
    assert "outside the declared scope" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_run_plan_bad_input_exits_2_with_one_message(tmp_path: Path) -> None:
    missing = otfuzz("run-plan", "--resume", str(tmp_path / "gone"))
    assert missing.returncode == 2 and "run folder" in missing.stderr and "does not exist" in missing.stderr
    (tmp_path / "not-a-plan.yaml").write_text("hello: world\n")
    wrong = otfuzz("run-plan", str(tmp_path / "not-a-plan.yaml"), "--out", str(tmp_path / "runs"))
    assert wrong.returncode == 2 and "is not an otfuzz plan" in wrong.stderr
    nofile = otfuzz("run-plan", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "runs"))
    assert nofile.returncode == 2 and "cannot read plan" in nofile.stderr
    assert not (tmp_path / "runs").exists()
    bad_system = write_system(tmp_path, EXAMPLE.read_text().replace("server: plc-filtration", "server: plc-9"), "bad.yaml")
    planned = otfuzz("plan", str(bad_system), "--out", str(tmp_path / "p.yaml"))
    assert planned.returncode == 2 and "unknown asset 'plc-9'" in planned.stderr and not (tmp_path / "p.yaml").exists()


def _second_protocol() -> tuple[str, str, list[str], str] | None:
    """Another protocol with a module and a test server, if this build has one that loads."""
    for scheme, server, args, options in (("iec104", "iec104_server.py", ["--ca", "47"], "{ca: 47}"),
                                          ("dnp3", "dnp3_outstation.py", [], "{outstation: 1}")):
        try:
            protocol_class(scheme)()
        except Exception:  # noqa: BLE001 - a module being written elsewhere may not load yet
            continue
        return scheme, server, args, options
    return None


def test_run_plan_end_to_end_on_loopback_then_resume_reruns_only_what_is_missing(tmp_path: Path) -> None:
    other = _second_protocol()
    with servers() as s:
        plc = s.modbus()
        relay = s.relay(plc, [1, 2, 3, 4], leak=True)
        if other is not None:
            scheme, script_name, args, options = other
            second = s.script(script_name, *args)
            second_service = f"{{protocol: {scheme}, port: {second}, options: {options}}}"
        else:
            scheme, second = "modbus", s.modbus()
            second_service = f"{{protocol: modbus, port: {second}}}"
        system = write_system(tmp_path, three_zone_plant(plc, relay, second_service, scheme))
        made = otfuzz("plan", str(system), "--out", str(tmp_path / "plan.yaml"), "--duration", "1s", "--timeout", "0.3")
        assert made.returncode == 0, made.stderr
        plan = yaml.safe_load((tmp_path / "plan.yaml").read_text())
        for entry in plan["entries"]:  # plans are meant to be edited: keep the fuzzing short and bounded
            if entry["kind"] == "fuzz":
                entry["campaign"] = {"max_cases": 40, "confirm": False}
        (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
        assert [e["id"] for e in plan["entries"]] == ["01-policy-plc-modbus", "02-fuzz-plc-modbus", f"03-fuzz-gw-{scheme}"]

        runs = tmp_path / "runs"
        first = otfuzz("run-plan", str(tmp_path / "plan.yaml"), "--out", str(runs), "--concurrency", "2", timeout=90)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "plan finished: 3 completed" in first.stdout
        status = json.loads((runs / "plan-status.json").read_text())
        assert [e["status"] for e in status["entries"]] == ["completed"] * 3
        policy = load_results(runs / "01-policy-plc-modbus")
        assert policy["campaign"]["kind"] == "policy" and policy["policy"]["summary"]["violations"] > 0
        assert policy["policy"]["conduit"] == "sup-ctl" and policy["policy"]["channel"] == "polls"
        for name in ("02-fuzz-plc-modbus", f"03-fuzz-gw-{scheme}"):
            doc = load_results(runs / name)
            assert doc["campaign"]["status"] == "completed" and 0 < doc["totals"]["cases"] <= 40

        # resumable as a whole: completed entries are kept, a missing one runs again
        kept = (runs / "02-fuzz-plc-modbus" / "evidence.sqlite").stat().st_mtime_ns
        for child in (runs / "01-policy-plc-modbus").iterdir():
            child.unlink()
        again = otfuzz("run-plan", "--resume", str(runs), timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "01-policy-plc-modbus: starting" in again.stdout
        assert "02-fuzz-plc-modbus: already completed, skipped" in again.stdout
        assert (runs / "02-fuzz-plc-modbus" / "evidence.sqlite").stat().st_mtime_ns == kept
        twice = otfuzz("run-plan", str(tmp_path / "plan.yaml"), "--out", str(runs))
        assert twice.returncode == 2 and "--resume" in twice.stderr

    # the plan's runs feed the system view: every conduit tested, the leak fails SR 5.2 in control
    section = gap_section(load_system(system), [runs])
    assert section["untested_conduits"] == []
    control = next(z for z in section["zones"] if z["name"] == "control")
    sr52 = next(r for r in control["requirements"] if r["id"] == "SR 5.2")
    assert sr52["verdict"] == "fail"
    assert {r["asset"] for r in section["runs"]} == {"plc", "gw"}


def test_interrupted_run_plan_resumes_the_campaign_it_stopped(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    with servers() as s:
        plc = s.modbus()
        system = write_system(tmp_path, f"""
            version: 1
            system: Interrupted plant
            organisation: {{role: integrator}}
            assets:
              - {{name: hmi, address: 127.0.0.1, type: host-device}}
              - {{name: plc, address: 127.0.0.1, type: embedded-device, services: [{{protocol: modbus, port: {plc}}}]}}
            zones:
              - {{name: supervisory, sl_t: [1, 1, 1, 1, 1, 1, 1], assets: [hmi]}}
              - {{name: control, sl_t: [1, 1, 1, 1, 1, 1, 1], assets: [plc]}}
            conduits:
              - {{name: sup-ctl, zones: [supervisory, control], channels: [{{protocol: modbus, server: plc, from: supervisory}}]}}
            """)
        plan = build_plan(load_system(system), duration_s=60, timeout=0.1)
        plan.entries[0].campaign = {"max_cases": 150, "rate": 60.0, "confirm": False}  # a few seconds of fuzzing
        write_plan(plan, tmp_path / "plan.yaml")
        runs = tmp_path / "runs"
        child = subprocess.Popen([sys.executable, "-m", "otfuzz.cli", "run-plan", str(tmp_path / "plan.yaml"), "--out", str(runs)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not (runs / "01-fuzz-plc-modbus" / "evidence.sqlite").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.5)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 130, out + err
        assert f"continue with: otfuzz run-plan --resume {runs}" in err
        stopped = load_results(runs / "01-fuzz-plc-modbus")
        assert stopped["campaign"]["status"] == "interrupted" and stopped["totals"]["cases"] < 150
        again = otfuzz("run-plan", "--resume", str(runs), timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "01-fuzz-plc-modbus: resuming" in again.stdout
        done = load_results(runs / "01-fuzz-plc-modbus")
        assert done["campaign"]["status"] == "completed" and done["campaign"]["id"] == stopped["campaign"]["id"]
        assert done["totals"]["cases"] >= 150
