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
from otfuzz.errors import OtfuzzError
from otfuzz.store.evidence import EvidenceStore

REPLY_KINDS = ("normal", "exception", "malformed", "spec-violation", "no-reply", "closed", "reset")


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
        "totals": {"cases": sum(totals.values()), "anomalies": len(anomalies), "replies": totals, "anomaly_classes": classes},
        "groups": groups,
        "anomalies": anomalies,
        "timeline": store.timeline(),
        "probes": store.probes(),
        "events": store.events(),
    }
    for key in ("stress", "policy"):  # sections other layers add to the store
        extra = store.get_meta(key)
        if extra is not None:
            doc[key] = extra
    return doc
