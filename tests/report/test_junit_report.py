"""JUnit XML: one test case per requirement, so CI can gate on verdicts and on SL-T."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from report_samples import hostile_results

from otfuzz.compliance.evidence import EvidenceOptions, build_evidence
from otfuzz.report.junit import write_junit, xml_text


def _write(tmp_path: Path, options: EvidenceOptions) -> tuple[dict, ET.Element]:
    results = hostile_results()
    results["findings"][0]["title"] = "dies \x00\x1b <b>"  # characters XML 1.0 cannot carry
    evidence = build_evidence(results, options)
    return evidence, ET.parse(write_junit(results, evidence, tmp_path / "junit.xml")).getroot()


def test_one_test_case_per_requirement_with_failures_and_skips_from_the_verdicts(tmp_path: Path) -> None:
    evidence, root = _write(tmp_path, EvidenceOptions(component_type="embedded-device"))
    suite = root.find("testsuite[@name='iec62443.requirements']")
    cases = suite.findall("testcase")
    assert len(cases) == len(evidence["requirements"])
    by_name = {case.find("properties/property[@name='requirement']").get("value"): case for case in cases}
    verdicts = {r["id"]: r["verdict"] for r in evidence["requirements"]}
    for req_id, verdict in verdicts.items():
        case = by_name[req_id]
        assert (case.find("failure") is not None) == (verdict == "fail"), req_id
        assert (case.find("skipped") is not None) == (verdict in ("not-tested", "not-applicable")), req_id
    failure = by_name["CR 3.5"].find("failure")
    assert "finding #1 (high crash, 1 occurrences, confirmed)" in failure.text and "\\x00\\x1b <b>" in failure.text
    assert "otfuzz replay RUN --finding 1" in failure.text
    assert suite.get("failures") == str(sum(v == "fail" for v in verdicts.values()))
    findings = root.findall("testsuite[@name='otfuzz.findings']/testcase")
    assert len(findings) == 2  # one case per finding: the confirmed crash fails, the unreproduced reply is skipped
    assert findings[0].find("failure") is not None and findings[1].find("skipped").get("type") == "not-reproduced"
    assert root.get("tests") == str(len(cases) + 2)


def test_known_findings_do_not_fail_the_build(tmp_path: Path) -> None:
    results = hostile_results()
    for f in results["findings"]:
        f["known"] = True
    evidence = build_evidence(results, EvidenceOptions(component_type="embedded-device"))
    root = ET.parse(write_junit(results, evidence, tmp_path / "junit.xml")).getroot()
    assert root.get("failures") == "0"
    cr35 = [c for c in root.iter("testcase") if c.get("name", "").startswith("CR 3.5 ")][0]
    assert cr35.find("skipped").get("type") == "known-findings"


def test_security_level_suite_fails_each_fr_below_its_target(tmp_path: Path) -> None:
    evidence, root = _write(tmp_path, EvidenceOptions(component_type="embedded-device", sl_t=(1, 1, 1, 1, 1, 1, 1)))
    cases = root.findall("testsuite[@name='iec62443.security-levels']/testcase")
    assert len(cases) == 7
    gaps = [fr["gap"] for fr in evidence["security_levels"]["frs"]]
    assert [case.find("failure") is not None for case in cases] == [bool(gap) for gap in gaps]
    fr3 = cases[2].find("failure")
    assert fr3 is not None and "CR 3.5 (failed)" in fr3.text


def test_xml_text_spells_out_characters_xml_cannot_hold() -> None:
    assert xml_text("a\x00b\x1fc\ufffe\td") == "a\\x00b\\x1fc\\xfffe\td"
