"""SL-C per FR from hand-made verdicts, on the real catalogue's FR7 for an embedded device.

Annex B for EDR, FR7: SL1 = CR 7.1, 7.2, 7.3, 7.4, 7.6, 7.7; SL2 adds CR 7.1 RE(1), CR 7.3 RE(1),
CR 7.8; SL3 adds CR 7.6 RE(1); SL4 adds nothing. Each test sets verdicts and works out SL-C from
that list.
"""

from __future__ import annotations

from evidence_samples import FLOODS, catalogue, make_results, mapping  # noqa: F401 (fixtures)

from otfuzz.compliance.catalogue import Catalogue
from otfuzz.compliance.evidence import EvidenceOptions, build_evidence
from otfuzz.compliance.levels import FrCapability, capability
from otfuzz.compliance.mapping import RequirementMapping
from otfuzz.compliance.verdicts import OtherMeans, RequirementVerdict, Verdict

FR7_SL1 = ["CR 7.1", "CR 7.2", "CR 7.3", "CR 7.4", "CR 7.6", "CR 7.7"]
FR7_SL2 = FR7_SL1 + ["CR 7.1 RE(1)", "CR 7.3 RE(1)", "CR 7.8"]
FR7_SL3 = FR7_SL2 + ["CR 7.6 RE(1)"]


def fr7(catalogue: Catalogue, verdicts: dict[str, Verdict], sl_t: int | None = None) -> FrCapability:
    given = {rid: RequirementVerdict(catalogue.get(rid), v, "hand-made") for rid, v in verdicts.items()}
    vector = (1, 1, 1, 1, 1, 1, sl_t) if sl_t else None
    return capability(catalogue, "EDR", given, vector)[6]


def test_sl_c_is_the_highest_level_whose_requirements_are_all_met(catalogue: Catalogue) -> None:
    level = fr7(catalogue, dict.fromkeys(FR7_SL2, Verdict.PASS))
    assert level.fr.id == "FR7" and level.sl_c == 2
    assert [(b.requirement.id, b.status) for b in level.next_level_blockers] == [("CR 7.6 RE(1)", "no evidence")]
    assert level.ceiling == 4 and level.unverified_above  # nothing failed: unverified, not failed


def test_a_failed_enhancement_caps_sl_c_and_is_named_as_the_blocker(catalogue: Catalogue) -> None:
    verdicts = dict.fromkeys(FR7_SL2, Verdict.PASS) | {"CR 7.1 RE(1)": Verdict.FAIL}
    level = fr7(catalogue, verdicts, sl_t=2)
    assert level.sl_c == 1 and level.ceiling == 1 and not level.unverified_above
    assert [(b.requirement.id, b.status) for b in level.next_level_blockers] == [("CR 7.1 RE(1)", "failed")]
    assert level.gap == 1 and [b.requirement.id for b in level.missing] == ["CR 7.1 RE(1)"]


def test_partial_evidence_does_not_count_as_met(catalogue: Catalogue) -> None:
    verdicts = dict.fromkeys(FR7_SL3, Verdict.PASS) | {"CR 7.2": Verdict.PARTIAL}
    level = fr7(catalogue, verdicts)
    assert level.sl_c == 0 and level.ceiling == 4
    assert [(b.requirement.id, b.status) for b in level.next_level_blockers] == [("CR 7.2", "partial evidence")]


def test_everything_met_gives_sl_4_and_nothing_blocks(catalogue: Catalogue) -> None:
    level = fr7(catalogue, dict.fromkeys(FR7_SL3, Verdict.PASS), sl_t=4)
    assert level.sl_c == 4 and level.next_level is None and level.next_level_blockers == () and level.gap == 0


def test_justified_not_applicable_requirements_drop_out(catalogue: Catalogue) -> None:
    verdicts = dict.fromkeys(FR7_SL2, Verdict.PASS) | {"CR 7.6 RE(1)": Verdict.NOT_APPLICABLE}
    assert fr7(catalogue, verdicts).sl_c == 4


def test_no_evidence_at_all_gives_sl_0_with_every_sl1_requirement_listed(catalogue: Catalogue) -> None:
    level = fr7(catalogue, {}, sl_t=1)
    assert level.sl_c == 0 and level.ceiling == 4
    assert [b.requirement.id for b in level.next_level_blockers] == FR7_SL1
    assert level.gap == 1


def test_floods_plus_documented_requirements_support_fr7_sl1_but_not_sl2(
        catalogue: Catalogue, mapping: RequirementMapping) -> None:
    # Floods without anomalies: CR 7.1 and CR 7.1 RE(1) pass by direct evidence; CR 7.2 is partial.
    # The assessor documents CR 7.2, 7.3, 7.4, 7.6 and 7.7. SL1 is then complete; SL2 still needs
    # CR 7.3 RE(1) and CR 7.8, which nothing evidences, so SL-C(FR7) = 1 against an SL-T of 2.
    claims = tuple(OtherMeans(rid, f"doc {rid}") for rid in ("CR 7.2", "CR 7.3", "CR 7.4", "CR 7.6", "CR 7.7"))
    evidence = build_evidence(make_results(FLOODS), EvidenceOptions(
        component_type="embedded-device", sl_t=(1, 1, 1, 1, 1, 1, 2), other_means=claims),
        catalogue=catalogue, mapping=mapping)
    fr = evidence["security_levels"]["frs"][6]
    assert (fr["sl_t"], fr["sl_c"], fr["gap"], fr["ceiling"]) == (2, 1, 1, 4)
    assert [(b["id"], b["status"]) for b in fr["next_level_blockers"]] == [("CR 7.3 RE(1)", "no evidence"),
                                                                           ("CR 7.8", "no evidence")]
    assert evidence["security_levels"]["sl_c"][6] == 1 and evidence["security_levels"]["target_met"] is False
    assert evidence["summary"]["sl_target_met"] is False
