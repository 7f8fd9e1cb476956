"""Bad input: one line naming the problem, exit status 2, nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otfuzz.cli import main
from targets.servers import free_port


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("otfuzz: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_url(capsys, tmp_path: Path) -> None:
    assert "bad target URL" in _error(capsys, ["run", "127.0.0.1:502", "--cases", "5", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_unknown_protocol(capsys, tmp_path: Path) -> None:
    assert "unknown protocol 'profinet'" in _error(capsys, ["run", "profinet://127.0.0.1:1", "--cases", "5", "--out", str(tmp_path / "r")])


def test_unknown_url_option(capsys, tmp_path: Path) -> None:
    assert "unknown option 'colour'" in _error(capsys, ["run", "modbus://127.0.0.1:1?colour=red", "--cases", "5", "--out", str(tmp_path / "r")])


def test_bad_command_line_option(capsys) -> None:
    assert "unrecognized arguments: --frobnicate" in _error(capsys, ["run", "modbus://127.0.0.1:1", "--frobnicate"])


def test_bad_duration(capsys) -> None:
    assert "bad duration" in _error(capsys, ["run", "modbus://127.0.0.1:1", "--duration", "soon"])


def test_unbounded_campaign_is_refused(capsys, tmp_path: Path) -> None:
    assert "--duration or --cases" in _error(capsys, ["run", "modbus://127.0.0.1:1", "--out", str(tmp_path / "r")])


def test_target_outside_scope_is_refused_before_anything_is_sent(capsys, tmp_path: Path) -> None:
    err = _error(capsys, ["run", "modbus://192.0.2.10:502", "--cases", "5", "--out", str(tmp_path / "r")])
    assert "outside the declared scope" in err and "--scope 192.0.2.10" in err
    assert not (tmp_path / "r").exists()


def test_unreachable_target_leaves_no_run_folder(capsys, tmp_path: Path) -> None:
    port = free_port()
    err = _error(capsys, ["run", f"modbus://127.0.0.1:{port}", "--cases", "5", "--out", str(tmp_path / "r"), "--quiet"])
    assert "unreachable" in err and "connection refused" in err
    assert not (tmp_path / "r").exists()


def test_unwritable_output_folder(capsys, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        locked = Path("/proc/otfuzz-no-such-place")  # not writable even for root (CI runs as root)
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    assert "cannot create run folder" in _error(capsys, ["run", "modbus://127.0.0.1:1", "--cases", "5", "--out", str(locked / "r")])


def test_output_folder_that_is_a_file(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot create run folder" in _error(capsys, ["run", "modbus://127.0.0.1:1", "--cases", "5", "--out", str(blocker / "r")])


def test_existing_run_folder_without_resume(capsys, tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "evidence.sqlite").write_bytes(b"")
    err = _error(capsys, ["run", "modbus://127.0.0.1:1", "--cases", "5", "--out", str(run)])
    assert "already holds a run" in err and f"--resume {run}" in err


def test_resume_of_a_folder_that_is_not_a_run(capsys, tmp_path: Path) -> None:
    assert "not an otfuzz run folder" in _error(capsys, ["run", "--resume", str(tmp_path)])


def test_report_of_missing_run_folder(capsys, tmp_path: Path) -> None:
    assert "does not exist" in _error(capsys, ["report", str(tmp_path / "nope")])


def test_replay_of_missing_run_folder(capsys, tmp_path: Path) -> None:
    assert "not an otfuzz run folder" in _error(capsys, ["replay", str(tmp_path), "--case", "1"])


def test_published_schemas_are_printed_and_are_json_schemas(capsys) -> None:
    import json

    import jsonschema

    for name in ("results", "compliance", "system"):
        assert main(["schema", name]) == 0
        schema = json.loads(capsys.readouterr().out)
        jsonschema.Draft202012Validator.check_schema(schema)


def test_path_on_a_protocol_without_paths_is_refused(capsys, tmp_path: Path) -> None:
    err = _error(capsys, ["run", "modbus://127.0.0.1:502/plc", "--cases", "5", "--out", str(tmp_path / "r")])
    assert "unexpected path '/plc'" in err
    assert not (tmp_path / "r").exists()
