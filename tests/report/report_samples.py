"""A complete, schema-valid results document whose device bytes try to inject markup.

The target answers with HTML and script, names itself with script, and describes itself with
an event handler. Every report format must show these as text. `write_run` stores the same
evidence in a real run folder through the evidence store, for the command-line tests.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

SCRIPT_REPLY = b"<script>window.__pwned = 1</script>"
SCRIPT_VENDOR = "<script>window.__pwned = 2</script>"
IMG_DESCRIPTION = "reply carried <img src=x onerror=\"window.__pwned = 3\"> and a bell \x07"
FRAME = "000100000006010300000001"

_RESULTS: dict[str, Any] = {
    "schema_version": 1,
    "tool": {"name": "otfuzz", "version": "0.1.0"},
    "campaign": {
        "id": "run-20250101-100000", "kind": "fuzz", "seed": 7,
        "config": {"target": "modbus://127.0.0.1:5020?unit=1", "groups": ["boundary", "structural", "mutation", "sequence"]},
        "config_sha256": "3" * 64, "started_at": "2025-01-01T10:00:00+00:00", "ended_at": "2025-01-01T10:05:00+00:00",
        "status": "completed", "stop_reason": "duration reached", "elapsed_s": 300.0, "host": {"hostname": "lab-1", "os": "Linux"},
        "operator": "Ada Lovelace", "organisation": "ACME Test Lab", "independence": "independent department",
    },
    "target": {
        "url": "modbus://127.0.0.1:5020?unit=1", "protocol": "modbus", "address": "127.0.0.1", "port": 5020,
        "identity": {"vendor": SCRIPT_VENDOR, "product": "PLC-9000 <b>bold</b>", "revision": "1.0\x1b[31m"},
        "command": None,
    },
    "liveness": {"method": "read holding register 0", "probe_request_hex": FRAME,
                 "baseline_ms": {"median": 1.2, "p95": 2.5, "samples": 20}, "degradation_factor": 10.0},
    "totals": {"cases": 1000, "anomalies": 2, "replies": {"normal": 400, "exception": 560, "malformed": 1, "no-reply": 39},
               "anomaly_classes": {"crash": 1, "malformed-reply": 1}, "findings": 2,
               "findings_by_severity": {"high": 1, "medium": 0, "low": 1}, "findings_confirmed": 1},
    "groups": [
        {"name": "boundary", "cases": 400, "replies": {"normal": 100, "exception": 290, "no-reply": 10}, "anomalies": 1},
        {"name": "structural", "cases": 300, "replies": {"normal": 100, "exception": 170, "no-reply": 29, "malformed": 1},
         "anomalies": 1},
        {"name": "mutation", "cases": 200, "replies": {"normal": 120, "exception": 80}, "anomalies": 0},
        {"name": "sequence", "cases": 100, "replies": {"normal": 80, "exception": 20}, "anomalies": 0},
    ],
    "anomalies": [
        {"id": 1, "case_id": 137, "group": "boundary", "class": "crash", "detected_at": "2025-01-01T10:02:00+00:00",
         "description": "target process exited with signal 11", "frames_hex": [FRAME, "0001000000060103ffff0000"],
         "reply_hex": None, "reply_kind": "no-reply", "timings": {"sent_s": 120.1, "timeout_s": 0.5},
         "probes": [{"t": 120.6, "ok": False}], "reproducible": True,
         "confirmation": {"replays": 3, "reproduced": 3},
         "reproducer": {"case_ids": [137], "frames_hex": ["0001000000060103ffff0000"], "minimised": True},
         "target_exit": {"signal": 11}, "finding_id": 1},
        {"id": 2, "case_id": 512, "group": "structural", "class": "malformed-reply", "detected_at": "2025-01-01T10:03:00+00:00",
         "description": IMG_DESCRIPTION, "frames_hex": ["00010000000201"], "reply_hex": SCRIPT_REPLY.hex(),
         "reply_kind": "malformed", "timings": {"sent_s": 180.0, "reply_ms": 3.1}, "probes": [], "reproducible": False,
         "reproducer": {"case_ids": [512], "frames_hex": ["00010000000201"], "minimised": False}, "finding_id": 2},
    ],
    "findings": [
        {"id": 1, "key": "modbus|crash|signal SIGSEGV|read_holding_registers|quantity=# above maximum #", "class": "crash",
         "severity": "high", "title": "Target process dies (signal SIGSEGV) on a read holding registers request with quantity=0 "
                                      "below minimum 1 <script>window.__pwned = 5</script>",
         "request_type": "read_holding_registers", "violated_rules": ["quantity=# below minimum #"],
         "problems": ["quantity=0 below minimum 1"], "occurrences": 1, "first_case_id": 137, "last_case_id": 137,
         "first_seen": "2025-01-01T10:02:00+00:00", "last_seen": "2025-01-01T10:02:00+00:00", "suppressed_cases": 12,
         "reproducer": {"case_ids": [137], "frames_hex": ["0001000000060103ffff0000"], "minimised": True},
         "confirmation": {"status": "confirmed", "trials": 9},
         "target_evidence": {"signal": "SIGSEGV", "returncode": None, "report": None,
                             "excerpt": "segfault <img src=x onerror=\"window.__pwned = 6\">"},
         "anomaly_ids": [1], "groups": ["boundary"], "occurrences_replayed": 1, "occurrences_confirmed": 1, "known": False},
        {"id": 2, "key": "modbus|malformed-reply|unrecognised request|valid request", "class": "malformed-reply",
         "severity": "low", "title": "Target sends a malformed reply on a valid unrecognised request: " + IMG_DESCRIPTION,
         "request_type": "unrecognised request", "violated_rules": [], "problems": [], "occurrences": 1,
         "first_case_id": 512, "last_case_id": 512, "first_seen": "2025-01-01T10:03:00+00:00",
         "last_seen": "2025-01-01T10:03:00+00:00", "suppressed_cases": 0,
         "reproducer": {"case_ids": [512], "frames_hex": ["00010000000201"], "minimised": False},
         "confirmation": {"status": "not reproduced", "trials": 2}, "target_evidence": None,
         "anomaly_ids": [2], "groups": ["structural"], "occurrences_replayed": 1, "occurrences_confirmed": 0, "known": False},
    ],
    "timeline": [{"t": float(t), "cases": t * 3 + t // 3, "anomalies": (t >= 120) + (t >= 180)} for t in range(0, 301, 10)],
    "probes": [{"t": float(t), "ok": t != 120, "latency_ms": None if t == 120 else 1.0 + (t % 30) / 20, "reason": "ok"}
               for t in range(0, 301, 10)],
    "events": [{"t": 120.6, "kind": "target-restart", "detail": "restarted <script>window.__pwned = 4</script>"}],
}


def hostile_results() -> dict[str, Any]:
    """A fresh copy of the sample (tests may change it)."""
    return copy.deepcopy(_RESULTS)


def write_run(run_dir: Path, results: dict[str, Any]) -> Path:
    """Store `results` in a real run folder through the evidence store."""
    from otfuzz.store.evidence import EvidenceStore

    run_dir.mkdir(parents=True, exist_ok=True)
    store = EvidenceStore.create(run_dir)
    try:
        for key in ("tool", "campaign", "target", "liveness"):
            store.set_meta(key, results[key])
        for group in results["groups"]:
            for kind, n in group["replies"].items():
                store.count(group["name"], kind, n)
        for probe in results["probes"]:
            store.probe(probe["t"], probe["ok"], probe["latency_ms"], probe["reason"])
        for event in results["events"]:
            store.event(event["t"], event["kind"], event["detail"])
        computed = ("id", "occurrences", "first_case_id", "last_case_id", "first_seen", "last_seen", "suppressed_cases",
                    "anomaly_ids", "groups", "occurrences_replayed", "occurrences_confirmed")
        ids = {f["id"]: store.add_finding(f["key"], f["class"], {k: v for k, v in f.items() if k not in computed})
               for f in results.get("findings", [])}
        for anomaly in results["anomalies"]:
            record = {k: v for k, v in anomaly.items() if k not in ("id", "finding_id")}
            store.add_anomaly(anomaly["case_id"], anomaly["group"], anomaly["class"], record, ids.get(anomaly.get("finding_id")))
        for sample in results["timeline"]:
            store.flush(0, sample["t"], (sample["t"], sample["cases"], sample["anomalies"]))
    finally:
        store.close()
    return run_dir
