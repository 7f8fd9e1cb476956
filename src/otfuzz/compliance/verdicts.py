"""Requirement verdicts: what the campaign's evidence says about each mapped requirement.

The rules in the mapping are applied to the results document: a rule is exercised when its
test groups ran cases (and, for rules with `when`, when the triggering anomaly occurred); a
finding (a distinct defect) of a class the rule fails on, with occurrences in its groups,
counts against every requirement it links to. A finding that replay could not reproduce is
listed but not counted, unless the target's own process showed it (an exit or crash report).
Anomalies outside any finding (stress runs, older stores) count one by one. The verdict of a
requirement then follows the strength of its links:

- fail        a direct or partial link found counter-evidence (a test can always falsify);
- pass        a direct or process link passed, or the user documented other means;
- partial     only partial evidence passed: never enough to call the requirement met;
- not-tested  nothing exercised it (indirect findings may still be attached);
- not-applicable  the user justified that the feature is absent.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from otfuzz.compliance.catalogue import Catalogue, Requirement
from otfuzz.compliance.mapping import RequirementMapping, Rule, Strength


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    PARTIAL = "partial"
    NOT_TESTED = "not-tested"
    NOT_APPLICABLE = "not-applicable"


@dataclass(frozen=True)
class OtherMeans:
    """A requirement the user shows met (or not applicable) without testing, with a reference."""

    requirement: str
    reference: str
    method: str = "documentation review"
    status: str = "met"  # "met" or "not-applicable"


@dataclass(frozen=True)
class GroupCount:
    name: str
    cases: int
    anomalies: int


@dataclass(frozen=True)
class AnomalyRef:
    id: int
    group: str
    cls: str
    finding_id: int | None = None


@dataclass(frozen=True)
class FindingRef:
    """One distinct defect as the verdicts see it: its class, where it occurred, whether it counts."""

    id: int
    cls: str
    groups: tuple[str, ...]
    anomaly_ids: tuple[int, ...]
    counts: bool  # confirmed, not tried, or shown by the target process itself
    title: str = ""
    known: bool = False  # named in the baseline

@dataclass(frozen=True)
class GroupJudgement:
    """A verdict the run itself gave a test group (the stress layer, against its thresholds)."""

    group: str
    verdict: str  # pass, fail, inconclusive, not-run
    reasons: tuple[str, ...]


# Where runs judge their own test groups: the stress layer against its load thresholds, the
# conduit policy test against the policy (section -> key of its {group: {verdict, reasons}}).
GROUP_VERDICT_SOURCES = (("stress", "verdicts"), ("policy", "group_verdicts"))


def _group_verdicts(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out = []
    for section, key in GROUP_VERDICT_SOURCES:
        part = results.get(section)
        verdicts = part.get(key) if isinstance(part, Mapping) else None
        if isinstance(verdicts, Mapping):
            out.append(verdicts)
    return out


@dataclass(frozen=True)
class CampaignEvidence:
    """The part of a results document verdicts depend on, read defensively."""

    groups: tuple[GroupCount, ...]
    anomalies: tuple[AnomalyRef, ...]
    judgements: tuple[GroupJudgement, ...] = ()
    findings: tuple[FindingRef, ...] = ()

    @classmethod
    def from_results(cls, results: Mapping[str, Any]) -> CampaignEvidence:
        groups = tuple(
            GroupCount(str(g.get("name", "?")), int(g.get("cases") or 0), int(g.get("anomalies") or 0))
            for g in results.get("groups") or [] if isinstance(g, Mapping)
        )
        anomalies = tuple(
            AnomalyRef(int(a.get("id", i)), str(a.get("group", "?")), str(a.get("class", "?")),
                       None if a.get("finding_id") is None else int(a["finding_id"]))
            for i, a in enumerate(results.get("anomalies") or [], start=1) if isinstance(a, Mapping)
        )
        findings = tuple(_finding_ref(f) for f in results.get("findings") or [] if isinstance(f, Mapping))
        judgements = tuple(
            GroupJudgement(str(name), str(v.get("verdict")), tuple(str(r) for r in v.get("reasons") or []))
            for verdicts in _group_verdicts(results)
            for name, v in verdicts.items() if isinstance(v, Mapping)
        )
        known = {g.name for g in groups}
        # A judged group with no reply counts (recovery, resources) still ran: list it with no cases.
        groups += tuple(GroupCount(j.group, 0, 0) for j in judgements if j.group not in known)
        return cls(groups, anomalies, judgements, findings)

    def defects(self) -> tuple[FindingRef, ...]:
        """Findings, and anomalies outside any finding each as a defect of its own (id 0: none)."""
        known = {f.id for f in self.findings}
        loose = tuple(FindingRef(0, a.cls, (a.group,), (a.id,), True) for a in self.anomalies
                      if a.finding_id is None or a.finding_id not in known)
        return self.findings + loose

    def judgement(self, group: str) -> GroupJudgement | None:
        return next((j for j in self.judgements if j.group == group), None)


@dataclass(frozen=True)
class LinkEvidence:
    """One mapping rule's contribution to one requirement."""

    rule: Rule
    strength: Strength
    groups: tuple[GroupCount, ...]
    cases: int
    outcome: str  # pass, fail, finding, no-finding, not-exercised
    anomaly_ids: tuple[int, ...]  # occurrences of the findings below
    finding_ids: tuple[int, ...] = ()  # findings that count against (or, for indirect links, are attached)
    failed_groups: tuple[GroupJudgement, ...] = ()  # groups the run itself judged failed
    set_aside: tuple[GroupJudgement, ...] = ()  # judged inconclusive or not run: not counted


