"""The mapping is data: it links what the issue asks for, and a typo in it is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from evidence_samples import catalogue, edited_copy, mapping  # noqa: F401 (fixtures)

from otfuzz.compliance.catalogue import Catalogue
from otfuzz.compliance.mapping import STRENGTHS, RequirementMapping, load_mapping, mapping_path
from otfuzz.errors import OtfuzzError


def _links(mapping: RequirementMapping) -> dict[str, set[tuple[str, str]]]:
    """requirement -> {(group or 'any', strength)} over all rules."""
    out: dict[str, set[tuple[str, str]]] = {}
    for rule in mapping.rules:
        for link in rule.links:
            for group in rule.groups or ("any",):
                out.setdefault(link.requirement, set()).add((group, link.strength.name))
    return out


@pytest.mark.parametrize(("requirement", "group", "strength"), [
    ("CR 3.5", "mutation", "direct"), ("SR 3.5", "boundary", "direct"),  # input validation
    ("CR 3.7", "structural", "partial"), ("SR 3.7", "sequence", "partial"),  # error replies
    ("CR 3.1", "mutation", "partial"), ("SR 3.1", "structural", "partial"),  # corrupted frames
    ("CR 7.1", "request-flood", "direct"), ("SR 7.1", "connection-flood", "direct"),  # DoS
    ("CR 7.1 RE(1)", "protocol-flood", "direct"), ("SR 7.1 RE(1)", "request-flood", "direct"),
    ("CR 7.2", "connection-flood", "partial"), ("SR 7.2", "request-flood", "partial"),  # resources
    ("CR 7.4", "recovery", "partial"), ("SR 7.4", "any", "partial"),  # recovery (tests, after a crash)
    ("SVV-3", "any", "process"), ("SVV-1", "any", "process"),  # the campaign as a whole
])
def test_shipped_mapping_links_the_requirements_the_issue_names(
        mapping: RequirementMapping, requirement: str, group: str, strength: str) -> None:
    assert (group, strength) in _links(mapping)[requirement]


def test_tester_independence_is_judged_for_svv_5(mapping: RequirementMapping) -> None:
    assert mapping.independence.requirement == "SVV-5"
    assert mapping.independence.normalise("Independent Department") == "independent-department"
    assert mapping.independence.normalise("Independent department or organization") == "independent-department"


def test_strength_vocabulary_never_lets_partial_or_indirect_evidence_establish_a_requirement() -> None:
    assert {name for name, s in STRENGTHS.items() if s.establishes} == {"direct", "process"}
    assert not STRENGTHS["indirect"].supports and not STRENGTHS["indirect"].falsifies


def _edited_mapping(tmp_path: Path, edit) -> Path:
    return edited_copy(mapping_path(), tmp_path, edit)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["rules"][0]["links"].append({"requirement": "CR 3.55", "strength": "direct"}),
     r"unknown requirement 'CR 3\.55'"),
    (lambda d: d["rules"][0]["groups"].append("boundry"), r"unknown test group 'boundry'"),
    (lambda d: d["rules"][0]["fails_on"].append("explosion"), r"unknown anomaly class 'explosion'"),
    (lambda d: d["rules"][0]["links"][0].update(strength="strong"), r"unknown strength 'strong'"),
    (lambda d: d["independence"].update(requirement="SVV-9"), r"unknown requirement 'SVV-9'"),
    (lambda d: d["rules"].append(dict(d["rules"][0])), r"defined twice"),
])
def test_mapping_that_names_something_unknown_is_refused(tmp_path: Path, catalogue: Catalogue, edit, message: str) -> None:
    with pytest.raises(OtfuzzError, match=message):
        load_mapping(catalogue, _edited_mapping(tmp_path, edit))
