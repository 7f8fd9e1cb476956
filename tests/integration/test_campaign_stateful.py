"""Campaigns against real DNP3 (dnp3py) and IEC 104 (c104/lib60870) servers: the stateful
sessions keep sequence numbers right, probing never blames the target for otfuzz's own doing,
and every anomaly recorded is confirmed by replay (no false anomalies)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from otfuzz.cli import main
from otfuzz.report.json_report import validate_results
from otfuzz.report.results import load_results
from targets.iec104_server import DEFAULT_CA
from targets.servers import TARGETS, free_port


def _campaign(tmp_path: Path, url: str, server: list[str], cases: int, *extra: str) -> dict:
    run = tmp_path / "run"
    status = main(["run", url, "--cases", str(cases), "--seed", "3", "--out", str(run), "--quiet",
                   "--target-cmd", shlex.join(server), "--minimise-budget", "12", "--confirm-time", "60", *extra])
    assert status == 0
    doc = load_results(run)
    validate_results(doc)
    return doc


def _assert_no_false_anomalies(doc: dict) -> None:
    """A false anomaly is one otfuzz caused itself (a displaced association, a sequence number
    out of step): it would show as a hang or crash that replay cannot reproduce, or as a stream
    of unreproducible malformed replies. A real server may still answer one odd frame
    differently on replay (lib60870 is threaded); that record says "not reproduced" honestly."""
    unconfirmed = [a for a in doc["anomalies"] if a["confirmation"]["status"] != "confirmed"]
    for anomaly in unconfirmed:
        assert anomaly["class"] in ("malformed-reply", "spec-violation"), (anomaly["class"], anomaly["description"])
        assert anomaly["confirmation"]["status"] == "not reproduced"
    assert len(unconfirmed) <= max(1, len(doc["anomalies"]) // 10), [(a["class"], a["reply_detail"]) for a in unconfirmed]
    # Findings: one per key, every anomaly in exactly one, every one replayed or honestly marked.
    findings = doc["findings"]
    assert sum(f["occurrences"] for f in findings) == len(doc["anomalies"])
    assert len({f["key"] for f in findings}) == len(findings)
    for finding in findings:
        assert finding["confirmation"]["status"] in ("confirmed", "not reproduced"), finding["confirmation"]
        if finding["confirmation"]["status"] != "confirmed":
            assert finding["class"] in ("malformed-reply", "spec-violation"), finding["title"]


def test_iec104_campaign_against_c104_confirms_every_anomaly(tmp_path: Path) -> None:
    port = free_port()
    server = [sys.executable, str(TARGETS / "iec104_server.py"), "--port", str(port)]
    doc = _campaign(tmp_path, f"iec104://127.0.0.1:{port}?ca={DEFAULT_CA}", server, 400)
    assert doc["totals"]["cases"] == 400
    assert doc["totals"]["replies"].get("normal", 0) > 20  # the session kept STARTDT and N(S)/N(R) right
    assert "STARTDT" in doc["liveness"]["method"] or "interrogation" in doc["liveness"]["method"]
    _assert_no_false_anomalies(doc)


def test_dnp3_campaign_against_dnp3py_probes_on_the_fuzzing_association(tmp_path: Path) -> None:
    port = free_port()
    server = [sys.executable, str(TARGETS / "dnp3_outstation.py"), "--port", str(port)]
    doc = _campaign(tmp_path, f"dnp3://127.0.0.1:{port}?outstation=1&master=2", server, 300)
    assert doc["totals"]["cases"] == 300
    assert doc["totals"]["replies"].get("normal", 0) > 20
    assert "one master at a time" in doc["liveness"]["method"]
    assert all(p["ok"] for p in doc["probes"] if p["reason"] == "ok")
    _assert_no_false_anomalies(doc)


def test_dnp3_concurrency_is_refused_for_a_single_association_protocol(tmp_path: Path, capsys) -> None:
    assert main(["run", "dnp3://127.0.0.1:20000", "--cases", "5", "--concurrency", "2", "--out", str(tmp_path / "r")]) == 2
    assert "one association at a time" in capsys.readouterr().err


@pytest.mark.parametrize("url, hint", [("iec104://127.0.0.1:{port}?ca=999", "ca"), ("dnp3://127.0.0.1:{port}?outstation=77", "outstation")])
def test_wrong_address_parameters_stop_the_campaign_before_it_starts(tmp_path: Path, capsys, url: str, hint: str) -> None:
    from targets.servers import script, start_server, stop_server

    port = free_port()
    name = "iec104_server.py" if url.startswith("iec104") else "dnp3_outstation.py"
    proc = start_server([*script(name), "--port", str(port)], port)
    try:
        assert main(["run", url.format(port=port), "--cases", "5", "--out", str(tmp_path / "r"), "--quiet", "--probe-deadline", "0.5"]) == 2
    finally:
        stop_server(proc)
    err = capsys.readouterr().err.strip()
    assert "baseline probe failed" in err and f"check ?{hint}=" in err
    assert not (tmp_path / "r").exists()
