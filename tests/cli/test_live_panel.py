"""The live progress display of `otfuzz run`: a rich panel on a terminal that ends with the
summary, plain lines without a single control code when the output is piped."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from targets.servers import OTFUZZ

pytestmark = pytest.mark.integration


def _under_pty(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run argv with stdout and stderr on a pseudo-terminal; (exit status, everything it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(10), out.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


def test_run_on_a_terminal_shows_the_live_panel_and_ends_with_the_summary(pymodbus_server: tuple[str, int],
                                                                          tmp_path: Path) -> None:
    host, port = pymodbus_server
    code, out = _under_pty([*OTFUZZ, "run", f"modbus://{host}:{port}", "--duration", "3s", "--seed", "5",
                            "--out", str(tmp_path / "run"), "--no-confirm"])
    assert code == 0, out
    assert "otfuzz run" in out and "findings" in out and "probe" in out and "s left" in out
    assert "\x1b[" in out  # drawn and redrawn in place
    assert "\u2501" in out or "\u2578" in out or "\u257a" in out  # the progress bar's own characters
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    last = [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-1]
    assert last.startswith("completed:") and "cases" in last


def test_piped_output_has_no_control_codes(pymodbus_server: tuple[str, int], tmp_path: Path) -> None:
    host, port = pymodbus_server
    done = subprocess.run([*OTFUZZ, "run", f"modbus://{host}:{port}", "--duration", "2s", "--seed", "5",
                           "--out", str(tmp_path / "run"), "--no-confirm"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("completed:")
    assert "\x1b" not in done.stdout + done.stderr and "\r" not in done.stdout + done.stderr


def test_stress_panel_shows_step_load_and_essential_function() -> None:
    from rich.console import Console

    from otfuzz.cli.stress import _stress_panel
    from otfuzz.stress.runner import Snapshot

    console = Console(record=True, width=100, force_terminal=False)
    console.print(_stress_panel(Snapshot("valid-flood", "level 2", 812.4, 790.0, 12, 40, 3, 17.2), []))
    text = console.export_text()
    assert "otfuzz stress" in text and "valid-flood: level 2" in text
    assert "offered 812/s, answered 790/s, 12 open" in text and "3 of 40 cycles missed" in text


def test_sparkline_scales_latencies_and_leaves_gaps_for_failed_probes() -> None:
    from otfuzz.cli.common import sparkline

    assert sparkline([1.0, None, 2.0, 3.0]) == "\u2581 \u2585\u2588"
    assert sparkline([None, None]) == ""


def test_run_plan_on_a_terminal_shows_one_bar_per_campaign_and_quiet_prints_only_the_summary(
        pymodbus_server: tuple[str, int], tmp_path: Path) -> None:
    import yaml

    from targets.plants import three_zone_plant
    from targets.servers import free_port, script, start_server, stop_server

    _, plc = pymodbus_server
    relay_port = free_port()
    relay = start_server([*script("policy_relay.py"), "--listen", str(relay_port), "--upstream", f"127.0.0.1:{plc}",
                          "--allow-fc", "1,2,3,4", "--mode", "exception"], relay_port)
    try:
        system = tmp_path / "system.yaml"
        system.write_text(three_zone_plant(plc, relay_port, f"{{protocol: modbus, port: {plc}}}", "modbus"))
        plan_file = tmp_path / "plan.yaml"
        made = subprocess.run([*OTFUZZ, "plan", str(system), "--out", str(plan_file), "--duration", "2s", "--timeout", "0.3"],
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        plan = yaml.safe_load(plan_file.read_text())
        for entry in plan["entries"]:
            if entry["kind"] == "fuzz":
                entry["campaign"] = {"max_cases": 300, "confirm": False}
        plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
        fuzz = [e["id"] for e in plan["entries"] if e["kind"] == "fuzz"]
        code, out = _under_pty([*OTFUZZ, "run-plan", str(plan_file), "--out", str(tmp_path / "runs")], timeout=120)
        assert code == 0, out
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
        assert "\x1b[" in out and "\u2501" in out  # bars drawn in place
        assert all(entry_id[:28] in text for entry_id in fuzz)
        assert re.search(r"\b[1-9][\d,]* cases", text), text[-2000:]  # a campaign's live count, not the placeholder
        for entry_id in fuzz:  # each bar ends full, with how its entry ended
            assert re.search(re.escape(entry_id[:28]) + r"\s*\u2501+ .*cases .*completed", text), text[-2000:]
        last = [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-1]
        assert last.startswith("plan finished:"), last
        quiet = subprocess.run([*OTFUZZ, "run-plan", str(plan_file), "--out", str(tmp_path / "quiet"), "--quiet"],
                               capture_output=True, text=True, timeout=120)
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stdout.splitlines() == [line for line in quiet.stdout.splitlines() if line.startswith("plan finished:")]
        assert len(quiet.stdout.splitlines()) == 1 and "\x1b" not in quiet.stdout
    finally:
        stop_server(relay)