@dataclass(frozen=True)
class RequirementVerdict:
    requirement: Requirement
    verdict: Verdict
    reason: str
    links: tuple[LinkEvidence, ...] = ()
    other_means: OtherMeans | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def met(self) -> bool:
        return self.verdict is Verdict.PASS

    @property
    def anomaly_ids(self) -> tuple[int, ...]:
        """Occurrences of the findings that count against the requirement."""
        return _unique(i for link in self.links if link.outcome == "fail" for i in link.anomaly_ids)

    @property
    def finding_ids(self) -> tuple[int, ...]:
        """Findings that count against the requirement."""
        return _unique(i for link in self.links if link.outcome == "fail" for i in link.finding_ids if i)

    @property
    def attached_anomaly_ids(self) -> tuple[int, ...]:
        """Occurrences attached through indirect links."""
        return _unique(i for link in self.links if link.outcome == "finding" for i in link.anomaly_ids)

    @property
    def attached_finding_ids(self) -> tuple[int, ...]:
        """Findings attached through indirect links (they never count toward conformity)."""
        return _unique(i for link in self.links if link.outcome == "finding" for i in link.finding_ids if i)


def evaluate_rule_links(rule: Rule, campaign: CampaignEvidence) -> list[LinkEvidence]:
    """Apply one rule to the campaign: one LinkEvidence per requirement it links to."""
    groups = tuple(g for g in campaign.groups if rule.covers(g.name))
    judged = [j for j in (campaign.judgement(g.name) for g in groups) if j is not None] if rule.group_verdicts else []
    failed = tuple(j for j in judged if j.verdict == "fail")
    set_aside = tuple(j for j in judged if j.verdict not in ("pass", "fail"))
    passed = {j.group for j in judged if j.verdict == "pass"}
    counted_groups = tuple(g for g in groups if g.name not in {j.group for j in set_aside})
    cases = sum(g.cases for g in counted_groups)
    in_scope = [d for d in campaign.defects() if any(rule.covers(g) for g in d.groups)]
    triggered = not rule.when or any(d.cls in rule.when for d in in_scope)
    counted = [d for d in in_scope if d.cls in rule.fails_on and d.counts] if triggered else []
    against = tuple(i for d in counted for i in d.anomaly_ids)
    against_findings = tuple(d.id for d in counted)
    # One failing case is evidence however few cases ran; a pass needs the minimum (or a
    # group the run judged passed).
    exercised = triggered and (cases >= rule.min_cases or bool(passed) or bool(against) or bool(failed))
    evidence = []
    for link in rule.links:
        if not exercised:
            outcome = "not-exercised"
        elif not link.strength.supports and not link.strength.falsifies:
            outcome = "finding" if against else "no-finding"
        elif (against or failed) and link.strength.falsifies:
            outcome = "fail"
        else:
            outcome = "pass"
        kept = against if outcome in ("fail", "finding") else ()
        kept_findings = against_findings if outcome in ("fail", "finding") else ()
        evidence.append(LinkEvidence(rule, link.strength, counted_groups, cases, outcome, kept, kept_findings,
                                     failed if outcome == "fail" else (), set_aside))
    return evidence


def evaluate(results: Mapping[str, Any], catalogue: Catalogue, mapping: RequirementMapping, *,
             other_means: Sequence[OtherMeans] = (), independence: str | None = None,
             object_type: str | None = None) -> list[RequirementVerdict]:
    """Verdicts for every requirement the mapping or the user's other means speak to.

    `object_type` limits the list to what belongs in that object's report (None: all parts).
    """
    campaign = CampaignEvidence.from_results(results)
    links: dict[str, list[LinkEvidence]] = {}
    for rule in mapping.rules:
        for item, link in zip(evaluate_rule_links(rule, campaign), rule.links):
            links.setdefault(link.requirement, []).append(item)
    claims = {claim.requirement: claim for claim in other_means}
    ids = list(dict.fromkeys(mapping.requirement_ids() + list(claims)))
    verdicts = []
    for req_id in ids:
        requirement = catalogue.get(req_id)
        if not catalogue.in_scope(requirement, object_type):
            continue
        if req_id == mapping.independence.requirement:
            verdicts.append(judge_independence(catalogue, mapping, independence, claims.get(req_id)))
        else:
            verdicts.append(judge(requirement, links.get(req_id, []), claims.get(req_id), campaign))
    return sorted(verdicts, key=lambda v: requirement_sort_key(v.requirement))


