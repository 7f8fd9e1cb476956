"""The system view: SL-T against the SL-C the evidence supports, zone by zone.

Each run folder is attributed to an asset (and the conduit channels it went through) by the
plan entry it was made for, or else by its target endpoint. Per zone, three kinds of evidence
are combined into one verdict per IEC 62443-3-3 requirement:

- campaign results of the zone's assets, judged by the compliance mapping (`verdicts.evaluate`);
  a requirement is met for the zone only when it is met for every asset that serves a protocol,
  so an untested asset leaves it partially evidenced;
- conduit policy tests of the channels into the zone (SR 5.2, SR 5.1; SR 3.5 when the device
  acted on a disallowed write); a channel without a policy, or never tested, leaves them partial;
- countermeasures declared in the system file (met by other means, with a reference). A failure
  observed by a test is never overridden by a declared countermeasure: retest through it.

SL-C per FR then follows the standard's cumulative rule (`levels.capability`). Conduits through
which nothing was ever tested are listed. `gap_section` is the JSON-ready section reports embed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from otfuzz.compliance.system import FR_NAMES, SystemModel, Zone
from otfuzz.errors import OtfuzzError



@dataclass
class RunInfo:
    """One run folder read back, and what in the system it gives evidence about."""

    path: Path
    results: dict[str, Any]
    system_meta: dict[str, Any] | None
    asset: str | None = None
    channels: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str((self.results.get("campaign") or {}).get("kind", "fuzz"))

    @property
    def status(self) -> str:
        return str((self.results.get("campaign") or {}).get("status", "running"))


def collect_runs(paths: Sequence[Path]) -> list[RunInfo]:
    """Read run folders; a folder made by run-plan stands for every entry folder in it."""
    from otfuzz.report.results import results_from_store
    from otfuzz.store.evidence import STORE_NAME, EvidenceStore

    folders: list[Path] = []
    audits: list[RunInfo] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise OtfuzzError(f"run folder {path} does not exist")
        if (path / AUDIT_FILE).is_file() and not (path / STORE_NAME).is_file():
            audits.append(_audit_run(path))  # otfuzz capture audit --out: conduit evidence
            continue
        if (path / STORE_NAME).is_file():
            folders.append(path)
            continue
        inner = sorted(p for p in path.iterdir() if (p / STORE_NAME).is_file())
        if not inner and not audits:
            raise OtfuzzError(f"{path} is neither an otfuzz run folder nor a run-plan folder (no {STORE_NAME} in it or its sub-folders)")
        folders += inner
    runs = audits
    for folder in dict.fromkeys(folders):
        store = EvidenceStore.open(folder)
        try:
            runs.append(RunInfo(folder, results_from_store(store), store.get_meta("system")))
        finally:
            store.close()
    return runs


AUDIT_FILE = "audit.json"
"""What `otfuzz capture audit --out DIR` writes and `collect_runs` reads as conduit evidence."""


def _audit_run(path: Path) -> RunInfo:
    """A passive conduit audit folder as a run of kind 'audit' attributed to its channels."""
    import json

    try:
        document = json.loads((path / AUDIT_FILE).read_text())
        channels = sorted({f["channel"] for f in document["flows"] if f.get("channel")})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OtfuzzError(f"{path / AUDIT_FILE} is not a readable capture audit ({exc}); run otfuzz capture audit again") from None
    return RunInfo(path, {"campaign": {"kind": "audit", "status": "completed"}, "audit": document}, None, None, channels or ["-"])


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def attribute(model: SystemModel, run: RunInfo) -> None:
    """Set `run.asset` and `run.channels` from its plan entry or, failing that, its endpoint."""
    labels = {f"{c.name}/{ch.name}": ch for c, ch in model.channels()}
    meta = run.system_meta or {}
    if meta.get("asset") in {a.name for a in model.assets}:
        run.asset = meta["asset"]
        run.channels = [label for label in meta.get("channels", []) if label in labels]
        return
    policy = run.results.get("policy") or {}
    if policy.get("conduit") and policy.get("channel"):
        label = f"{policy['conduit']}/{policy['channel']}"
        if label in labels:
            run.asset, run.channels = labels[label].server, [label]
            return
    target = run.results.get("target") or {}
    port = target.get("port")
    hosts = {_normal(str(target.get("address", "")))}
    if target.get("url"):
        hosts.add(_normal(urlsplit(str(target["url"])).hostname or ""))
    for label, channel in labels.items():
        if channel.via[1] == port and _normal(channel.via[0]) in hosts:
            run.asset = channel.server
            run.channels.append(label)
    if run.asset is None:
        for asset in model.assets:
            if _normal(asset.address) in hosts and any(s.port == port for s in asset.services):
                run.asset = asset.name
                break


# -- verdicts -------------------------------------------------------------------------------------


def _combine(verdicts: Sequence[Any], subjects: int, what: str, requirement: Any) -> Any:
    """One zone verdict from per-subject verdicts (assets or channels): fail wins; met needs all."""
    from otfuzz.compliance.verdicts import RequirementVerdict, Verdict

    failed = [v for v in verdicts if v.verdict is Verdict.FAIL]
    if failed:
        return RequirementVerdict(requirement, Verdict.FAIL, "; ".join(v.reason for v in failed))
    passed = [v for v in verdicts if v.verdict is Verdict.PASS]
    partial = [v for v in verdicts if v.verdict is Verdict.PARTIAL]
    if passed and len(passed) == subjects:
        return RequirementVerdict(requirement, Verdict.PASS, f"met for all {subjects} {what}: " + "; ".join(v.reason for v in passed))
    if passed or partial:
        shown = len(passed) + len(partial)
        return RequirementVerdict(requirement, Verdict.PARTIAL,
                                  f"evidence for {shown} of {subjects} {what}, of which {len(passed)} met: " +
                                  "; ".join(v.reason for v in passed + partial))
    return RequirementVerdict(requirement, Verdict.NOT_TESTED, f"none of the {subjects} {what} tested")


def _subject_verdict(found: Sequence[Any], requirement: Any, who: str) -> Any:
    """Several runs of one asset or channel: a failure in any run stands; else the best evidence."""
    from otfuzz.compliance.verdicts import RequirementVerdict, Verdict

    for wanted in (Verdict.FAIL, Verdict.PASS, Verdict.PARTIAL):
        hits = [v for v in found if v.verdict is wanted]
        if hits:
            return RequirementVerdict(requirement, wanted, f"{who}: {hits[0].reason}")
    return RequirementVerdict(requirement, Verdict.NOT_TESTED, f"{who}: not exercised")


def _policy_verdicts(run: RunInfo, catalogue: Any) -> list[Any]:
    """A policy run's own verdicts (the mapping cannot see violations) as RequirementVerdicts."""
    from otfuzz.compliance.verdicts import RequirementVerdict, Verdict

    out = []
    for item in (run.results.get("policy") or {}).get("verdicts", []):
        if item["requirement"] not in catalogue:
            continue
        verdict = {"fail": Verdict.FAIL, "inconclusive": Verdict.NOT_TESTED, "partial": Verdict.PARTIAL}.get(item["verdict"])
        if verdict is None:
            verdict = Verdict.PASS if item["strength"] == "direct" else Verdict.PARTIAL
        out.append(RequirementVerdict(catalogue.get(item["requirement"]), verdict, f"policy test {run.path.name}: {item['reason']}"))
    return out


