"""The campaign results document: the evidence store read back as one JSON-ready dict.

Every report format (JSON, HTML, PDF, JUnit, OSCAL) starts from this document, so they can
never disagree with each other or with the store. Its shape is published as a JSON Schema in
`schema/results.schema.json`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from otfuzz import __version__
from otfuzz.engine.findings import behaviour_of, request_types
from otfuzz.errors import OtfuzzError
from otfuzz.store.evidence import EvidenceStore

REPLY_KINDS = ("normal", "exception", "malformed", "spec-violation", "no-reply", "closed", "reset", "suppressed", "deferred")
SEVERITIES = ("high", "medium", "low")


def results_schema() -> dict[str, Any]:
    return json.loads(resources.files("otfuzz.report").joinpath("schema/results.schema.json").read_text())


def load_results(run_dir: Path) -> dict[str, Any]:
    """Build the results document of the run in `run_dir` (raises OtfuzzError if it is not one)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OtfuzzError(f"run folder {run_dir} does not exist")
    store = EvidenceStore.open(run_dir)
    try:
        return results_from_store(store)
    finally:
        store.close()


def results_from_store(store: EvidenceStore) -> dict[str, Any]:
    campaign = dict(store.get_meta("campaign") or {})
    campaign.setdefault("status", "running")
    campaign.setdefault("ended_at", None)
    counts = store.counts()
    anomalies = store.anomalies()
    per_group_anomalies: dict[str, int] = {}
    classes: dict[str, int] = {}
    for item in anomalies:
        per_group_anomalies[item["group"]] = per_group_anomalies.get(item["group"], 0) + 1
        classes[item["class"]] = classes.get(item["class"], 0) + 1
    findings = _findings(store, anomalies)
    groups = []
    totals: dict[str, int] = {}
    group_names = list(counts) + [g for g in per_group_anomalies if g not in counts]
    for name in group_names:
        replies = counts.get(name, {})
        for kind, n in replies.items():
            totals[kind] = totals.get(kind, 0) + n
        groups.append({"name": name, "cases": sum(replies.values()), "replies": replies, "anomalies": per_group_anomalies.get(name, 0)})
    doc: dict[str, Any] = {
        "schema_version": 1,
        "tool": store.get_meta("tool") or {"name": "otfuzz", "version": __version__},
        "campaign": campaign,
        "target": store.get_meta("target") or {},
        "liveness": store.get_meta("liveness") or {"method": "not measured", "baseline_ms": {}},
        "totals": {"cases": sum(totals.values()),
                   "sent": sum(totals.values()) - totals.get("suppressed", 0) - totals.get("deferred", 0),
                   "anomalies": len(anomalies), "replies": totals, "anomaly_classes": classes,
                   "findings": len(findings),
                   "findings_by_severity": {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES},
                   "findings_confirmed": sum(1 for f in findings if f["confirmation"]["status"] == "confirmed"),
                   "behaviours": len({f["behaviour"] for f in findings}),
                   "known_finding_s": _known_finding_seconds(findings, anomalies)},
        "findings": findings,
        "groups": groups,
        "anomalies": anomalies,
        "timeline": store.timeline(),
        "probes": store.probes(),
        "events": store.events(),
    }
    search = store.get_meta("search")
    if search is not None:
        doc["search"] = {**search, "corpus_over_time": store.samples("corpus")}
    for key in ("stress", "policy"):  # sections other layers add to the store
        extra = store.get_meta(key)
        if extra is not None:
            doc[key] = extra
    return doc


def _findings(store: EvidenceStore, anomalies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The findings with their occurrences: ids, groups, and how many replays confirmed them."""
    by_finding: dict[int, list[dict[str, Any]]] = {}
    for item in anomalies:
        if item.get("finding_id") is not None:
            by_finding.setdefault(int(item["finding_id"]), []).append(item)
    out = []
    for finding in store.findings():
        occurrences = by_finding.get(finding["id"], [])
        statuses = [str((a.get("confirmation") or {}).get("status", "pending")) for a in occurrences]
        finding["anomaly_ids"] = [a["id"] for a in occurrences]
        finding["groups"] = sorted({str(a.get("group")) for a in occurrences})
        finding["occurrences_replayed"] = sum(1 for st in statuses if st in ("confirmed", "not reproduced"))
        finding["occurrences_confirmed"] = statuses.count("confirmed")
        finding.setdefault("severity", "medium")
        finding["behaviour"] = behaviour_of(finding)
        finding["request_types"] = request_types(finding.get("triggers") or []) or [str(finding.get("request_type") or "")]
        finding.setdefault("confirmation", {"status": "not tried"})
        finding["known"] = bool(finding.get("known", False))
        out.append(finding)
    order = {s: n for n, s in enumerate(SEVERITIES)}
    out.sort(key=lambda f: (order.get(f["severity"], 9), f["behaviour"], f["id"]))
    return out


def _known_finding_seconds(findings: list[dict[str, Any]], anomalies: list[dict[str, Any]]) -> float:
    """Time spent on occurrences of findings already confirmed when they happened: handling them
    (probes, restarts) and investigating them (replays that ended in the known finding)."""
    confirmed_at = {f["id"]: f.get("confirmed_elapsed_s") for f in findings}
    total = 0.0
    for item in anomalies:
        at = confirmed_at.get(item.get("finding_id"))
        if at is not None and float(item.get("elapsed_s") or 0) >= float(at):
            total += float(item.get("handling_s") or 0) + float(item.get("investigation_s") or 0)
    return round(total, 3)

