"""S7comm end to end against the real python-snap7 3.3.0 server: a short campaign keeps the
session (CR/CC, Setup Communication, PDU references) right and finds no target-level anomaly, a
read-only campaign leaves every area as it was (read back through the server with python-snap7's
own client), the policy test sees its marker write, stress runs, and the command line refuses bad
URL options in one line."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import snap7
from targets.s7_server import AREAS, start
from targets.servers import free_port, script, stop_server

from otfuzz.cli import main
from otfuzz.compliance.policy import PolicyTestConfig, run_policy_test
from otfuzz.report.json_report import validate_results
from otfuzz.report.results import load_results

pytestmark = pytest.mark.integration


@pytest.fixture
def s7_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc, port = start()
    try:
        yield proc, port
    finally:
        stop_server(proc)


def _campaign(tmp_path: Path, port: int, cases: int, *extra: str) -> dict:
    run = tmp_path / "run"
    status = main(["run", f"s7://127.0.0.1:{port}?rack=0&slot=1", "--cases", str(cases), "--seed", "3", "--out", str(run),
                   "--quiet", "--minimise-budget", "12", "--confirm-time", "60", *extra])
    assert status == 0
    doc = load_results(run)
    validate_results(doc)
    return doc


def _memory(port: int) -> dict[tuple[str, int], bytes]:
    """Every area of the test server, read through the server by python-snap7's client."""
    client = snap7.client.Client()
    client.connect("127.0.0.1", 0, 1, port)
    try:
        out = {}
        for (area, number), data in AREAS.items():
            if area == "DB":
                out[(area, number)] = bytes(client.db_read(number, 0, len(data)))
            else:
                kind = {"MK": snap7.type.Area.MK, "PE": snap7.type.Area.PE, "PA": snap7.type.Area.PA,
                        "CT": snap7.type.Area.CT, "TM": snap7.type.Area.TM}[area]
                if area in ("CT", "TM"):  # counters and timers: 2 octets each
                    out[(area, number)] = bytes(client.read_area(kind, 0, 0, len(data) // 2))
                else:
                    out[(area, number)] = bytes(client.read_area(kind, 0, 0, len(data)))
        return out
    finally:
        client.disconnect()


def test_campaign_keeps_the_session_right_and_finds_no_target_level_anomaly(tmp_path: Path) -> None:
    """otfuzz starts the server itself (--target-cmd), so a crash would show as its process dying."""
    port = free_port()
    doc = _campaign(tmp_path, port, 300, "--target-cmd", shlex.join([*script("s7_server.py"), "--port", str(port)]))
    assert doc["totals"]["cases"] == 300
    replies = doc["totals"]["replies"]
    assert replies.get("normal", 0) > 40 and replies.get("exception", 0) > 10  # handshake and references held
    assert "Setup Communication" in doc["liveness"]["method"]
    assert doc["target"]["identity"] == {"product_code": "6ES7 315-2EH14-0AB0", "vendor": "Siemens", "revision": "V3.3.0"}
    # python-snap7 neither crashes nor hangs: every anomaly is reply-level (its deviations are
    # pinned in tests/protocols/test_s7.py), and each reproduces on replay
    anomalies = doc["anomalies"]
    assert anomalies and {a["class"] for a in anomalies} <= {"spec-violation", "malformed-reply"}
    assert all(p["ok"] for p in doc["probes"] if p["reason"] == "ok")
    unconfirmed = [a for a in anomalies if a["confirmation"]["status"] != "confirmed"]
    assert len(unconfirmed) <= len(anomalies) // 10, [(a["class"], a["description"]) for a in unconfirmed]
    malformed = {a["reply_detail"] for a in anomalies if a["class"] == "malformed-reply"}
    assert "read SZL reply: lenthdr=0 and n_dr=0 but 206 octets of records follow" in malformed


def test_read_only_campaign_leaves_every_area_unchanged(tmp_path: Path, s7_server) -> None:
    _, port = s7_server
    assert _memory(port) == AREAS
    doc = _campaign(tmp_path, port, 250, "--read-only")
    assert doc["totals"]["cases"] == 250
    assert not {"write_var", "plc_stop", "plc_hot_start", "plc_cold_start"} & {a["template"] for a in doc["anomalies"]}
    assert _memory(port) == AREAS


def test_policy_test_without_a_conduit_sees_the_marker_write_on_the_server(tmp_path: Path, s7_server) -> None:
    _, port = s7_server
    config = PolicyTestConfig(f"s7://127.0.0.1:{port}", ["read"], observe=f"127.0.0.1:{port}", timeout=1.0)
    section = asyncio.run(asyncio.wait_for(run_policy_test(config, tmp_path / "run"), timeout=60))
    ops = {op["name"]: op for op in section["operations"]}
    # the CR-carrying operations went out on fresh connections, without the opening
    assert ops["cotp_connection_request"]["reply_kind"] == "normal" and ops["setup_communication"]["reply_kind"] == "normal"
    assert ops["read_var"]["outcome"] == "passed"
    write = ops["write_var"]
    assert (write["allowed"], write["reply_kind"], write["changed"], write["outcome"]) == (False, "normal", True, "violation")
    assert ops["plc_stop"]["outcome"] == "skipped"
    assert _memory(port)[("DB", 1)][8:12] == b"ZZZZ"


def test_stress_smoke_runs_against_the_real_server(tmp_path: Path, s7_server) -> None:
    _, port = s7_server
    out = tmp_path / "stress"
    proc = subprocess.run([sys.executable, "-m", "otfuzz.cli", "stress", f"s7://127.0.0.1:{port}", "--out", str(out),
                           "--profile", "smoke", "--patterns", "request-flood,protocol-flood", "--step-duration", "0.5",
                           "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = load_results(out)
    flood = next(p for p in doc["stress"]["patterns"] if p["group"] == "protocol-flood")
    assert "read SZL 0x0011" in flood["flood"] and flood["steps"][0]["replies"].get("normal", 0) >= 10
    assert doc["stress"]["verdicts"]["protocol-flood"]["verdict"] == "pass"


@pytest.mark.parametrize("query, words", [("rack=8", "rack=8 is outside 0..7"), ("slot=x", "slot='x' is not a valid int"),
                                          ("tsap=1", "unknown option 'tsap'"), ("pdu=100", "pdu=100 is outside 240..960")])
def test_bad_url_options_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], query: str, words: str) -> None:
    assert main(["run", f"s7://127.0.0.1:10102?{query}", "--cases", "5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_protocols_lists_the_scheme_and_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    assert "s7  (tcp, default port 102)  s7://HOST:102" in out
    for option in ("?rack=0", "?slot=1", "?connection_type=1", "?pdu=480", "?db=1"):
        assert option in out
