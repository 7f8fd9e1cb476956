"""OSCAL assessment results: the verdicts in NIST's machine-readable assessment format.

One OSCAL `result` covers the campaign. Every requirement in the matrix is a reviewed control,
named by a control id derived from its IEC 62443 identifier the way published OSCAL 62443
catalogues spell them ("CR 7.1 RE(1)" -> "cr-7.1-re-1"). Each requirement with test evidence
gets a finding whose target status is satisfied (pass) or not-satisfied (fail, or partial with
reason "other"); each anomaly is an observation the failed findings point to. The catalogue and
the mapping the verdicts came from are back-matter resources with their SHA-256, and the
campaign configuration stands in for the assessment plan. UUIDs are derived from the campaign
id, so writing the report twice gives the same document.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

OSCAL_VERSION = "1.1.2"
NS = "https://otfuzz.example/ns/oscal"
CATALOGUE_HREF = "catalogue.yaml"
MAPPING_HREF = "mapping.yaml"

# verdict -> finding target status (state, reason); other verdicts get no finding.
_STATUS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "pass": ("satisfied", "pass"), "fail": ("not-satisfied", "fail"), "partial": ("not-satisfied", "other")})


def control_id(requirement_id: str) -> str:
    """OSCAL control id of a requirement: 'CR 7.1 RE(1)' -> 'cr-7.1-re-1', 'SVV-3' -> 'svv-3'."""
    text = requirement_id.strip().lower().replace("(", "-").replace(")", "")
    return "-".join(text.split())


def oscal_document(results: Mapping[str, Any], evidence: Mapping[str, Any], *,
                   generated_at: datetime | None = None) -> dict[str, Any]:
    """The assessment-results document as a dict."""
    campaign = results.get("campaign") or {}
    target = results.get("target") or {}
    tool = results.get("tool") or {}
    now = (generated_at or datetime.now(timezone.utc)).replace(microsecond=0)
    base = uuid.uuid5(uuid.NAMESPACE_URL, f"{NS}/{campaign.get('id') or campaign.get('config_sha256') or 'campaign'}")

    def uid(*parts: Any) -> str:
        return str(uuid.uuid5(base, "/".join(str(p) for p in parts)))

    start = _time(campaign.get("started_at"), now)
    end = _time(campaign.get("ended_at"), now)
    tester = evidence.get("tester") or {}
    parties, responsible = [], []
    if tester.get("operator"):
        parties.append({"uuid": uid("party", "operator"), "type": "person", "name": _text(tester["operator"])})
    if tester.get("organisation"):
        parties.append({"uuid": uid("party", "organisation"), "type": "organization", "name": _text(tester["organisation"])})
    if parties:
        responsible.append({"role-id": "assessor", "party-uuids": [p["uuid"] for p in parties]})
    metadata: dict[str, Any] = {
        "title": _text(f"otfuzz robustness assessment results: {target.get('url') or target.get('address') or 'target'}"),
        "last-modified": now.isoformat(),
        "version": str(tool.get("version") or "0"),
        "oscal-version": OSCAL_VERSION,
        "roles": [{"id": "assessor", "title": "Assessor (tester)"}],
    }
    if parties:
        metadata["parties"] = parties
        metadata["responsible-parties"] = responsible
    independence = _props({"tester-independence": tester.get("independence"),
                           "tester-independence-level": tester.get("independence_level")})
    if independence:
        metadata["props"] = independence

    anomalies = [a for a in results.get("anomalies") or [] if isinstance(a, Mapping)]
    observations = [_anomaly_observation(a, uid, start) for a in anomalies]
    obs_by_anomaly = {a.get("id"): o["uuid"] for a, o in zip(anomalies, observations)}
    requirements = list(evidence.get("requirements") or [])
    findings = []
    for req in requirements:
        status = _STATUS.get(req["verdict"])
        if status is None:
            continue
        summary = {
            "uuid": uid("observation", "requirement", req["id"]),
            "title": _text(f"Test evidence for {req['id']}"),
            "description": _text(req["reason"]),
            "methods": ["TEST"] if req.get("evidence") else ["EXAMINE"],
            "types": ["control-objective"],
            "collected": end,
        }
        observations.append(summary)
        related = [summary["uuid"]] + [obs_by_anomaly[i] for i in req.get("anomaly_ids") or [] if i in obs_by_anomaly]
        finding_target: dict[str, Any] = {
            "type": "objective-id",
            "target-id": f"{control_id(req['id'])}_obj",
            "status": {"state": status[0], "reason": status[1]},
        }
        if req["verdict"] == "partial":
            finding_target["status"]["remarks"] = "Partial evidence: no failure found, but other aspects need review."
        findings.append({
            "uuid": uid("finding", req["id"]),
            "title": _text(f"{req['id']} {req['title']}: {req['verdict']}"),
            "description": _text(req["reason"]),
            "props": _props({"verdict": req["verdict"], "iec62443-part": req["part"], "control-id": control_id(req["id"])}),
            "target": finding_target,
            "related-observations": [{"observation-uuid": o} for o in related],
        })
    # One OSCAL finding per otfuzz finding (a distinct defect), its occurrences as observations.
    against: dict[Any, list[str]] = {}
    for req in requirements:
        for finding_id in req.get("finding_ids") or []:
            against.setdefault(finding_id, []).append(req["id"])
    for defect in results.get("findings") or []:
        if not isinstance(defect, Mapping):
            continue
        reqs = against.get(defect.get("id"), [])
        related = [obs_by_anomaly[i] for i in defect.get("anomaly_ids") or [] if i in obs_by_anomaly]
        status = (defect.get("confirmation") or {}).get("status", "")
        findings.append({
            "uuid": uid("finding", "defect", defect.get("id")),
            "title": _text(f"Finding {defect.get('id')} ({defect.get('severity')}): {defect.get('title', '')}"),
            "description": _text(f"{defect.get('class')} on {defect.get('request_type')}; {defect.get('occurrences', 0)} "
                                 f"occurrence(s); confirmation: {status}; reproducer frames: "
                                 f"{' '.join((defect.get('reproducer') or {}).get('frames_hex') or [])}"),
            "props": _props({"severity": defect.get("severity"), "class": defect.get("class"), "key": defect.get("key"),
                             "occurrences": defect.get("occurrences"), "confirmation": status,
                             "known": "yes" if defect.get("known") else None}),
            "target": {"type": "objective-id", "target-id": f"{control_id(reqs[0])}_obj" if reqs else "robustness_obj",
                       "status": {"state": "not-satisfied", "reason": "fail"} if reqs else {"state": "not-satisfied"}},
            **({"related-observations": [{"observation-uuid": o} for o in related]} if related else {}),
        })
    catalogue = evidence.get("catalogue") or {}
    mapping = evidence.get("mapping") or {}
    result: dict[str, Any] = {
        "uuid": uid("result"),
        "title": _text(f"Robustness campaign {campaign.get('id') or ''}"),
        "description": _text((evidence.get("summary") or {}).get("headline") or "Robustness campaign results."),
        "start": start,
        "end": end,
        "props": _props({"seed": campaign.get("seed"), "config-sha256": campaign.get("config_sha256"),
                         "component-type": (evidence.get("assessed_object") or {}).get("component_type"),
                         "overall": (evidence.get("summary") or {}).get("overall")}),
        "reviewed-controls": {
            "description": "IEC 62443 requirements the campaign's tests or the assessor's other evidence speak to.",
            "control-selections": [{"include-controls": [{"control-id": control_id(r["id"])} for r in requirements]}]
            if requirements else [{"include-all": {}}],
        },
    }
    if observations:
        result["observations"] = observations
    if findings:
        result["findings"] = findings
    if not result["props"]:
        del result["props"]
    resources = [
        {"uuid": uid("resource", "plan"), "title": "Campaign configuration (assessment plan)",
         "description": _text(f"otfuzz campaign configuration, SHA-256 {campaign.get('config_sha256') or 'not recorded'}; "
                              "the configuration itself is in the JSON report and the evidence bundle.")},
        {"uuid": uid("resource", "catalogue"), "title": _text(catalogue.get("title") or "IEC 62443 requirements catalogue"),
         "description": "Requirement identifiers, titles and security levels the control ids refer to.",
         "rlinks": [{"href": CATALOGUE_HREF, "hashes": [{"algorithm": "SHA-256", "value": catalogue.get("sha256", "")}]}]},
        {"uuid": uid("resource", "mapping"), "title": "otfuzz test-to-requirement mapping",
         "description": "Which test groups and anomaly classes give evidence for which requirement, and how strongly.",
         "rlinks": [{"href": MAPPING_HREF, "hashes": [{"algorithm": "SHA-256", "value": mapping.get("sha256", "")}]}]},
    ]
    return {"assessment-results": {
        "uuid": uid("assessment-results"),
        "metadata": metadata,
        "import-ap": {"href": f"#{resources[0]['uuid']}",
                      "remarks": "No separate OSCAL assessment plan: the campaign configuration is the plan."},
        "results": [result],
        "back-matter": {"resources": resources},
    }}


def write_oscal(results: Mapping[str, Any], evidence: Mapping[str, Any], path: Path) -> Path:
    """Write the OSCAL assessment-results JSON to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(oscal_document(results, evidence), indent=2) + "\n", encoding="utf-8")
    return path


