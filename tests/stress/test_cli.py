"""`otfuzz stress` on the command line: safety refusals before any traffic, exit statuses, and
Ctrl-C stopping the load at once while keeping what was measured."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from otfuzz.cli import main
from otfuzz.report.results import load_results


def _otfuzz(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from otfuzz.cli import main; sys.exit(main())", *args]


def test_target_outside_the_scope_is_refused_before_any_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["stress", "modbus://10.255.1.2:502", "--out", str(out)]) == 2
    assert "outside the declared scope" in capsys.readouterr().err
    assert not out.exists()


def test_load_above_the_rate_ceiling_is_refused_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               pymodbus_server: tuple[str, int]) -> None:
    out = tmp_path / "run"
    code = main(["stress", f"modbus://127.0.0.1:{pymodbus_server[1]}", "--out", str(out), "--level2-rate", "4000"])
    assert code == 2
    err = capsys.readouterr().err
    # The quick profile's ramp climbs to twice level-2: 8000 requests/s.
    assert "--max-rate 8000" in err and "ceiling of 5000" in err
    assert not out.exists()


def test_connections_above_the_ceiling_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   pymodbus_server: tuple[str, int]) -> None:
    code = main(["stress", f"modbus://127.0.0.1:{pymodbus_server[1]}", "--out", str(tmp_path / "r"),
                 "--level2-connections", "300", "--patterns", "connection-flood"])
    assert code == 2 and "--max-connections 300" in capsys.readouterr().err


def test_a_failed_verdict_exits_1_with_the_verdicts_in_the_summary(tmp_path: Path,
                                                                   degrading_server: Callable[..., tuple[str, int]]) -> None:
    _, port = degrading_server(capacity=100, recovery=0.5)
    out = tmp_path / "run"
    proc = subprocess.run(_otfuzz("stress", f"modbus://127.0.0.1:{port}", "--out", str(out), "--profile", "smoke",
                                  "--patterns", "request-flood", "--step-duration", "0.5", "--level1-rate", "200",
                                  "--level2-rate", "300", "--cadence", "0.05", "--quiet"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "request-flood fail" in proc.stdout
    assert load_results(out)["campaign"]["status"] == "completed"


@pytest.mark.integration
def test_ctrl_c_stops_the_load_at_once_keeps_the_results_and_leaves_no_process_behind(
        tmp_path: Path, degrading_server: Callable[..., tuple[str, int]]) -> None:
    _, port = degrading_server()
    out = tmp_path / "run"
    proc = subprocess.Popen(_otfuzz("stress", f"modbus://127.0.0.1:{port}", "--out", str(out), "--profile", "crt-like",
                                    "--patterns", "request-flood", "--cadence", "0.05", "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        children: list[psutil.Process] = []
        while time.monotonic() < deadline:  # wait until load runs (first step started)
            time.sleep(0.2)
            children = psutil.Process(proc.pid).children(recursive=True)
            if children and (out / "evidence.sqlite").exists():
                try:
                    if any(e["kind"] == "step-start" for e in load_results(out)["events"]):
                        break
                except Exception:
                    continue
        assert children, "the essential-function monitor process should be running"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert took < 5
    doc = load_results(out)
    assert doc["campaign"]["status"] == "interrupted" and doc["stress"]["status"] == "interrupted"
    steps = [s for p in doc["stress"]["patterns"] for s in p["steps"]]
    assert steps and steps[-1]["verdict"] == "inconclusive" and "interrupted" in steps[-1]["reasons"][0]
    # The monitor is stopped by otfuzz; multiprocessing's helper exits when otfuzz has gone.
    _, alive = psutil.wait_procs(children, timeout=3)
    assert not alive