def judge(requirement: Requirement, links: Sequence[LinkEvidence], claim: OtherMeans | None,
          campaign: CampaignEvidence) -> RequirementVerdict:
    """Combine the links of one requirement and the user's claim into its verdict."""
    links = tuple(links)
    failing = [link for link in links if link.outcome == "fail"]
    notes: list[str] = []
    aside = {j.group: j.verdict for link in links for j in link.set_aside}
    if aside:
        notes.append("Not counted, judged " + ", ".join(f"{v} by the run: {g}" for g, v in aside.items()) + ".")
    if failing:
        ids = _unique(i for link in failing for i in link.anomaly_ids)
        judged = {j.group: j for link in failing for j in link.failed_groups}
        parts = [f"{_defect_phrase(ids, campaign)} count{'s' if _single(ids, campaign) else ''} against it"] if ids else []
        parts += [f"the run judged {j.group} failed" + (f" ({'; '.join(j.reasons)})" if j.reasons else "")
                  for j in judged.values()]
        reason = "; ".join(parts)
        if claim is not None:
            notes.append(f"Claimed {claim.status} by other means ({claim.reference}); the test evidence contradicts it.")
        return RequirementVerdict(requirement, Verdict.FAIL, reason, links, claim, tuple(notes))
    if claim is not None and claim.status == "not-applicable":
        return RequirementVerdict(requirement, Verdict.NOT_APPLICABLE, f"not applicable: {claim.reference}", links, claim)
    passing = [link for link in links if link.outcome == "pass"]
    if claim is not None:
        reason = f"met by other means ({claim.method}): {claim.reference}"
        if passing:
            reason += f"; no counter-evidence in {_cases_phrase(passing)}"
        return RequirementVerdict(requirement, Verdict.PASS, reason, links, claim)
    establishing = [link for link in passing if link.strength.establishes]
    if any(link.strength.falsifies for link in establishing):
        return RequirementVerdict(requirement, Verdict.PASS,
                                  f"direct evidence: no counter-evidence in {_cases_phrase(passing)}", links)
    if establishing:
        return RequirementVerdict(requirement, Verdict.PASS,
                                  f"activity performed (process evidence): {_cases_phrase(establishing)}", links)
    findings = _unique(i for link in links if link.outcome == "finding" for i in link.anomaly_ids)
    if findings:
        notes.append(f"{_defect_phrase(findings, campaign)} attached (indirect evidence; "
                     "never counted toward conformity)")
    if passing:
        return RequirementVerdict(requirement, Verdict.PARTIAL,
                                  f"partial evidence only: no counter-evidence in {_cases_phrase(passing)}; "
                                  "other aspects need review or other tests", links, None, tuple(notes))
    reason = "no test in this campaign exercised it" if not findings else "indirect evidence only"
    return RequirementVerdict(requirement, Verdict.NOT_TESTED, reason, links, None, tuple(notes))


def judge_independence(catalogue: Catalogue, mapping: RequirementMapping, declared: str | None,
                       claim: OtherMeans | None) -> RequirementVerdict:
    """IEC 62443-4-1 SVV-5: the declared tester independence against Table 3 of 4-1."""
    policy = mapping.independence
    requirement = catalogue.get(policy.requirement)
    table = {(row.test_type, row.reference): row.independence for row in catalogue.independence_table}
    needed = [(test_type, ref, policy.normalise(table[(test_type, ref)]) or "none") for test_type, ref in policy.activities]
    wanted = "; ".join(f"{ref} {test_type}: {policy.label(level)}" for test_type, ref, level in needed)
    if claim is not None:
        verdict = Verdict.NOT_APPLICABLE if claim.status == "not-applicable" else Verdict.PASS
        return RequirementVerdict(requirement, verdict, f"documented by other means ({claim.method}): {claim.reference}",
                                  (), claim)
    if not declared:
        return RequirementVerdict(requirement, Verdict.NOT_TESTED,
                                  f"tester independence not recorded (needed: {wanted})")
    level = policy.normalise(declared)
    if level is None:
        return RequirementVerdict(requirement, Verdict.NOT_TESTED,
                                  f"tester independence '{declared}' is not a known level (needed: {wanted})")
    rank = policy.rank(level)
    enough = [(t, ref) for t, ref, lvl in needed if rank >= policy.rank(lvl)]
    short = [f"{ref} ({policy.label(lvl)})" for t, ref, lvl in needed if rank < policy.rank(lvl)]
    have = policy.label(level)
    if len(enough) == len(needed):
        return RequirementVerdict(requirement, Verdict.PASS, f"{have}: meets Table 3 for {wanted}")
    if enough:
        return RequirementVerdict(requirement, Verdict.PARTIAL,
                                  f"{have}: enough for {', '.join(ref for _, ref in enough)}, not for {', '.join(short)}")
    return RequirementVerdict(requirement, Verdict.FAIL, f"{have}: Table 3 asks for {wanted}")


