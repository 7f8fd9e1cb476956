"""`otfuzz demo`: the README's first command works end to end against a real pymodbus server."""

from __future__ import annotations

import json
from pathlib import Path

from otfuzz.cli import main


def test_demo_runs_a_campaign_against_pymodbus_and_writes_every_report(tmp_path: Path, capsys) -> None:
    run = tmp_path / "demo"
    assert main(["demo", "--duration", "2s", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "completed:" in out and "pymodbus server on 127.0.0.1" in out
    reports = run / "reports"
    for name in ("results.json", "report.html", "report.pdf", "junit.xml", "oscal-assessment-results.json"):
        assert (reports / name).stat().st_size > 0, name
    doc = json.loads((reports / "results.json").read_text())
    assert doc["totals"]["cases"] > 100
    assert doc["target"]["identity"]["vendor"].startswith("otfuzz-demo")
    # The compliance section judges the demo target like any other: pymodbus acts on out-of-spec input.
    assert doc["compliance"]["summary"]["cases"] == doc["totals"]["cases"]
    assert len(doc["compliance"]["security_levels"]["frs"]) == 7
