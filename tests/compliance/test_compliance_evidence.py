"""The compliance section as a whole: options checked, tester recorded, schema kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from evidence_samples import FLOODS, FUZZ, catalogue, make_results, mapping  # noqa: F401 (fixtures)

from otfuzz.compliance.catalogue import Catalogue
from otfuzz.compliance.evidence import EvidenceOptions, build_evidence, parse_component_type, parse_sl_vector
from otfuzz.compliance.mapping import RequirementMapping
from otfuzz.compliance.other_means import load_other_means
from otfuzz.errors import OtfuzzError
from otfuzz.report.reports import validate_evidence


def build(results, catalogue, mapping, **options):
    return build_evidence(results, EvidenceOptions(**options), catalogue=catalogue, mapping=mapping)


@pytest.mark.parametrize(("text", "expected"), [("2,2,3,1,2,1,3", (2, 2, 3, 1, 2, 1, 3)), ("3", (3,) * 7),
                                                ("1 2 3 4 1 2 3", (1, 2, 3, 4, 1, 2, 3))])
def test_sl_t_vector_is_one_level_per_fr_or_one_for_all(text: str, expected: tuple[int, ...]) -> None:
    assert parse_sl_vector(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("2,2,5,2,2,2,2", "FR3 is 5, outside 1-4"), ("0", "FR1 is 0, outside 1-4"), ("2,2", "got 2"),
    ("high", "must be numbers"), ("-1,2,2,2,2,2,2", "outside 1-4"),
])
def test_sl_t_outside_1_to_4_or_of_the_wrong_length_is_refused(text: str, message: str) -> None:
    with pytest.raises(OtfuzzError, match=message):
        parse_sl_vector(text)


def test_unknown_component_type_is_refused_and_the_valid_ones_are_listed() -> None:
    assert parse_component_type("Embedded-Device") == "embedded-device"
    with pytest.raises(OtfuzzError, match="unknown component type 'toaster'.*embedded-device, host-device"):
        parse_component_type("toaster")


def test_sl_t_without_component_type_is_refused(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    with pytest.raises(OtfuzzError, match="needs a component type"):
        build(make_results(FUZZ), catalogue, mapping, sl_t=(2,) * 7)


def test_unknown_independence_level_given_by_the_user_is_refused(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    with pytest.raises(OtfuzzError, match="unknown independence level 'friend'"):
        build(make_results(FUZZ), catalogue, mapping, independence="friend")


@pytest.mark.parametrize(("content", "message"), [
    ("requirements:\n  - id: CR 3.99\n    reference: doc\n", r"unknown requirement 'CR 3\.99'"),
    ("requirements:\n  - id: CR 3.3\n", "CR 3.3 has no reference"),
    ("requirements:\n  - id: CR 3.3\n    reference: a\n    status: maybe\n", "status 'maybe'"),
    ("requirements:\n  - id: CR 3.3\n    reference: a\n  - id: CR 3.3\n    reference: b\n", "listed twice"),
    ("- CR 3.3\n", "needs a 'requirements' list"),
])
def test_bad_other_means_file_is_a_one_line_error(tmp_path: Path, catalogue: Catalogue, content: str, message: str) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(content)
    with pytest.raises(OtfuzzError, match=message) as error:
        load_other_means(path, catalogue)
    assert "\n" not in str(error.value)


def test_other_means_file_feeds_the_verdicts(tmp_path: Path, catalogue: Catalogue, mapping: RequirementMapping) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("requirements:\n  - id: CR 3.7\n    reference: Review ER-3\n    method: configuration inspection\n"
                    "  - id: CR 2.2\n    status: not-applicable\n    reference: no wireless\n")
    evidence = build(make_results(FUZZ), catalogue, mapping, component_type="embedded-device", other_means_file=path)
    by_id = {r["id"]: r for r in evidence["requirements"]}
    assert by_id["CR 3.7"]["verdict"] == "pass"
    assert by_id["CR 3.7"]["other_means"] == {"reference": "Review ER-3", "method": "configuration inspection", "status": "met"}
    assert by_id["CR 2.2"]["verdict"] == "not-applicable"


def test_tester_comes_from_the_campaign_record_unless_the_user_overrides_it(
        catalogue: Catalogue, mapping: RequirementMapping) -> None:
    results = make_results(FUZZ, operator="Ada", organisation="Lab A", independence="independent person")
    tester = build(results, catalogue, mapping)["tester"]
    assert tester == {"operator": "Ada", "organisation": "Lab A", "independence": "independent person",
                      "independence_level": "independent-person"}
    tester = build(results, catalogue, mapping, operator="Grace", independence="independent-organisation")["tester"]
    assert tester["operator"] == "Grace" and tester["organisation"] == "Lab A"
    assert tester["independence_level"] == "independent-organisation"


@pytest.mark.parametrize("options", [
    {}, {"component_type": "network-device", "sl_t": (2, 2, 2, 2, 2, 2, 2)}, {"component_type": "software-application"},
])
@pytest.mark.parametrize("anomalies", [[], [("boundary", "crash"), ("request-flood", "hang"), ("sequence", "spec-violation")]])
def test_compliance_section_matches_its_published_schema(
        catalogue: Catalogue, mapping: RequirementMapping, options: dict, anomalies: list) -> None:
    results = make_results(FUZZ | FLOODS, anomalies)
    results["stress"] = {"verdicts": {"request-flood": {"verdict": "fail", "reasons": ["3% missed"]},
                                      "protocol-flood": {"verdict": "inconclusive", "reasons": []}}}
    validate_evidence(build(results, catalogue, mapping, **options))


def test_summary_leads_with_failures_and_counts_every_verdict(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    evidence = build(make_results(FUZZ, [("boundary", "crash")]), catalogue, mapping, component_type="embedded-device")
    summary = evidence["summary"]
    # A crash in boundary falsifies input validation and DoS protection; CR 3.1 covers other groups.
    assert summary["overall"] == "fail" and summary["failed"] == ["CR 3.5", "CR 7.1"]
    assert summary["headline"].startswith("2 requirements failed (CR 3.5, CR 7.1)")
    assert sum(summary["counts"].values()) == len(evidence["requirements"])
    assert summary["cases"] == 1000 and summary["anomalies"] == 1
    assert build(make_results(FUZZ), catalogue, mapping)["summary"]["overall"] == "pass"
    assert build({}, catalogue, mapping)["summary"]["overall"] == "inconclusive"


def test_groups_no_rule_names_are_listed_not_dropped(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    evidence = build(make_results({"boundary": 5, "fancy-new-group": 9}), catalogue, mapping)
    assert evidence["unmapped_groups"] == ["fancy-new-group"]