def zone_verdicts(model: SystemModel, zone: Zone, runs: Sequence[RunInfo], catalogue: Any, mapping: Any) -> dict[str, Any]:
    """Every 3-3 requirement some evidence or countermeasure speaks to, judged for `zone`."""
    from otfuzz.compliance.verdicts import OtherMeans, RequirementVerdict, Verdict, evaluate

    serving = [a for a in zone.assets if model.asset(a).services]
    per_asset: dict[str, dict[str, list[Any]]] = {a: {} for a in serving}
    for run in runs:
        if run.asset in per_asset and run.kind == "fuzz":
            for v in evaluate(run.results, catalogue, mapping, object_type="system"):
                # a requirement no test of this run exercised is not evidence about the asset
                if v.requirement.part == "3-3" and v.verdict is not Verdict.NOT_TESTED:
                    per_asset[run.asset].setdefault(v.requirement.id, []).append(v)
    channels = [f"{c.name}/{ch.name}" for c, ch in model.channels() if ch.to_zone == zone.name]
    per_channel: dict[str, dict[str, list[Any]]] = {label: {} for label in channels}
    accepted: dict[str, list[Any]] = {}
    fails_when = {item["requirement"]: item["fails_when"] for item in _policy_evidence()}
    for run in runs:
        if run.kind == "audit":
            # a passive audit shows a conduit leaking, never that it holds: failures only
            for item in (run.results.get("audit") or {}).get("verdicts", []):
                if item.get("zone") == zone.name and item.get("verdict") == "fail" and item.get("requirement") in catalogue:
                    accepted.setdefault(item["requirement"], []).append(
                        RequirementVerdict(catalogue.get(item["requirement"]), Verdict.FAIL, f"capture audit {run.path.name}: {item['reason']}"))
            continue
        if run.kind != "policy" or not set(run.channels) & set(per_channel):
            continue
        for v in _policy_verdicts(run, catalogue):
            if fails_when.get(v.requirement.id) == "accepted":
                accepted.setdefault(v.requirement.id, []).append(v)  # a fail-only finding, not coverage
                continue
            for label in run.channels:
                if label in per_channel:
                    per_channel[label].setdefault(v.requirement.id, []).append(v)
    merged: dict[str, Any] = {}
    ids = {i for found in per_asset.values() for i in found} | {i for found in per_channel.values() for i in found} | set(accepted)
    for req_id in ids:
        requirement = catalogue.get(req_id)
        parts = []
        if any(req_id in found for found in per_asset.values()):
            parts.append(_combine([_subject_verdict(per_asset[a].get(req_id, []), requirement, f"asset {a}") for a in serving],
                                  len(serving), "assets serving a protocol", requirement))
        if any(req_id in found for found in per_channel.values()):
            parts.append(_combine([_subject_verdict(per_channel[c].get(req_id, []), requirement, f"channel {c}") for c in channels],
                                  len(channels), "channels into the zone", requirement))
        parts += accepted.get(req_id, [])
        merged[req_id] = _merge(parts, requirement)
    for measure in zone.countermeasures:
        for req_id in measure.requirements:
            requirement = catalogue.get(req_id)
            claim = OtherMeans(req_id, measure.reference, f"countermeasure: {measure.by}")
            found = merged.get(req_id)
            if found is not None and found.verdict is Verdict.FAIL:
                merged[req_id] = RequirementVerdict(requirement, Verdict.FAIL, found.reason, (), claim,
                                                    (f"Declared met by '{measure.by}' ({measure.reference}); the test evidence contradicts it.",))
            else:
                merged[req_id] = RequirementVerdict(requirement, Verdict.PASS, f"met by countermeasure '{measure.by}': {measure.reference}",
                                                    (), claim)
    return merged


