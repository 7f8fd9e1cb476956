"""`otfuzz report`, `bundle`, `verify` and `keygen` end to end on a real run folder.

The run folder is written through the evidence store from the hand-made sample, so these tests
go through the lead's `load_results` exactly as a user's run does.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from report_samples import hostile_results, write_run

from otfuzz.cli import main
from otfuzz.report.bundle import FILES


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", hostile_results())


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("otfuzz: error: ") and "\n" not in err, err
    return err


def test_report_writes_every_format_from_a_run_folder(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("requirements:\n  - id: CR 3.3\n    reference: Test plan TP-1\n")
    status = main(["report", str(run), "--format", "html,pdf,json,junit,oscal", "--component-type", "embedded-device",
                   "--sl-t", "2,2,2,1,1,1,2", "--met-by-other-means", str(other), "--operator", "Grace",
                   "--independence", "independent-person"])
    out = capsys.readouterr()
    assert status == 0
    reports = run / "reports"
    names = {"report.html", "report.pdf", "results.json", "junit.xml", "oscal-assessment-results.json",
             "catalogue.yaml", "mapping.yaml"}
    assert {p.name for p in reports.iterdir()} == names
    assert out.out.split() == [str(reports / n) for n in ["report.html", "report.pdf", "results.json", "junit.xml",
                                                           "oscal-assessment-results.json", "catalogue.yaml", "mapping.yaml"]]
    doc = json.loads((reports / "results.json").read_text())
    compliance = doc["compliance"]
    assert doc["campaign"]["id"] == "run-20250101-100000" and len(doc["anomalies"]) == 2
    assert compliance["tester"]["operator"] == "Grace" and compliance["tester"]["organisation"] == "ACME Test Lab"
    assert compliance["security_levels"]["sl_t"] == [2, 2, 2, 1, 1, 1, 2]
    assert {r["id"]: r["verdict"] for r in compliance["requirements"]}["CR 3.3"] == "pass"
    assert "requirements failed" in out.err


def test_report_defaults_to_json_in_the_run_folder(run: Path) -> None:
    assert main(["report", str(run)]) == 0
    assert [p.name for p in (run / "reports").iterdir()] == ["results.json"]
    assert json.loads((run / "reports" / "results.json").read_text())["compliance"]["security_levels"] is None


@pytest.mark.parametrize(("args", "message"), [
    (["--sl-t", "2,2,5,2,2,2,2", "--component-type", "host-device"], "outside 1-4"),
    (["--component-type", "toaster"], "invalid choice: 'toaster'"),
    (["--format", "html,docx"], "unknown report format 'docx'"),
    (["--sl-t", "2"], "needs a component type"),
    (["--met-by-other-means", "/nonexistent/other.yaml"], "cannot read met-by-other-means file"),
    (["--independence", "friend"], "unknown independence level"),
])
def test_bad_report_options_are_one_line_errors_with_status_2(
        run: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["report", str(run), *args]) == 2
    assert message in one_line_error(capsys)


def test_missing_run_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert main(["bundle", str(tmp_path / "nope"), "--key", str(tmp_path / "k.key")]) == 2
    assert "does not exist" in one_line_error(capsys)


def test_mapping_naming_an_unknown_requirement_is_a_one_line_error(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from otfuzz.compliance.mapping import mapping_path

    bad = tmp_path / "mapping.yaml"
    bad.write_text(mapping_path().read_text().replace("requirement: CR 3.5,", "requirement: CR 3.55,"))
    assert main(["report", str(run), "--mapping", str(bad)]) == 2
    assert "unknown requirement 'CR 3.55'" in one_line_error(capsys)


def test_keygen_bundle_verify_round_trip_and_exit_statuses(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run), "--format", "html,json"]) == 0
    assert main(["keygen", "--out", str(tmp_path / "lab")]) == 0
    fingerprint = capsys.readouterr().out.split("fingerprint: ")[1].strip()
    config = tmp_path / "campaign.yaml"
    config.write_text("seed: 7\n")
    assert main(["bundle", str(run), "--key", str(tmp_path / "lab.key"), "--include", str(config)]) == 0
    bundle = tmp_path / "run.bundle.tar"
    assert capsys.readouterr().out.strip() == str(bundle)

    assert main(["verify", str(bundle), "--key", str(tmp_path / "lab.pub")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: signature valid, 4 files")
    assert main(["verify", str(bundle), "--fingerprint", fingerprint]) == 0
    capsys.readouterr()

    with tarfile.open(bundle) as tar:
        member = tar.getmember(FILES + "evidence.sqlite")
    data = bytearray(bundle.read_bytes())
    data[member.offset_data + 100] ^= 0xFF
    bundle.write_bytes(bytes(data))
    assert main(["verify", str(bundle), "--key", str(tmp_path / "lab.pub")]) == 1
    assert f"ALTERED: {FILES}evidence.sqlite" in capsys.readouterr().out

    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    data[member.offset_data + 100] ^= 0xFF  # restore: now only the key is wrong
    bundle.write_bytes(bytes(data))
    assert main(["verify", str(bundle), "--key", str(tmp_path / "other.pub")]) == 2
    assert "not by the expected key" in one_line_error(capsys)
    bundle.write_bytes(bytes(data[: len(data) // 2]))
    assert main(["verify", str(bundle)]) == 2
    assert "truncated" in one_line_error(capsys)
