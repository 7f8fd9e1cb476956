"""Verdicts on hand-made evidence: each test works out the right answer from its own numbers."""

from __future__ import annotations

import itertools

import pytest
from evidence_samples import FLOODS, FUZZ, catalogue, make_results, mapping  # noqa: F401 (fixtures)

from otfuzz.compliance.catalogue import Catalogue
from otfuzz.compliance.mapping import RequirementMapping
from otfuzz.compliance.verdicts import OtherMeans, RequirementVerdict, Verdict, evaluate


def verdicts(results, catalogue, mapping, **kwargs) -> dict[str, RequirementVerdict]:
    return {v.requirement.id: v for v in evaluate(results, catalogue, mapping, **kwargs)}


def test_clean_fuzzing_meets_input_validation_by_direct_evidence(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    v = verdicts(make_results(FUZZ), catalogue, mapping)
    assert v["CR 3.5"].verdict is Verdict.PASS and v["CR 3.5"].met
    assert "1000 cases" in v["CR 3.5"].reason  # 400 + 300 + 200 + 100
    link = v["CR 3.5"].links[0]
    assert [g.name for g in link.groups] == list(FUZZ) and link.cases == 1000


def test_crash_in_fuzzing_fails_input_validation_and_dos_protection(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    results = make_results(FUZZ, [("structural", "crash"), ("mutation", "malformed-reply")])
    v = verdicts(results, catalogue, mapping)
    # The crash (anomaly 1) falsifies every rule whose fuzz groups fail on crashes.
    for req in ("CR 3.5", "SR 3.5", "CR 3.1", "CR 7.1", "SR 7.1"):
        assert v[req].verdict is Verdict.FAIL, req
        assert v[req].anomaly_ids == (1,)
    # The malformed reply (anomaly 2) falsifies error handling only.
    assert v["CR 3.7"].verdict is Verdict.FAIL and v["CR 3.7"].anomaly_ids == (2,)
    assert "structural" in v["CR 3.5"].reason and "crash" in v["CR 3.5"].reason


def test_out_of_spec_input_acted_on_fails_input_validation_but_not_dos_protection(
        catalogue: Catalogue, mapping: RequirementMapping) -> None:
    results = make_results(FUZZ, [("boundary", "spec-violation")])
    v = verdicts(results, catalogue, mapping)
    for req in ("CR 3.5", "SR 3.5", "CR 3.7"):
        assert v[req].verdict is Verdict.FAIL and v[req].anomaly_ids == (1,), req
    # The device answered: nothing was denied, so DoS protection keeps its (partial) evidence.
    assert v["CR 7.1"].verdict is not Verdict.FAIL


def test_partial_evidence_alone_never_marks_a_requirement_met(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    establishing = {link.requirement for rule in mapping.rules for link in rule.links if link.strength.establishes}
    groups = list(FUZZ) + list(FLOODS) + ["recovery"]
    # Every combination of one or two test groups, clean or with a crash that the device survived.
    for combo in itertools.chain(itertools.combinations(groups, 1), itertools.combinations(groups, 2)):
        for anomalies in ([], [(combo[0], "crash")]):
            for v in evaluate(make_results({g: 50 for g in combo}, anomalies), catalogue, mapping):
                if v.requirement.id not in establishing and v.requirement.id != "SVV-5":
                    assert not v.met, (combo, v.requirement.id, v.verdict)
    v = verdicts(make_results({"mutation": 50}), catalogue, mapping)
    assert v["CR 3.1"].verdict is Verdict.PARTIAL and not v["CR 3.1"].met
    assert v["CR 3.7"].verdict is Verdict.PARTIAL


def test_indirect_findings_are_attached_but_count_for_nothing(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    v = verdicts(make_results(FUZZ, [("boundary", "crash")]), catalogue, mapping)
    assert v["EDR 3.2"].verdict is Verdict.NOT_TESTED
    assert v["EDR 3.2"].attached_anomaly_ids == (1,) and v["EDR 3.2"].anomaly_ids == ()
    clean = verdicts(make_results(FUZZ), catalogue, mapping)
    assert clean["EDR 3.2"].verdict is Verdict.NOT_TESTED  # passing a fuzz campaign says nothing about 3.2


def test_degradation_fails_dos_protection_under_floods_but_not_input_validation(
        catalogue: Catalogue, mapping: RequirementMapping) -> None:
    # Under a flood, the stress judge reports degradation only when the essential function missed
    # more cycles than its thresholds allow, degraded mode included: that is a DoS failure.
    v = verdicts(make_results(FLOODS, [("request-flood", "degradation")]), catalogue, mapping)
    assert v["CR 7.1"].verdict is Verdict.FAIL and v["CR 7.1 RE(1)"].verdict is Verdict.FAIL
    assert v["CR 7.2"].verdict is Verdict.FAIL
    # In fuzzing, degradation is slower probe replies: no verdict on input validation.
    fuzz = verdicts(make_results(FUZZ, [("mutation", "degradation")]), catalogue, mapping)
    assert fuzz["CR 3.5"].verdict is Verdict.PASS and fuzz["CR 7.1"].verdict is Verdict.PARTIAL


def _stress(results: dict, **verdicts: tuple[str, list[str]]) -> dict:
    results["stress"] = {"verdicts": {group.replace("_", "-"): {"verdict": v, "reasons": r} for group, (v, r) in verdicts.items()}}
    return results


def test_the_stress_runs_own_group_verdicts_count(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    # Recovery and resources have no reply counts; only the stress layer's verdicts say they ran.
    results = _stress(make_results(FLOODS), recovery=("pass", []), resources=("fail", ["open fds grew by 40 (limit 16)"]),
                      request_flood=("pass", []))
    v = verdicts(results, catalogue, mapping)
    assert v["CR 7.4"].verdict is Verdict.PARTIAL
    assert [g.name for g in v["CR 7.4"].links[0].groups] == ["recovery"]
    assert v["CR 7.2"].verdict is Verdict.FAIL and "resources failed (open fds grew by 40 (limit 16))" in v["CR 7.2"].reason
    assert v["CR 7.1"].verdict is Verdict.PASS  # resources are not part of the DoS rule


def test_groups_the_stress_run_found_inconclusive_are_set_aside(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    # otfuzz could not offer the request flood: its cases must not count as a pass.
    results = _stress(make_results({"request-flood": 30}), request_flood=("inconclusive", ["tool shortfall 40%"]))
    v = verdicts(results, catalogue, mapping)
    assert v["CR 7.1 RE(1)"].verdict is Verdict.NOT_TESTED
    assert any("inconclusive by the run: request-flood" in note for note in v["CR 7.1 RE(1)"].notes)


def test_requirements_no_test_exercised_are_not_tested(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    v = verdicts(make_results({"boundary": 10}), catalogue, mapping)
    assert v["CR 7.1 RE(1)"].verdict is Verdict.NOT_TESTED  # needs a flood
    assert v["CR 3.1"].verdict is Verdict.NOT_TESTED  # needs structural or mutation
    assert v["CR 7.4"].verdict is Verdict.NOT_TESTED  # nothing failed, so recovery was never observed
    assert verdicts({}, catalogue, mapping)["CR 3.5"].verdict is Verdict.NOT_TESTED  # empty document


def test_recovery_is_judged_only_after_a_crash(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    came_back = verdicts(make_results(FUZZ, [("boundary", "crash")]), catalogue, mapping)
    assert came_back["CR 7.4"].verdict is Verdict.PARTIAL  # partial: settings after restart need checking
    stayed_down = verdicts(make_results(FUZZ, [("boundary", "crash"), ("boundary", "unresponsive-after")]), catalogue, mapping)
    assert stayed_down["CR 7.4"].verdict is Verdict.FAIL and stayed_down["CR 7.4"].anomaly_ids == (2,)
    recovery_group = verdicts(make_results({"recovery": 5}), catalogue, mapping)
    assert recovery_group["CR 7.4"].verdict is Verdict.PARTIAL


def test_other_means_complete_partial_evidence_but_never_outweigh_a_failure(
        catalogue: Catalogue, mapping: RequirementMapping) -> None:
    claims = [OtherMeans("CR 3.7", "Error-message review ER-3"), OtherMeans("CR 3.5", "Design review DR-1"),
              OtherMeans("CR 3.3", "Test plan TP-9, section 2")]
    v = verdicts(make_results(FUZZ, [("boundary", "crash")]), catalogue, mapping, other_means=claims)
    assert v["CR 3.7"].verdict is Verdict.PASS and "ER-3" in v["CR 3.7"].reason
    assert v["CR 3.5"].verdict is Verdict.FAIL  # the crash contradicts the claim
    assert any("contradicts" in note for note in v["CR 3.5"].notes)
    assert v["CR 3.3"].verdict is Verdict.PASS and v["CR 3.3"].links == ()  # unmapped, documented


def test_not_applicable_needs_a_claim_and_yields_to_a_failure(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    claims = [OtherMeans("CR 2.2", "No wireless interface (datasheet)", status="not-applicable"),
              OtherMeans("CR 3.1", "Protocol has no integrity field", status="not-applicable")]
    v = verdicts(make_results(FUZZ, [("mutation", "hang")]), catalogue, mapping, other_means=claims)
    assert v["CR 2.2"].verdict is Verdict.NOT_APPLICABLE
    assert v["CR 3.1"].verdict is Verdict.FAIL


@pytest.mark.parametrize(("declared", "expected"), [
    ("independent department", Verdict.PASS),  # Table 3: SVV-3 needs a person, SVV-1 a department
    ("independent-organisation", Verdict.PASS),
    ("Independent person", Verdict.PARTIAL),  # enough for SVV-3 only
    ("none", Verdict.FAIL),
    (None, Verdict.NOT_TESTED),
    ("my cousin", Verdict.NOT_TESTED),
])
def test_tester_independence_is_judged_against_table_3(
        catalogue: Catalogue, mapping: RequirementMapping, declared: str | None, expected: Verdict) -> None:
    assert verdicts(make_results(FUZZ), catalogue, mapping, independence=declared)["SVV-5"].verdict is expected


def test_component_scope_keeps_system_requirements_out(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    ids = set(verdicts(make_results(FUZZ), catalogue, mapping, object_type="EDR"))
    assert {"CR 3.5", "EDR 3.2", "SVV-3", "SVV-5"} <= ids
    assert not {i for i in ids if i.startswith(("SR ", "NDR ", "HDR ", "SAR "))}
    everything = set(verdicts(make_results(FUZZ), catalogue, mapping))
    assert {"SR 3.5", "NDR 3.2", "CR 3.5"} <= everything


def test_findings_count_once_each_and_unreproduced_ones_are_not_counted(catalogue: Catalogue, mapping: RequirementMapping) -> None:
    # Three crash occurrences of one finding, and a hang replay never reproduced.
    results = make_results(FUZZ, [("boundary", "crash"), ("mutation", "crash"), ("structural", "crash"), ("sequence", "hang")])
    for a in results["anomalies"]:
        a["finding_id"] = 7 if a["class"] == "crash" else 8
    results["findings"] = [
        {"id": 7, "class": "crash", "groups": ["boundary", "mutation", "structural"], "anomaly_ids": [1, 2, 3],
         "confirmation": {"status": "confirmed"}, "title": "dies"},
        {"id": 8, "class": "hang", "groups": ["sequence"], "anomaly_ids": [4], "confirmation": {"status": "not reproduced"}},
    ]
    v = verdicts(results, catalogue, mapping)
    assert v["CR 3.5"].verdict is Verdict.FAIL
    assert v["CR 3.5"].finding_ids == (7,) and v["CR 3.5"].anomaly_ids == (1, 2, 3)
    assert "1 finding #7 (1 crash; 3 occurrences)" in v["CR 3.5"].reason
    # Only the unreproduced hang touched sequence: nothing counts against a sequence-only rule.
    results["findings"][0]["groups"] = []
    results["findings"][0]["anomaly_ids"] = []
    v = verdicts(results, catalogue, mapping)
    assert v["CR 3.5"].verdict is not Verdict.FAIL
    # A process that exited is evidence even when replay did not bring the crash back.
    results["findings"][1].update({"class": "crash", "target_evidence": {"signal": "SIGSEGV"}})
    v = verdicts(results, catalogue, mapping)
    assert v["CR 3.5"].verdict is Verdict.FAIL and v["CR 3.5"].finding_ids == (8,)
