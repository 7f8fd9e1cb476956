"""A full disk mid-run: one line naming the problem, a non-zero exit, everything committed kept,
and --resume finishes the run once there is room again.

The disk is "filled" by SQLite's own page limit (PRAGMA max_page_count), which makes every
further write fail with SQLITE_FULL exactly as a full file system does."""

from __future__ import annotations

from pathlib import Path

import pytest

from otfuzz.cli import main
from otfuzz.report.results import load_results
from otfuzz.store.evidence import EvidenceStore


def test_disk_full_stops_with_one_line_and_the_run_resumes(pymodbus_server, tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = pymodbus_server
    run = tmp_path / "run"
    original = EvidenceStore.__init__

    def small_disk(self: EvidenceStore, path: Path) -> None:
        original(self, path)
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        self.db.execute(f"PRAGMA max_page_count = {pages + 40}")

    monkeypatch.setattr(EvidenceStore, "__init__", small_disk)
    status = main(["run", f"modbus://{host}:{port}", "--cases", "5000", "--seed", "8", "--out", str(run), "--quiet",
                   "--no-confirm"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert "\n" not in err and "database or disk is full" in err and f"otfuzz run --resume {run}" in err
    monkeypatch.setattr(EvidenceStore, "__init__", original)

    store = EvidenceStore.open(run)
    next_case, _ = store.progress()
    counted = sum(sum(r.values()) for r in store.counts().values())
    kept = store.anomalies()
    store.close()
    assert counted == next_case < 5000  # what was committed is whole and consistent
    assert next_case > 0 or kept  # and something was committed before the disk filled

    assert main(["run", "--resume", str(run), "--quiet", "--no-confirm"]) == 0
    doc = load_results(run)
    assert doc["totals"]["cases"] == 5000 and doc["campaign"]["status"] == "completed"