def _merge(parts: Sequence[Any], requirement: Any) -> Any:
    """Verdicts of different kinds of evidence about one requirement: all must pass for a pass."""
    from otfuzz.compliance.verdicts import RequirementVerdict, Verdict

    failed = [v for v in parts if v.verdict is Verdict.FAIL]
    if failed:
        return RequirementVerdict(requirement, Verdict.FAIL, "; ".join(v.reason for v in failed))
    if parts and all(v.verdict is Verdict.PASS for v in parts):
        return RequirementVerdict(requirement, Verdict.PASS, "; ".join(v.reason for v in parts))
    if any(v.verdict in (Verdict.PASS, Verdict.PARTIAL) for v in parts):
        return RequirementVerdict(requirement, Verdict.PARTIAL, "; ".join(v.reason for v in parts))
    return RequirementVerdict(requirement, Verdict.NOT_TESTED, "; ".join(v.reason for v in parts))


def _policy_evidence() -> list[dict[str, Any]]:
    from otfuzz.compliance.policy import load_rules

    return list(load_rules()["policy_test"]["evidence"])


def zone_capability(catalogue: Any, verdicts: Mapping[str, Any], sl_t: Sequence[int]) -> Any:
    """SL-C per FR for a zone: the one adapter to the levels module (IEC 62443-3-3 system object)."""
    from otfuzz.compliance.catalogue import SYSTEM
    from otfuzz.compliance.levels import capability

    return capability(catalogue, SYSTEM, verdicts, sl_t)


# -- the section ----------------------------------------------------------------------------------