def _anomaly_observation(anomaly: Mapping[str, Any], uid: Any, default_time: str) -> dict[str, Any]:
    reproducer = anomaly.get("reproducer") or {}
    frames = reproducer.get("frames_hex") or anomaly.get("frames_hex") or []
    evidence = _text(f"Reproducer (hex frames, sent in order): {' '.join(frames) or 'none'}; "
                     f"reply: {anomaly.get('reply_hex') or 'none'}")
    return {
        "uuid": uid("observation", "anomaly", anomaly.get("id")),
        "title": _text(f"Anomaly #{anomaly.get('id')}: {anomaly.get('class')} in {anomaly.get('group')}"),
        "description": _text(anomaly.get("description") or "anomaly"),
        "props": _props({"anomaly-class": anomaly.get("class"), "test-group": anomaly.get("group"),
                         "case-id": anomaly.get("case_id"), "reproducible": anomaly.get("reproducible")}),
        "methods": ["TEST"],
        "types": ["finding"],
        "collected": _time(anomaly.get("detected_at"), default_time),
        "relevant-evidence": [{"description": evidence}],
    }


def _props(values: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for name, value in values.items():
        if value is None or not str(value).strip():
            continue
        out.append({"name": name, "ns": NS, "value": _text(str(value).lower() if isinstance(value, bool) else value)})
    return out


def _text(value: Any) -> str:
    """OSCAL strings may not start or end with whitespace; device text may hold anything."""
    text = " ".join(str(value).split())
    return text or "-"


def _time(value: Any, default: Any) -> str:
    """An ISO date-time with time zone, as OSCAL requires; anything else falls back."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.isoformat()
    return default.isoformat() if isinstance(default, datetime) else str(default)