def requirement_sort_key(requirement: Requirement) -> tuple[Any, ...]:
    """Order requirements as a reader expects: by part, FR, then clause numbers (3.10 after 3.9)."""
    parts = {"4-2": 0, "3-3": 1, "4-1": 2, "3-2": 3, "2-4": 4}
    numbers = tuple(int(n) for n in re.findall(r"\d+", requirement.id))
    return (parts.get(requirement.part, 9), requirement.fr or "", numbers, requirement.id)


def _unique(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))


def _finding_ref(f: Mapping[str, Any]) -> FindingRef:
    confirmation = f.get("confirmation") if isinstance(f.get("confirmation"), Mapping) else {}
    status = str(confirmation.get("status", "not tried"))
    evidence = f.get("target_evidence") if isinstance(f.get("target_evidence"), Mapping) else {}
    shown = bool(evidence.get("signal") or evidence.get("returncode") is not None or evidence.get("report"))
    counts = status == "confirmed" or status.startswith("not tried") or status == "pending" or shown
    return FindingRef(int(f.get("id", 0)), str(f.get("class", "?")), tuple(str(g) for g in f.get("groups") or ()),
                      tuple(int(i) for i in f.get("anomaly_ids") or ()), counts, str(f.get("title", "")), bool(f.get("known")))


def _defects_of(ids: Sequence[int], campaign: CampaignEvidence) -> list[FindingRef]:
    """The defects (findings, or loose anomalies) that the occurrence ids belong to, in order."""
    wanted = set(ids)
    return [d for d in campaign.defects() if wanted & set(d.anomaly_ids)]


def _single(ids: Sequence[int], campaign: CampaignEvidence) -> bool:
    return len(_defects_of(ids, campaign)) == 1


def _defect_phrase(ids: Sequence[int], campaign: CampaignEvidence) -> str:
    """'2 findings (1 crash, 1 hang; 14 occurrences) in boundary, mutation'."""
    defects = _defects_of(ids, campaign)
    if not defects:
        return _anomaly_phrase(ids, campaign, with_groups=True)
    findings = [d for d in defects if d.id]
    loose = [d for d in defects if not d.id]
    parts = []
    if findings:
        detail = ", ".join(f"{n} {cls}" for cls, n in sorted(Counter(d.cls for d in findings).items()))
        occurrences = sum(len(d.anomaly_ids) for d in findings)
        ids_text = ", ".join(f"#{d.id}" for d in findings[:8]) + (" ..." if len(findings) > 8 else "")
        parts.append(f"{len(findings)} finding{'s' if len(findings) != 1 else ''} {ids_text} ({detail}; "
                     f"{occurrences} occurrence{'s' if occurrences != 1 else ''})")
    if loose:
        parts.append(_anomaly_phrase([i for d in loose for i in d.anomaly_ids], campaign))
    groups = list(dict.fromkeys(g for d in defects for g in d.groups))
    text = " and ".join(parts)
    if groups:
        text += f" in test group{'s' if len(groups) > 1 else ''} {', '.join(groups)}"
    return text


def _anomaly_phrase(ids: Sequence[int], campaign: CampaignEvidence, with_groups: bool = False) -> str:
    by_id = {a.id: a for a in campaign.anomalies}
    found = [by_id[i] for i in ids if i in by_id]
    detail = ", ".join(f"{n} {cls}" for cls, n in sorted(Counter(a.cls for a in found).items()))
    noun = "anomaly" if len(ids) == 1 else "anomalies"
    text = f"{len(ids)} {noun} ({detail})" if detail else f"{len(ids)} {noun}"
    groups = list(dict.fromkeys(a.group for a in found))
    if with_groups and groups:
        text += f" in test group{'s' if len(groups) > 1 else ''} {', '.join(groups)}"
    return text


def _cases_phrase(links: Sequence[LinkEvidence]) -> str:
    seen: dict[str, int] = {}
    for link in links:
        for g in link.groups:
            seen[g.name] = g.cases
    total = sum(seen.values())
    return f"{total} case{'s' if total != 1 else ''} of {', '.join(seen) or 'no group'}"