def gap_section(model: SystemModel, runs: Sequence[RunInfo | Path | str]) -> dict[str, Any]:
    """The system view of a report: per zone SL-T, SL-C, gap and blockers; untested conduits.

    `runs` are run folders (plain runs or run-plan folders) or runs already read.
    """
    from otfuzz.compliance.catalogue import load_catalogue
    from otfuzz.compliance.mapping import load_mapping

    paths = [Path(r) for r in runs if not isinstance(r, RunInfo)]
    runs = [r for r in runs if isinstance(r, RunInfo)] + (collect_runs(paths) if paths else [])
    catalogue = load_catalogue()
    mapping = load_mapping(catalogue)
    for run in runs:
        if run.asset is None and not run.channels:
            attribute(model, run)
    zones = []
    for zone in model.zones:
        verdicts = zone_verdicts(model, zone, runs, catalogue, mapping)
        frs = zone_capability(catalogue, verdicts, zone.sl_t)
        zones.append({
            "name": zone.name,
            "criticality": zone.criticality,
            "sl_t": list(zone.sl_t),
            "sl_c": [f.sl_c for f in frs],
            "gap": [f.gap for f in frs],
            "target_met": all(f.gap == 0 for f in frs),
            "frs": [{
                "fr": f.fr.id, "abbreviation": f.fr.abbreviation, "sl_t": f.sl_t, "sl_c": f.sl_c, "gap": f.gap,
                "ceiling": f.ceiling, "unverified_above": f.unverified_above,
                "blocked_by": [{"id": b.requirement.id, "title": b.requirement.title, "sl_min": b.requirement.sl_min,
                                "status": b.status} for b in f.missing],
            } for f in frs],
            "assets": [{"name": a, "serves": [f"{s.protocol}:{s.port}" for s in model.asset(a).services],
                        "runs": [str(r.path) for r in runs if r.asset == a]} for a in zone.assets],
            "requirements": [{"id": v.requirement.id, "title": v.requirement.title, "fr": v.requirement.fr,
                              "sl_min": v.requirement.sl_min, "verdict": v.verdict.value, "reason": v.reason,
                              "countermeasure": None if v.other_means is None else {"by": v.other_means.method, "reference": v.other_means.reference},
                              "notes": list(v.notes)}
                             for v in sorted(verdicts.values(), key=lambda v: _req_key(v.requirement))],
        })
    conduits = []
    for conduit in model.conduits:
        channels = []
        for channel in conduit.channels:
            label = f"{conduit.name}/{channel.name}"
            mine = [r for r in runs if label in r.channels]
            policy_runs = [r for r in mine if r.kind == "policy"]
            channels.append({
                "name": channel.name, "protocol": channel.protocol, "from": channel.from_zone, "to": channel.to_zone,
                "server": channel.server, "endpoint": channel.url(), "has_policy": channel.policy is not None,
                "fuzz_runs": [str(r.path) for r in mine if r.kind == "fuzz"],
                "policy_runs": [str(r.path) for r in policy_runs],
                "violations": sum(int(((r.results.get("policy") or {}).get("summary") or {}).get("violations", 0)) for r in policy_runs),
            })
        conduits.append({"name": conduit.name, "zones": list(conduit.zones), "channels": channels,
                         "tested": any(c["fuzz_runs"] or c["policy_runs"] for c in channels)})
    return {
        "schema_version": 1,
        "system": {"name": model.name, "file": model.path, "sha256": model.sha256, "role": model.organisation.role},
        "catalogue_sha256": catalogue.sha256,
        "zones": zones,
        "conduits": conduits,
        "untested_conduits": [c["name"] for c in conduits if not c["tested"]],
        "runs": [{"path": str(r.path), "kind": r.kind, "status": r.status, "target": (r.results.get("target") or {}).get("url"),
                  "asset": r.asset, "channels": r.channels} for r in runs],
        "unattributed_runs": [str(r.path) for r in runs if r.asset is None and r.kind != "audit"],
    }


def _req_key(requirement: Any) -> tuple[Any, ...]:
    from otfuzz.compliance.verdicts import requirement_sort_key

    return requirement_sort_key(requirement)


def format_gap(section: Mapping[str, Any], blockers_shown: int = 3) -> str:
    """The gap as a table: one row per zone and FR, with what blocks the target level."""
    header = ("zone", "FR", "SL-T", "SL-C", "gap", "blocked by")
    rows = []
    for zone in section["zones"]:
        for fr in zone["frs"]:
            blockers = fr["blocked_by"]
            failed = [b for b in blockers if b["status"] == "failed"]
            others = [b for b in blockers if b["status"] != "failed"]
            shown = [f"{b['id']} failed" for b in failed] + [f"{b['id']} ({b['status']})" for b in others]
            text = ", ".join(shown[:max(blockers_shown, len(failed))])
            if len(shown) > max(blockers_shown, len(failed)):
                text += f", +{len(shown) - max(blockers_shown, len(failed))} more"
            rows.append((zone["name"], f"{fr['fr']} {FR_NAMES[fr['fr']]}", str(fr["sl_t"]), str(fr["sl_c"]),
                         str(fr["gap"]) if fr["gap"] else "-", text or "-"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    lines = [f"SL gap per zone for {section['system']['name']}", "", fmt.format(*header).rstrip(),
             fmt.format(*("-" * w for w in widths)).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in rows]
    untested = section["untested_conduits"]
    lines += ["", "Conduits never tested: " + (", ".join(untested) if untested else "none")]
    violated = [f"{c['name']}/{ch['name']} ({ch['violations']})" for c in section["conduits"] for ch in c["channels"] if ch["violations"]]
    if violated:
        lines.append("Conduit policy violations: " + ", ".join(violated))
    if section["unattributed_runs"]:
        lines.append("Runs that match no asset or channel of the system: " + ", ".join(section["unattributed_runs"]))
    return "\n".join(lines)


__all__ = ["RunInfo", "attribute", "collect_runs", "format_gap", "gap_section",
           "zone_capability", "zone_verdicts"]
