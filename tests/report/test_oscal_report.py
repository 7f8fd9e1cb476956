"""OSCAL assessment results: required structure, control ids from the catalogue, findings from verdicts."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import jsonschema
import pytest
from report_samples import hostile_results

from otfuzz.compliance.evidence import EvidenceOptions, build_evidence
from otfuzz.report.oscal import control_id, oscal_document

UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[45][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
TOKEN = r"^[A-Za-z_][A-Za-z0-9._-]*$"
TRIMMED = r"^\S(.*\S)?$"
TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"


def _required(*names: str, **props: dict) -> dict:
    return {"type": "object", "required": list(names), "properties": props}


_PROPS = {"type": "array", "minItems": 1, "items": _required("name", "value", name={"pattern": TOKEN}, value={"pattern": TRIMMED})}
# The parts of the OSCAL 1.1 assessment-results model this writer uses, with what OSCAL requires of them.
OSCAL_SUBSET = _required(
    "assessment-results",
    **{"assessment-results": _required(
        "uuid", "metadata", "import-ap", "results",
        uuid={"pattern": UUID},
        metadata=_required("title", "last-modified", "version", "oscal-version",
                           **{"last-modified": {"pattern": TIME}, "oscal-version": {"pattern": r"^1\.1\.\d+$"}, "props": _PROPS}),
        **{"import-ap": _required("href"),
           "results": {"type": "array", "minItems": 1, "items": _required(
               "uuid", "title", "description", "start", "reviewed-controls",
               start={"pattern": TIME}, end={"pattern": TIME}, props=_PROPS,
               **{"reviewed-controls": _required("control-selections", **{"control-selections": {
                   "type": "array", "minItems": 1, "items": {"type": "object", "properties": {"include-controls": {
                       "type": "array", "items": _required("control-id", **{"control-id": {"pattern": TOKEN}})}}}}}),
                  "observations": {"type": "array", "items": _required(
                      "uuid", "description", "methods", "collected", uuid={"pattern": UUID}, collected={"pattern": TIME},
                      props=_PROPS, methods={"type": "array", "items": {"enum": ["EXAMINE", "INTERVIEW", "TEST", "UNKNOWN"]}})},
                  "findings": {"type": "array", "items": _required(
                      "uuid", "title", "description", "target", uuid={"pattern": UUID}, props=_PROPS,
                      target=_required("type", "target-id", "status", type={"enum": ["statement-id", "objective-id"]},
                                       status=_required("state", state={"enum": ["satisfied", "not-satisfied"]})))}})},
           "back-matter": _required("resources", resources={"type": "array", "items": _required("uuid", uuid={"pattern": UUID})})})})

NOW = datetime(2025, 1, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def evidence() -> dict:
    return build_evidence(hostile_results(), EvidenceOptions(component_type="embedded-device", sl_t=(2,) * 7))


def test_document_has_the_structure_oscal_requires(evidence: dict) -> None:
    jsonschema.Draft202012Validator(OSCAL_SUBSET).validate(oscal_document(hostile_results(), evidence, generated_at=NOW))


def test_reviewed_controls_are_the_matrix_and_findings_follow_the_verdicts(evidence: dict) -> None:
    result = oscal_document(hostile_results(), evidence, generated_at=NOW)["assessment-results"]["results"][0]
    selected = [c["control-id"] for c in result["reviewed-controls"]["control-selections"][0]["include-controls"]]
    assert selected == [control_id(r["id"]) for r in evidence["requirements"]]
    states = {f["target"]["target-id"]: f["target"]["status"] for f in result["findings"]}
    for req in evidence["requirements"]:
        status = states.get(f"{control_id(req['id'])}_obj")
        expected = {"pass": ("satisfied", "pass"), "fail": ("not-satisfied", "fail"), "partial": ("not-satisfied", "other")}
        assert (status["state"], status["reason"]) == expected[req["verdict"]] if status else req["verdict"] not in expected
    crash = next(f for f in result["findings"] if f["target"]["target-id"] == "cr-3.5_obj")
    observations = {o["uuid"]: o for o in result["observations"]}
    related = [observations[r["observation-uuid"]]["title"] for r in crash["related-observations"]]
    assert "Anomaly #1: crash in boundary" in related


def test_catalogue_and_mapping_are_referenced_by_hash(evidence: dict) -> None:
    resources = oscal_document(hostile_results(), evidence, generated_at=NOW)["assessment-results"]["back-matter"]["resources"]
    hashes = {r["rlinks"][0]["href"]: r["rlinks"][0]["hashes"][0]["value"] for r in resources if "rlinks" in r}
    assert hashes == {"catalogue.yaml": evidence["catalogue"]["sha256"], "mapping.yaml": evidence["mapping"]["sha256"]}


def test_writing_twice_gives_the_same_identifiers(evidence: dict) -> None:
    first = oscal_document(hostile_results(), evidence, generated_at=NOW)
    assert oscal_document(hostile_results(), evidence, generated_at=NOW) == first
    later = oscal_document(hostile_results(), evidence, generated_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert later["assessment-results"]["uuid"] == first["assessment-results"]["uuid"]


@pytest.mark.parametrize(("requirement", "control"), [
    ("CR 3.5", "cr-3.5"), ("CR 7.1 RE(1)", "cr-7.1-re-1"), ("EDR 3.2", "edr-3.2"), ("SVV-3", "svv-3"), ("SR 5.2 RE(3)", "sr-5.2-re-3"),
])
def test_control_ids_follow_the_published_oscal_62443_spelling(requirement: str, control: str) -> None:
    assert control_id(requirement) == control and re.match(TOKEN, control)
