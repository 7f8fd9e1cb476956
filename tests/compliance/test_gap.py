"""The SL gap per zone for a worked example whose answer the test computes from the catalogue.

Three zones, all SL-T 1 except control's FR3 (2). Evidence: a clean fuzz run of the PLC, a fuzz
run of the SCADA server that crashed it, a policy test through a conduit that obeys its policy
(into control) and one through a conduit that leaks (into supervisory), and countermeasures that
cover every other SL 1 requirement. A third conduit is never tested.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from system_fixtures import otfuzz, record_fuzz_run, servers, write_system

from otfuzz.compliance.catalogue import SYSTEM, load_catalogue
from otfuzz.compliance.gap import format_gap, gap_section
from otfuzz.compliance.policy import PolicyTestConfig, run_policy_test
from otfuzz.compliance.system import FRS, load_system

FUZZ_GROUPS = {"boundary": 100, "structural": 100, "mutation": 100, "sequence": 100}
EVIDENCED = ("SR 3.5", "SR 5.2", "SR 7.1")  # what the tests speak to; countermeasures cover the other SL 1 requirements


def expected_sl_c(met: set[str]) -> list[int]:
    """IEC 62443-3-3 SL-C per FR: the highest n for which every requirement with sl_min <= n is met."""
    catalogue = load_catalogue()
    out = []
    for fr in FRS:
        members = [r for r in catalogue.applicable(SYSTEM) if r.fr == fr]
        out.append(max(n for n in range(5) if all(r.id in met for r in members if r.sl_min <= n)))
    return out


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("gap")
    sl1 = sorted(r.id for r in load_catalogue().applicable(SYSTEM) if r.sl_min == 1 and r.id not in EVIDENCED)
    with servers() as s:
        plc, scada = s.modbus(), s.modbus()
        obeys, leaks = s.relay(plc, [1, 2, 3, 4]), s.relay(scada, [1, 2, 3, 4], leak=True)
        system = write_system(tmp, f"""
            version: 1
            system: Worked example
            organisation: {{role: asset-owner}}
            assets:
              - {{name: bi, address: 127.0.0.1, type: host-device}}
              - {{name: scada, address: 127.0.0.1, type: host-device, services: [{{protocol: modbus, port: {scada}}}]}}
              - {{name: plc, address: 127.0.0.1, type: embedded-device, services: [{{protocol: modbus, port: {plc}}}]}}
            zones:
              - {{name: enterprise, sl_t: [1, 1, 1, 1, 1, 1, 1], assets: [bi]}}
              - name: supervisory
                sl_t: [1, 1, 1, 1, 1, 1, 1]
                assets: [scada]
                countermeasures:
                  - {{requirements: {json.dumps(sl1 + ['SR 5.2'])}, by: reviewed design, reference: DR-1}}
              - name: control
                sl_t: [1, 1, 2, 1, 1, 1, 1]
                assets: [plc]
                countermeasures:
                  - {{requirements: {json.dumps(sl1)}, by: reviewed design, reference: DR-1}}
            conduits:
              - name: sup-ctl
                zones: [supervisory, control]
                channels:
                  - {{name: polls, protocol: modbus, server: plc, from: supervisory, via: "127.0.0.1:{obeys}", observe: true,
                      policy: {{allow: [1, 2, 3, 4]}}}}
              - name: ctl-sup
                zones: [control, supervisory]
                channels:
                  - {{name: reads, protocol: modbus, server: scada, from: control, via: "127.0.0.1:{leaks}", observe: true,
                      policy: {{allow: [1, 2, 3, 4]}}}}
              - name: ent-sup
                zones: [enterprise, supervisory]
                channels:
                  - {{name: reports, protocol: modbus, server: scada, from: enterprise, via: "127.0.0.1:9"}}
            """)
        runs = tmp / "runs"
        for name, port, conduit in (("policy-ok", obeys, "sup-ctl/polls"), ("policy-leak", leaks, "ctl-sup/reads")):
            server = plc if port == obeys else scada
            config = PolicyTestConfig(f"modbus://127.0.0.1:{port}", [1, 2, 3, 4], observe=f"127.0.0.1:{server}", timeout=0.5,
                                      conduit=conduit.split("/")[0], channel=conduit.split("/")[1])
            asyncio.run(asyncio.wait_for(run_policy_test(config, runs / name), timeout=60))
    record_fuzz_run(runs / "fuzz-plc", plc, FUZZ_GROUPS)
    record_fuzz_run(runs / "fuzz-scada", scada, FUZZ_GROUPS, [("boundary", "crash")])
    model = load_system(system)
    return {"system": system, "runs": runs, "sl1": set(sl1), "section": gap_section(model, [runs])}


def zone(section: dict, name: str) -> dict:
    return next(z for z in section["zones"] if z["name"] == name)


def verdict(section: dict, zone_name: str, req: str) -> str:
    return next(r["verdict"] for r in zone(section, zone_name)["requirements"] if r["id"] == req)


def test_zone_sl_c_is_the_cumulative_rule_over_combined_evidence(worked: dict) -> None:
    section, sl1 = worked["section"], worked["sl1"]
    # control: clean fuzzing meets SR 3.5, the obeying conduit meets SR 5.2; SR 7.1 has partial evidence only
    assert zone(section, "control")["sl_c"] == expected_sl_c(sl1 | {"SR 3.5", "SR 5.2"}) == [1, 1, 1, 1, 1, 1, 0]
    # supervisory: the crash fails SR 3.5 and SR 7.1, the leak fails SR 5.2 and SR 5.1 despite the countermeasures
    assert zone(section, "supervisory")["sl_c"] == expected_sl_c(sl1 - {"SR 5.1"}) == [1, 1, 0, 1, 0, 1, 0]
    # enterprise: no evidence, no countermeasure
    assert zone(section, "enterprise")["sl_c"] == expected_sl_c(set()) == [0] * 7
    assert zone(section, "control")["gap"] == [0, 0, 1, 0, 0, 0, 1]


def test_each_fr_names_what_blocks_it(worked: dict) -> None:
    control = {fr["fr"]: fr for fr in zone(worked["section"], "control")["frs"]}
    assert [(b["id"], b["status"]) for b in control["FR7"]["blocked_by"]] == [("SR 7.1", "partial evidence")]
    assert ("SR 3.7", "partial evidence") in [(b["id"], b["status"]) for b in control["FR3"]["blocked_by"]]
    supervisory = {fr["fr"]: fr for fr in zone(worked["section"], "supervisory")["frs"]}
    assert {("SR 5.1", "failed"), ("SR 5.2", "failed")} <= {(b["id"], b["status"]) for b in supervisory["FR5"]["blocked_by"]}
    assert ("SR 3.5", "failed") in [(b["id"], b["status"]) for b in supervisory["FR3"]["blocked_by"]]


def test_observed_failure_is_not_overridden_by_a_declared_countermeasure(worked: dict) -> None:
    sr52 = next(r for r in zone(worked["section"], "supervisory")["requirements"] if r["id"] == "SR 5.2")
    assert sr52["verdict"] == "fail" and sr52["countermeasure"] is not None
    assert "contradicts" in sr52["notes"][0]
    assert verdict(worked["section"], "control", "SR 5.1") == "pass"  # countermeasure + partial policy evidence


def test_untested_conduits_and_attribution_of_runs(worked: dict) -> None:
    section = worked["section"]
    assert section["untested_conduits"] == ["ent-sup"]
    runs = {Path(r["path"]).name: r for r in section["runs"]}
    assert runs["fuzz-plc"]["asset"] == "plc" and runs["fuzz-scada"]["asset"] == "scada"
    assert runs["policy-leak"]["channels"] == ["ctl-sup/reads"] and runs["policy-leak"]["kind"] == "policy"
    assert section["unattributed_runs"] == []
    leak = next(c for c in section["conduits"] if c["name"] == "ctl-sup")["channels"][0]
    assert leak["violations"] > 0 and leak["policy_runs"]


def test_gap_table_shows_each_zone_fr_and_the_untested_conduits(worked: dict) -> None:
    table = format_gap(worked["section"])
    assert "control      FR7 RA   1     0     1    SR 7.1 (partial evidence)" in table
    assert "supervisory  FR5 RDF  1     0     1    SR 5.1 failed, SR 5.2 failed" in table
    assert "Conduits never tested: ent-sup" in table


def test_gap_command_writes_gap_json_and_refuses_missing_runs(worked: dict, tmp_path: Path) -> None:
    result = otfuzz("gap", str(worked["system"]), str(worked["runs"]), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert "Conduits never tested: ent-sup" in result.stdout
    written = json.loads((tmp_path / "report" / "gap.json").read_text())
    assert [z["sl_c"] for z in written["zones"]] == [z["sl_c"] for z in worked["section"]["zones"]]
    missing = otfuzz("gap", str(worked["system"]), str(tmp_path / "no-such-run"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_gap_command_writes_the_system_view_into_html_and_pdf_reports(worked: dict, tmp_path: Path) -> None:
    from pypdf import PdfReader

    result = otfuzz("gap", str(worked["system"]), str(worked["runs"]), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "report" / "gap.html").read_text()
    assert "Zone supervisory" in html and "Conduits never tested:</strong> ent-sup" in html
    assert "http://" not in html.replace("http-equiv", "") and "<script" not in html
    text = " ".join(page.extract_text() for page in PdfReader(tmp_path / "report" / "gap.pdf").pages)
    assert "Zone control" in text and "SR 5.1 (failed)" in text and "ent-sup" in text


def test_gap_report_escapes_names_from_the_system_model() -> None:
    from otfuzz.report.system import render_gap_html

    section = {"system": {"name": "<script>alert(1)</script>", "role": None}, "zones": [], "conduits": [],
               "untested_conduits": ["<b>c</b>"], "unattributed_runs": []}
    html = render_gap_html(section)
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;c&lt;/b&gt;" in html


def test_run_report_gains_the_system_view_in_html_pdf_and_json(worked: dict, tmp_path: Path) -> None:
    from pypdf import PdfReader

    runs = worked["runs"]
    others = [str(p) for p in sorted(runs.iterdir()) if p.name != "fuzz-plc"]
    result = otfuzz("report", str(runs / "fuzz-plc"), "--format", "json,html,pdf", "--out", str(tmp_path / "r"),
                    "--system", str(worked["system"]), "--with-runs", *others)
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [z["sl_c"] for z in doc["system_gap"]["zones"]] == [z["sl_c"] for z in worked["section"]["zones"]]
    html = (tmp_path / "r" / "report.html").read_text()
    assert "System view: security-level gap per zone (Worked example)" in html and "Zone control" in html
    text = " ".join(page.extract_text() for page in PdfReader(tmp_path / "r" / "report.pdf").pages)
    assert "security-level gap per zone" in text and "ent-sup" in text


def test_with_runs_without_a_system_model_is_refused(worked: dict) -> None:
    result = otfuzz("report", str(worked["runs"] / "fuzz-plc"), "--with-runs", str(worked["runs"] / "fuzz-scada"))
    assert result.returncode == 2 and "--with-runs needs --system" in result.stderr
