"""The compliance section of a report: verdicts, SL-C against SL-T, and who tested.

`build_evidence(results, options)` turns a campaign results document and the assessor's
choices (component type, SL-T vector, requirements met by other means, tester identity and
independence) into one JSON-ready dict. Every report format renders this dict, and the JSON
report embeds it under "compliance"; its shape is published in
`otfuzz/report/schema/compliance.schema.json`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otfuzz import __version__
from otfuzz.compliance.catalogue import COMPONENT_TYPES, SECURITY_LEVELS, Catalogue, load_catalogue
from otfuzz.compliance.levels import FrCapability, capability
from otfuzz.compliance.mapping import RequirementMapping, load_mapping
from otfuzz.compliance.other_means import load_other_means
from otfuzz.compliance.verdicts import OtherMeans, RequirementVerdict, Verdict, evaluate
from otfuzz.errors import OtfuzzError

SCHEMA_VERSION = 1
FR_COUNT = 7


@dataclass(frozen=True)
class EvidenceOptions:
    """What the assessor says about the assessment; everything is optional."""

    component_type: str | None = None  # embedded-device, host-device, network-device, software-application
    sl_t: tuple[int, ...] | None = None  # one level per FR, FR1..FR7
    other_means: tuple[OtherMeans, ...] = ()
    other_means_file: Path | None = None  # read if given, in addition to `other_means`
    operator: str | None = None  # default: the campaign's own record
    organisation: str | None = None
    independence: str | None = None
    catalogue_file: Path | None = None  # default: the catalogue shipped with otfuzz
    mapping_file: Path | None = None


def parse_component_type(text: str) -> str:
    """Check a component type name; the error lists the valid ones."""
    name = text.strip().lower()
    if name not in COMPONENT_TYPES:
        raise OtfuzzError(f"unknown component type '{text}' (expected one of {', '.join(COMPONENT_TYPES)})")
    return name


def parse_sl_vector(text: str | Sequence[int]) -> tuple[int, ...]:
    """'2,2,3,1,2,1,3' (one level per FR) or a single level for all seven FRs."""
    raw = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()] if isinstance(text, str) else list(text)
    try:
        levels = [int(p) for p in raw]
    except (TypeError, ValueError):
        raise OtfuzzError(f"SL-T '{text}' must be numbers such as 2,2,2,2,2,2,2") from None
    if len(levels) == 1:
        levels *= FR_COUNT
    if len(levels) != FR_COUNT:
        raise OtfuzzError(f"SL-T needs one level for each of the {FR_COUNT} FRs (or one for all), got {len(levels)}")
    for fr, level in enumerate(levels, start=1):
        if level not in SECURITY_LEVELS:
            raise OtfuzzError(f"SL-T for FR{fr} is {level}, outside 1-4")
    return tuple(levels)


def build_evidence(results: Mapping[str, Any], options: EvidenceOptions | None = None, *,
                   catalogue: Catalogue | None = None, mapping: RequirementMapping | None = None) -> dict[str, Any]:
    """Compute the compliance section for `results` (a campaign results document)."""
    options = options or EvidenceOptions()
    catalogue = catalogue or load_catalogue(options.catalogue_file)
    mapping = mapping or load_mapping(catalogue, options.mapping_file)
    component_type = parse_component_type(options.component_type) if options.component_type else None
    sl_t = parse_sl_vector(options.sl_t) if options.sl_t is not None else None
    if sl_t is not None and component_type is None:
        raise OtfuzzError("an SL-T vector needs a component type to compare with (--component-type)")
    claims = tuple(options.other_means)
    if options.other_means_file is not None:
        claims += load_other_means(options.other_means_file, catalogue)
    code = COMPONENT_TYPES[component_type] if component_type else None
    campaign = results.get("campaign") or {}
    tester = {
        "operator": options.operator or campaign.get("operator"),
        "organisation": options.organisation or campaign.get("organisation"),
        "independence": options.independence or campaign.get("independence"),
    }
    if options.independence and mapping.independence.normalise(options.independence) is None:
        levels = ", ".join(level.id for level in mapping.independence.levels)
        raise OtfuzzError(f"unknown independence level '{options.independence}' (expected one of {levels})")
    level = mapping.independence.normalise(tester["independence"]) if tester["independence"] else None
    tester["independence_level"] = level

    verdicts = evaluate(results, catalogue, mapping, other_means=claims, independence=tester["independence"],
                        object_type=code)
    levels = None
    if code is not None:
        # SL-C needs every applicable requirement, mapped or not: verdicts cover the mapped
        # ones and the user's claims; the rest have no evidence.
        by_id = {v.requirement.id: v for v in verdicts}
        levels = _levels_section(capability(catalogue, code, by_id, sl_t), sl_t)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_by": {"name": "otfuzz", "version": __version__},
        "catalogue": {"title": catalogue.title, "editions": dict(catalogue.editions), "sha256": catalogue.sha256},
        "mapping": {"sha256": mapping.sha256, "rules": [{"id": r.id, "title": r.title, "description": r.description}
                                                         for r in mapping.rules]},
        "assessed_object": {
            "kind": "component" if code else "unspecified",
            "component_type": component_type,
            "code": code,
        },
        "tester": tester,
        "summary": _summary(verdicts, results, levels),
        "requirements": [_verdict_entry(v) for v in verdicts],
        "security_levels": levels,
        "unmapped_groups": _unmapped_groups(results, mapping),
    }


def _unmapped_groups(results: Mapping[str, Any], mapping: RequirementMapping) -> list[str]:
    """Groups that ran but that no rule names: shown so that nothing is silently dropped."""
    named = {group for rule in mapping.rules for group in rule.groups or ()}
    ran = {str(g.get("name")) for g in results.get("groups") or [] if isinstance(g, Mapping)}
    return sorted(ran - named)


def _verdict_entry(v: RequirementVerdict) -> dict[str, Any]:
    r = v.requirement
    return {
        "id": r.id,
        "title": r.title,
        "part": r.part,
        "fr": r.fr,
        "sl_min": r.sl_min,
        "confidence": r.confidence,
        "verdict": v.verdict.value,
        "met": v.met,
        "reason": v.reason,
        "evidence": [{
            "rule": link.rule.id,
            "title": link.rule.title,
            "strength": link.strength.name,
            "groups": [{"name": g.name, "cases": g.cases, "anomalies": g.anomalies} for g in link.groups],
            "cases": link.cases,
            "outcome": link.outcome,
            "anomaly_ids": list(link.anomaly_ids),
            "finding_ids": [i for i in link.finding_ids if i],
            "failed_groups": [{"name": j.group, "reasons": list(j.reasons)} for j in link.failed_groups],
            "set_aside": [{"name": j.group, "verdict": j.verdict} for j in link.set_aside],
        } for link in v.links],
        "anomaly_ids": list(v.anomaly_ids),
        "finding_ids": list(v.finding_ids),
        "attached_finding_ids": list(v.attached_finding_ids),
        "attached_anomaly_ids": list(v.attached_anomaly_ids),
        "other_means": None if v.other_means is None else {
            "reference": v.other_means.reference, "method": v.other_means.method, "status": v.other_means.status},
        "notes": list(v.notes),
    }


def _levels_section(frs: Sequence[FrCapability], sl_t: Sequence[int] | None) -> dict[str, Any]:
    def blockers(items: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"id": b.requirement.id, "title": b.requirement.title, "sl_min": b.requirement.sl_min,
                 "status": b.status, "confidence": b.requirement.confidence} for b in items]

    return {
        "sl_t": list(sl_t) if sl_t is not None else None,
        "sl_c": [f.sl_c for f in frs],
        "target_met": None if sl_t is None else all(f.gap == 0 for f in frs),
        "frs": [{
            "fr": f.fr.id,
            "abbreviation": f.fr.abbreviation,
            "name": f.fr.name,
            "sl_t": f.sl_t,
            "sl_c": f.sl_c,
            "ceiling": f.ceiling,
            "gap": f.gap,
            "unverified_above": f.unverified_above,
            "next_level": f.next_level,
            "next_level_blockers": blockers(f.next_level_blockers),
            "missing": blockers(f.missing),
        } for f in frs],
    }


def _summary(verdicts: Sequence[RequirementVerdict], results: Mapping[str, Any],
             levels: Mapping[str, Any] | None) -> dict[str, Any]:
    counts = {v.value: 0 for v in Verdict}
    for v in verdicts:
        counts[v.verdict.value] += 1
    totals = results.get("totals") or {}
    cases = int(totals.get("cases") or sum(int(g.get("cases") or 0) for g in results.get("groups") or []))
    anomalies = int(totals.get("anomalies") or len(results.get("anomalies") or []))
    findings = [f for f in results.get("findings") or [] if isinstance(f, Mapping)]
    failed = [v.requirement.id for v in verdicts if v.verdict is Verdict.FAIL]
    evidenced = counts["pass"] + counts["partial"]
    if failed:
        overall = "fail"
        against = sorted({i for v in verdicts if v.verdict is Verdict.FAIL for i in v.finding_ids})
        if findings:
            severities = Counter(str(f.get("severity")) for f in findings if f.get("id") in against)
            shown = ", ".join(f"{severities[s]} {s}" for s in ("high", "medium", "low") if severities.get(s))
            shapes = len({f.get("behaviour") for f in findings if f.get("id") in against and f.get("behaviour")})
            shape_text = f", {shapes} behaviour{'s' if shapes != 1 else ''}" if shapes else ""
            cause = (f"{len(against)} finding{'s' if len(against) != 1 else ''} ({shown}{shape_text})" if against
                     else "the run's own judgement")
        else:
            cause = f"{anomalies} anomal{'ies' if anomalies != 1 else 'y'}"
        headline = (f"{len(failed)} requirement{'s' if len(failed) != 1 else ''} failed ({', '.join(failed)}): "
                    f"{cause} in {cases} test cases.")
    elif evidenced:
        overall = "pass"
        headline = (f"No requirement failed in {cases} test cases: {counts['pass']} met, "
                    f"{counts['partial']} partially evidenced, {counts['not-tested']} not tested.")
    else:
        overall = "inconclusive"
        headline = f"Nothing was evidenced: {cases} test cases exercised no mapped requirement."
    target_met = levels.get("target_met") if levels else None
    return {"overall": overall, "headline": headline, "counts": counts, "cases": cases, "anomalies": anomalies,
            "findings": len(findings), "failed": failed, "sl_target_met": target_met}
