"""Distributed campaigns end to end: a real redis-server, real Celery workers as zone agents,
real pymodbus and c104 targets, all on loopback (distinct ports stand in for zones)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from agent_fixtures import ROOT, Agents, otfuzz
from targets.plants import three_zone_plant
from targets.servers import free_port, script, start_server, stop_server

from otfuzz.agents.broker import bundle_key, connect, lease_key
from otfuzz.compliance.plan import build_plan, write_plan
from otfuzz.compliance.system import load_system
from otfuzz.report.results import load_results
from otfuzz.store.evidence import EvidenceStore


@contextmanager
def targets(*specs: tuple[str, tuple[str, ...]]) -> Iterator[list[int]]:
    """Start tests/targets scripts on free ports; yields the ports in order."""
    procs, ports = [], []
    try:
        for name, args in specs:
            port = free_port()
            procs.append(start_server([*script(name), "--port", str(port), *args], port))
            ports.append(port)
        yield ports
    finally:
        for proc in procs:
            stop_server(proc)


def fuzz_entry(entry_id: str, port: int, zone: str, *, duration: float, max_cases: int, target: str | None = None) -> dict:
    return {"id": entry_id, "kind": "fuzz", "target": target or f"modbus://127.0.0.1:{port}", "protocol": "modbus", "asset": "plc",
            "zone": zone, "sl_t": [1] * 7, "channels": [], "from_zones": [], "duration_s": duration, "groups": ["boundary", "mutation"],
            "timeout": 0.3, "campaign": {"max_cases": max_cases, "confirm": False}}


def write_entries(folder: Path, entries: list[dict]) -> Path:
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "system": {"name": "agents test"}, "organisation": {"role": "integrator"},
                                    "seed": 7, "entries": entries}, sort_keys=False))
    return path


def cases_are_whole(run: Path) -> tuple[int, int]:
    """(cases counted, resume point): equal when no case id was lost or counted twice."""
    store = EvidenceStore.open(run)
    try:
        return sum(sum(r.values()) for r in store.counts().values()), store.progress()[0]
    finally:
        store.close()


def test_three_zone_plan_runs_on_the_agents_of_each_zone_end_to_end(agents: Agents, tmp_path: Path) -> None:
    with targets(("pymodbus_server.py", ()), ("iec104_server.py", ("--ca", "47"))) as (plc, rtu):
        relay_port = free_port()
        relay = start_server([*script("policy_relay.py"), "--listen", str(relay_port), "--upstream", f"127.0.0.1:{plc}",
                              "--allow-fc", "1,2,3,4", "--mode", "exception", "--leak"], relay_port)
        try:
            system = tmp_path / "system.yaml"
            system.write_text(three_zone_plant(plc, relay_port, f"{{protocol: iec104, port: {rtu}, options: {{ca: 47}}}}",
                                               "iec104", "Loopback plant in three zones", "asset-owner"))
            plan = build_plan(load_system(system), duration_s=2, timeout=0.3)
            for entry in plan.entries:
                if entry.kind == "fuzz":
                    entry.campaign = {"max_cases": 60, "confirm": False}
            write_plan(plan, tmp_path / "plan.yaml")
            assert [(e.id, e.kind) for e in plan.entries] == [("01-policy-plc-modbus", "policy"), ("02-fuzz-plc-modbus", "fuzz"),
                                                              ("03-fuzz-gw-iec104", "fuzz")]
            agents.start("control-1", "control")
            agents.start("supervisory-1", "supervisory")
            agents.start("enterprise-1", "enterprise")
            listed = otfuzz("agents", "--broker", agents.url)
            assert listed.returncode == 0 and "3 agents in 3 zone(s)" in listed.stdout, listed.stderr
            runs = tmp_path / "runs"
            done = otfuzz("run-plan", tmp_path / "plan.yaml", "--broker", agents.url, "--trust", agents.keys, "--out", runs)
        finally:
            stop_server(relay)
    assert done.returncode == 0, done.stdout + done.stderr + agents.log("control-1") + agents.log("supervisory-1")
    assert "plan finished: 3 completed" in done.stdout
    # each entry ran in its zone: the policy test from the conduit's outer zone, fuzzing in the asset's zone
    ran_by = {}
    for entry_id in ("01-policy-plc-modbus", "02-fuzz-plc-modbus", "03-fuzz-gw-iec104"):
        store = EvidenceStore.open(runs / entry_id)
        try:
            ran_by[entry_id] = [a["name"] for a in store.get_meta("agents")]
        finally:
            store.close()
    assert ran_by == {"01-policy-plc-modbus": ["supervisory-1"], "02-fuzz-plc-modbus": ["control-1"],
                      "03-fuzz-gw-iec104": ["supervisory-1"]}
    policy = load_results(runs / "01-policy-plc-modbus")
    assert policy["policy"]["summary"]["violations"] > 0  # the leaking relay is caught through the agent too
    for entry_id in ("02-fuzz-plc-modbus", "03-fuzz-gw-iec104"):
        doc = load_results(runs / entry_id)
        assert doc["campaign"]["status"] == "completed" and 0 < doc["totals"]["cases"] <= 60
        assert (runs / "bundles" / f"{entry_id}.bundle").is_file()
    verified = otfuzz("verify", runs / "bundles" / "02-fuzz-plc-modbus.bundle", "--key", agents.keys / "control-1.pub")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    status = json.loads((runs / "plan-status.json").read_text())
    assert [e["status"] for e in status["entries"]] == ["completed"] * 3


@pytest.mark.parametrize("stop", ["killed", "stopped at once (Ctrl-C twice)"])
def test_a_killed_agent_s_campaign_finishes_on_another_agent_of_its_zone_with_no_case_lost(agents: Agents, tmp_path: Path,
                                                                                          stop: str) -> None:
    with targets(("pymodbus_server.py", ())) as (plc,):
        agents.start("control-a", "control")
        agents.start("control-b", "control")
        plan = write_entries(tmp_path, [fuzz_entry("01-fuzz-plc-modbus", plc, "control", duration=8, max_cases=100000)])
        runs = tmp_path / "runs"
        coordinator = subprocess.Popen([sys.executable, "-m", "otfuzz.cli", "run-plan", str(plan), "--broker", agents.url,
                                        "--trust", str(agents.keys), "--out", str(runs)], cwd=ROOT, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            client = connect(agents.url)
            plan_key, holder = None, None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the holder is running and has left a checkpoint with cases in it
                if plan_key is None and (runs / "agents.json").is_file():
                    plan_key = json.loads((runs / "agents.json").read_text())["plan_key"]
                if plan_key is not None:
                    lease = client.get(lease_key(plan_key, "01-fuzz-plc-modbus"))
                    checkpoint = client.exists(f"otfuzz:checkpoint:{plan_key}:01-fuzz-plc-modbus")
                    if lease and checkpoint and json.loads(lease).get("cases", 0) > 50:
                        holder = json.loads(lease)["agent"]
                        break
                time.sleep(0.1)
            assert holder in ("control-a", "control-b"), agents.log("control-a") + agents.log("control-b")
            time.sleep(1.0)
            if stop == "killed":
                agents.kill(holder)
            else:  # Celery's cold shutdown: the agent checkpoints and puts the task back on the queue
                agents.procs[holder].send_signal(signal.SIGINT)
                time.sleep(0.3)
                agents.procs[holder].send_signal(signal.SIGINT)
                assert agents.procs.pop(holder).wait(30) == 0
            out, err = coordinator.communicate(timeout=90)
        finally:
            if coordinator.poll() is None:
                coordinator.kill()
                coordinator.wait()
    other = "control-b" if holder == "control-a" else "control-a"
    assert coordinator.returncode == 0, out + err + agents.log(other)
    assert f"(agent {other})" in out, agents.log(holder)[-3000:]
    run = runs / "01-fuzz-plc-modbus"
    store = EvidenceStore.open(run)
    try:
        history = store.get_meta("agents")
        events = [e["detail"] for e in store.events() if e.get("kind") == "resume"]
    finally:
        store.close()
    assert [h["name"] for h in history] == [holder, other]
    assert history[1]["resumed_from"]["agent"] == holder and history[1]["resumed_from"]["next_case"] > 0
    assert events and events[0].startswith("resumed at case")  # resumed, not restarted
    counted, next_case = cases_are_whole(run)
    assert counted == next_case > history[1]["resumed_from"]["next_case"]
    assert load_results(run)["campaign"]["status"] == "completed"


def test_a_tampered_bundle_is_rejected_and_the_resumed_coordinator_collects_the_rest(agents: Agents, tmp_path: Path) -> None:
    with targets(("pymodbus_server.py", ())) as (plc,):
        agents.start("control-t", "control")
        plan = write_entries(tmp_path, [fuzz_entry("01-fuzz-a", plc, "control", duration=1, max_cases=40),
                                        fuzz_entry("02-fuzz-b", plc, "control", duration=1, max_cases=40)])
        runs = tmp_path / "runs"
        coordinator = subprocess.Popen([sys.executable, "-m", "otfuzz.cli", "run-plan", str(plan), "--broker", agents.url,
                                        "--trust", str(agents.keys), "--out", str(runs)], cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (runs / "agents.json").is_file() or len(json.loads((runs / "agents.json").read_text())["tasks"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        coordinator.send_signal(signal.SIGKILL)  # the coordinator dies; the agents carry on
        coordinator.wait(10)
        plan_key = json.loads((runs / "agents.json").read_text())["plan_key"]
        client = connect(agents.url)
        deadline = time.monotonic() + 60
        while not (client.exists(bundle_key(plan_key, "01-fuzz-a")) and client.exists(bundle_key(plan_key, "02-fuzz-b"))):
            assert time.monotonic() < deadline, agents.log("control-t")
            time.sleep(0.1)
        data = bytearray(client.get(bundle_key(plan_key, "02-fuzz-b")))
        data[512 + 200] ^= 0xFF  # one byte of the first file (the evidence store) changed on the way
        client.set(bundle_key(plan_key, "02-fuzz-b"), bytes(data))
        again = otfuzz("run-plan", "--resume", runs, "--broker", agents.url, "--trust", agents.keys)
    assert again.returncode == 3, again.stdout + again.stderr
    assert "01-fuzz-a: completed" in again.stdout
    assert "02-fuzz-b: rejected: bundle from agent control-t rejected, not merged: ALTERED: otfuzz-bundle/files/evidence.sqlite" \
        in again.stdout
    assert load_results(runs / "01-fuzz-a")["campaign"]["status"] == "completed"
    assert not (runs / "02-fuzz-b").exists() and (runs / "rejected" / "02-fuzz-b.bundle").is_file()
    status = {e["id"]: e["status"] for e in json.loads((runs / "plan-status.json").read_text())["entries"]}
    assert status == {"01-fuzz-a": "completed", "02-fuzz-b": "rejected"}


def test_an_agent_refuses_tasks_outside_its_scope_or_carrying_commands_before_sending(agents: Agents, tmp_path: Path) -> None:
    work = agents.start("control-s", "control", "10.10.2.0/24")
    outside = fuzz_entry("01-fuzz-outside", 502, "control", duration=1, max_cases=5, target="modbus://10.10.3.7:502")
    command = fuzz_entry("02-fuzz-command", 502, "control", duration=1, max_cases=5, target="modbus://127.0.0.1:9")
    command["campaign"]["target_cmd"] = "touch /tmp/otfuzz-agent-was-told-to-run-this"
    plan = write_entries(tmp_path, [outside, command])
    runs = tmp_path / "runs"
    done = otfuzz("run-plan", plan, "--broker", agents.url, "--trust", agents.keys, "--out", runs, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "01-fuzz-outside: refused: agent control-s refused it: plan entry 01-fuzz-outside: target 10.10.3.7" in done.stdout
    assert "outside the declared scope" in done.stdout and "(agent scope: 10.10.2.0/24)" in done.stdout
    assert "02-fuzz-command: refused: agent control-s refused it: task carries 'target_cmd'" in done.stdout
    assert not Path("/tmp/otfuzz-agent-was-told-to-run-this").exists()
    assert not any(p.is_dir() for p in work.glob("*/*"))  # no run folder: nothing was started


def test_an_unreachable_broker_is_one_line_exit_2_and_never_shows_the_password(tmp_path: Path) -> None:
    url = f"redis://otfuzz:s3cret@127.0.0.1:{free_port()}/0"
    for argv in (("agent", "--broker", url, "--zone", "control", "--work", tmp_path / "w"), ("agents", "--broker", url)):
        result = otfuzz(*argv, timeout=30)
        assert result.returncode == 2
        assert result.stderr.startswith("otfuzz: error: broker redis://otfuzz:***@127.0.0.1:") and "unreachable" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "s3cret" not in result.stdout + result.stderr
    plan = write_entries(tmp_path, [fuzz_entry("01-fuzz", 502, "control", duration=1, max_cases=5)])
    (tmp_path / "keys").mkdir()
    no_keys = otfuzz("run-plan", plan, "--broker", url, "--trust", tmp_path / "keys", "--out", tmp_path / "runs", timeout=30)
    assert no_keys.returncode == 2 and "holds no public key" in no_keys.stderr and not (tmp_path / "runs").exists()


def test_an_entry_no_agent_of_its_zone_serves_is_reported_lost_after_the_timeout(agents: Agents, tmp_path: Path) -> None:
    agents.start("control-l", "control")  # up, but of another zone: it keeps nothing of 'dosing' alive
    plan = write_entries(tmp_path, [fuzz_entry("01-fuzz-nobody", 502, "dosing", duration=1, max_cases=5)])
    runs = tmp_path / "runs"
    t0 = time.monotonic()
    done = otfuzz("run-plan", plan, "--broker", agents.url, "--trust", agents.keys, "--out", runs, "--lost-after", "2s", timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "01-fuzz-nobody: lost: no agent of zone dosing worked on it or was up for 2 s" in done.stdout
    assert 2 <= time.monotonic() - t0 < 30
    status = json.loads((runs / "plan-status.json").read_text())["entries"]
    assert [e["status"] for e in status] == ["lost"]
