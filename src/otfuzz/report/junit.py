"""JUnit XML: one test case per requirement, so a vendor's CI can gate a release on the verdicts.

A failed requirement is a JUnit failure naming its findings; a requirement nothing exercised is
skipped; partial evidence passes (no failure was found) with the caveat in its output, since
JUnit has no "partial". A second suite has one case per finding, failing unless the baseline
the report was made with knows it; a requirement failed only by known findings is skipped, so
a vendor's CI fails on new defects only. When an SL-T was given, a second suite has one case per foundational
requirement that fails if the evidence does not support the target level. Text from the device
can reach failure messages, so characters XML 1.0 cannot carry are spelled out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: Any) -> str:
    """Text XML 1.0 can hold: other characters become \\xNN."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", "" if value is None else str(value))


def junit_tree(results: Mapping[str, Any], evidence: Mapping[str, Any]) -> ET.ElementTree:
    """Build the JUnit document (testsuites > testsuite > testcase)."""
    campaign = results.get("campaign") or {}
    elapsed = float(campaign.get("elapsed_s") or 0.0)
    findings = {f.get("id"): f for f in results.get("findings") or [] if isinstance(f, Mapping)}
    root = ET.Element("testsuites", name="otfuzz IEC 62443 evidence")
    suite = ET.SubElement(root, "testsuite", name="iec62443.requirements", timestamp=str(campaign.get("started_at") or ""),
                          hostname=str((results.get("target") or {}).get("address") or ""))
    props = ET.SubElement(suite, "properties")
    for name, value in (("target", (results.get("target") or {}).get("url")), ("campaign", campaign.get("id")),
                        ("seed", campaign.get("seed")), ("config_sha256", campaign.get("config_sha256")),
                        ("component_type", (evidence.get("assessed_object") or {}).get("component_type"))):
        if value is not None:
            ET.SubElement(props, "property", name=name, value=xml_text(value))
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for req in evidence.get("requirements") or []:
        counts["tests"] += 1
        case = ET.SubElement(suite, "testcase", name=xml_text(f"{req['id']} {req['title']}"),
                             classname=f"iec62443.{req['part']}.{req.get('fr') or 'process'}", time=f"{elapsed:.3f}")
        case_props = ET.SubElement(case, "properties")
        ET.SubElement(case_props, "property", name="requirement", value=req["id"])
        ET.SubElement(case_props, "property", name="verdict", value=req["verdict"])
        for e in req.get("evidence") or []:
            ET.SubElement(case_props, "property", name=f"evidence.{e['rule']}",
                          value=f"{e['strength']}: {e['outcome']}, {e['cases']} cases")
        against = [findings.get(i) for i in req.get("finding_ids") or []]
        if req["verdict"] == "fail" and against and all(f is not None and f.get("known") for f in against):
            counts["skipped"] += 1
            ids = ", ".join(f"#{f['id']}" for f in against if f is not None)
            ET.SubElement(case, "skipped", type="known-findings",
                          message=xml_text(f"fail, by known findings only ({ids}): {req['reason']}"))
        elif req["verdict"] == "fail":
            counts["failures"] += 1
            failure = ET.SubElement(case, "failure", message=xml_text(req["reason"]), type="requirement-failed")
            failure.text = xml_text("\n".join(_finding_line(findings.get(i), i) for i in req.get("finding_ids") or []))
        elif req["verdict"] in ("not-tested", "not-applicable"):
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=xml_text(f"{req['verdict']}: {req['reason']}"))
        out = ET.SubElement(case, "system-out")
        out.text = xml_text("\n".join([f"{req['verdict']}: {req['reason']}", *req.get("notes", [])]))
    suite.set("tests", str(counts["tests"]))
    suite.set("failures", str(counts["failures"]))
    suite.set("errors", "0")
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", f"{elapsed:.3f}")
    levels = evidence.get("security_levels")
    totals = dict(counts)
    if findings:
        finding_suite = ET.SubElement(root, "testsuite", name="otfuzz.findings")
        failed = known = 0
        for f in findings.values():
            case = ET.SubElement(finding_suite, "testcase", classname=f"otfuzz.findings.{f.get('severity', 'medium')}",
                                 name=xml_text(f"finding {f.get('id')}: {f.get('title', '')}"))
            status = str((f.get("confirmation") or {}).get("status", ""))
            if f.get("known"):
                known += 1
                ET.SubElement(case, "skipped", type="known-finding",
                              message=xml_text(f"known from the baseline{': ' + str(f['known_note']) if f.get('known_note') else ''}"))
            elif status == "not reproduced":
                known += 1
                ET.SubElement(case, "skipped", type="not-reproduced", message=xml_text("not reproduced on replay"))
            else:
                failed += 1
                failure = ET.SubElement(case, "failure", type=str(f.get("class", "finding")),
                                        message=xml_text(f"{f.get('severity')} {f.get('class')}: {f.get('title', '')}"))
                failure.text = xml_text(_finding_line(f, f.get("id")))
        finding_suite.set("tests", str(len(findings)))
        finding_suite.set("failures", str(failed))
        finding_suite.set("errors", "0")
        finding_suite.set("skipped", str(known))
        totals["tests"] += len(findings)
        totals["failures"] += failed
        totals["skipped"] += known
    if levels and levels.get("sl_t"):
        level_suite = ET.SubElement(root, "testsuite", name="iec62443.security-levels")
        failures = 0
        for fr in levels["frs"]:
            case = ET.SubElement(level_suite, "testcase", classname="iec62443.security-levels",
                                 name=f"{fr['fr']} {fr['abbreviation']}: SL-C {fr['sl_c']} >= SL-T {fr['sl_t']}")
            if fr["gap"]:
                failures += 1
                blockers = ", ".join(f"{b['id']} ({b['status']})" for b in fr["missing"])
                failure = ET.SubElement(case, "failure", type="security-level-gap",
                                        message=f"SL-C {fr['sl_c']} is below SL-T {fr['sl_t']}")
                failure.text = xml_text(f"Not met up to SL {fr['sl_t']}: {blockers}")
        level_suite.set("tests", str(len(levels["frs"])))
        level_suite.set("failures", str(failures))
        level_suite.set("errors", "0")
        level_suite.set("skipped", "0")
        totals["tests"] += len(levels["frs"])
        totals["failures"] += failures
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("errors", "0")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: Mapping[str, Any], evidence: Mapping[str, Any], path: Path) -> Path:
    """Write the JUnit XML report to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(results, evidence).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _finding_line(finding: Mapping[str, Any] | None, finding_id: Any) -> str:
    if finding is None:
        return f"finding #{finding_id}"
    frames = (finding.get("reproducer") or {}).get("frames_hex") or []
    status = (finding.get("confirmation") or {}).get("status", "")
    return (f"finding #{finding_id} ({finding.get('severity')} {finding.get('class')}, {finding.get('occurrences', 0)} occurrences, "
            f"{status}): {finding.get('title', '')} | reproducer frames: {' '.join(frames)} | "
            f"replay: otfuzz replay RUN --finding {finding_id}")
