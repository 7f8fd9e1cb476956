"""A watcher's read-only view of an evidence store (the dashboard's): it cannot write, it does
not hold back the campaign's commits, and it leaves a finished run folder exactly as it was."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from otfuzz.errors import OtfuzzError
from otfuzz.store.evidence import EvidenceStore
from targets.dashboard_process import started_store


def test_a_reader_in_the_middle_of_a_read_does_not_delay_the_writers_commits(tmp_path: Path) -> None:
    writer = started_store(tmp_path / "run")
    reader = EvidenceStore.open(tmp_path / "run", read_only=True)
    try:
        reader.db.execute("BEGIN")
        reader.db.execute("SELECT COUNT(*) FROM counts").fetchone()  # a read transaction stays open
        started = time.perf_counter()
        for n in range(20):
            writer.count("boundary", "normal", 5)
            writer.flush(n, float(n), (float(n), 5 * (n + 1), 0))
        assert time.perf_counter() - started < 1.0
        assert reader.counts() == {}  # its snapshot is the one it began with
        reader.db.execute("COMMIT")
        assert reader.counts() == {"boundary": {"normal": 100}}
        assert reader.timeline_tail(2) == [{"t": 18.0, "cases": 95, "anomalies": 0}, {"t": 19.0, "cases": 100, "anomalies": 0}]
        with pytest.raises(OtfuzzError, match="readonly"):
            reader.set_meta("x", 1)
    finally:
        reader.close()
        writer.close()


def test_reading_a_finished_run_leaves_its_folder_byte_for_byte_as_it_was(tmp_path: Path) -> None:
    run = tmp_path / "run"
    writer = started_store(run)
    writer.count("boundary", "normal", 3)
    writer.flush(3, 1.0)
    writer.close()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    reader = EvidenceStore.open(run, read_only=True)
    assert reader.counts() == {"boundary": {"normal": 3}}
    reader.close()
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()} == before
