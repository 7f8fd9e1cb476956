"""otfuzz run --seeds: captured requests first and as templates, sessions as prefixes, replayable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from otfuzz.capture.seeds import captured_seeds, import_capture
from otfuzz.cli import main
from otfuzz.engine.generator import CAPTURE_GROUP, CaseGenerator
from otfuzz.protocols.iec104 import IEC104
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.store.evidence import EvidenceStore


def test_generator_sends_captured_requests_first_then_fuzzes_their_values(modbus_capture, tmp_path: Path) -> None:
    written, document = import_capture(modbus_capture.path, tmp_path)
    protocol = ModbusTCP()
    seeds = captured_seeds(protocol, "modbus", 502, written, document["sha256"])
    generator = CaseGenerator(protocol, 7, seeds=seeds)
    first = [generator.case(i) for i in range(len(modbus_capture.requests))]
    assert [c.frames for c in first] == [(r,) for r in modbus_capture.requests]
    assert {c.group for c in first} == {CAPTURE_GROUP}
    # the templates carry the device's real values: boundary cases keep address 17 elsewhere
    assert generator.templates[0].values["address"] == 17
    cases = [generator.case(i) for i in range(4, 1500)]
    assert any("captured session step" in c.description for c in cases if c.group == "sequence")
    captured = [c for c in cases if c.group == "sequence" and "captured session step" in c.description]
    assert all(set(c.frames) & set(modbus_capture.requests) or len(c.frames) == 1 for c in captured)
    again = CaseGenerator(protocol, 7, seeds=captured_seeds(protocol, "modbus", 502, written, document["sha256"]))
    assert [again.case(i).frames for i in range(0, 1500, 37)] == [generator.case(i).frames for i in range(0, 1500, 37)]
    plain = CaseGenerator(protocol, 7)
    assert plain.case(0).frames != first[0].frames


def test_read_only_leaves_out_captured_writes(modbus_capture, tmp_path: Path) -> None:
    written, document = import_capture(modbus_capture.path, tmp_path)
    protocol = ModbusTCP()
    generator = CaseGenerator(protocol, 1, read_only=True, seeds=captured_seeds(protocol, "modbus", 502, written))
    assert [f for f, _ in generator.replay] == [r for r in modbus_capture.requests if r[7] != 6]


def test_iec104_captured_asdus_are_sent_with_the_sessions_sequence_numbers(iec104_capture, tmp_path: Path) -> None:
    written, _ = import_capture(iec104_capture.path, tmp_path)
    protocol = IEC104({"ca": "47"})
    seeds = captured_seeds(protocol, "iec104", 2404, written)
    assert [t.name for t in seeds.templates] == ["general_interrogation", "set_point_scaled"]
    assert all(f[2:6] == b"\0\0\0\0" for f in seeds.requests)  # N(S), N(R) left to the session


def test_campaign_from_seeds_records_seed_file_and_hash_and_replays(modbus_capture, modbus_server: int, tmp_path: Path) -> None:
    written, document = import_capture(modbus_capture.path, tmp_path / "seeds")
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "otfuzz.cli", "run", f"modbus://127.0.0.1:{modbus_server}", "--seeds", str(written),
            "--cases", "40", "--out", str(run), "--no-confirm", "--quiet", "--groups", "boundary,structural,mutation,sequence"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    store = EvidenceStore.open(run)
    try:
        assert store.counts()[CAPTURE_GROUP] == {"normal": 4}
        campaign = store.get_meta("campaign")
        assert campaign["config"]["seeds_sha256"] == document["sha256"]
        assert store.get_meta("seeds")["requests"] == 4
    finally:
        store.close()
    assert main(["report", str(run), "--format", "html"]) == 0
    html = next((run / "reports").glob("*.html")).read_text()
    assert str(written) in html and document["sha256"] in html
    edited = json.loads(written.read_text())
    edited["endpoints"][0]["requests"].pop()
    del edited["sha256"]
    written.write_text(json.dumps(edited))
    assert main(["replay", str(run), "--case", "0", "--dry-run"]) == 2  # the seeds changed: refused


def test_replay_regenerates_the_captured_case(modbus_capture, modbus_server: int, tmp_path: Path, capsys) -> None:
    written, _ = import_capture(modbus_capture.path, tmp_path / "seeds")
    run = tmp_path / "run"
    assert main(["run", f"modbus://127.0.0.1:{modbus_server}", "--seeds", str(written), "--cases", "6", "--out", str(run),
                 "--no-confirm", "--quiet", "--groups", "boundary"]) == 0
    capsys.readouterr()
    assert main(["replay", str(run), "--case", "2", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames_hex"] == [modbus_capture.requests[2].hex()]


def test_seeds_without_the_targets_protocol_are_refused(modbus_capture, tmp_path: Path, capsys) -> None:
    written, _ = import_capture(modbus_capture.path, tmp_path / "seeds")
    assert main(["run", "dnp3://127.0.0.1:1", "--seeds", str(written), "--cases", "5", "--out", str(tmp_path / "r")]) == 2
    assert "has no dnp3 endpoint" in capsys.readouterr().err
