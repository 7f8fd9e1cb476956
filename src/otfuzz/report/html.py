"""The HTML report: one self-contained, offline file a non-programmer can read.

Order follows what an assessor asks first: the verdict, then the findings (distinct defects,
each with its minimised reproducer), the requirement matrix citing them, SL-T against SL-C per
FR, charts, and as appendices every anomaly (the findings' occurrences) and the full campaign
record. The page loads nothing: styles are inline, charts are inline SVG, and a Content
Security Policy forbids scripts and fetches, so even a bug in escaping could not make the
page run code. Escaping itself is Jinja2's autoescape; bytes and strings that came from the
device (replies, identification, descriptions) are additionally shown with control characters
spelled out, so a device cannot hide anything in the page either.

`report_context` builds the view from a results document and its compliance section, tolerating
missing optional keys; the PDF report renders the same context.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from otfuzz.report import plots
from otfuzz.report.plots import Series

REPLY_KINDS = ("normal", "exception", "malformed", "spec-violation", "no-reply", "closed", "reset")
# Results sections other layers render themselves: (results key, module, function returning safe HTML).
SECTION_RENDERERS = (("stress", "otfuzz.stress.report", "stress_html"),
                     ("system_gap", "otfuzz.report.system", "gap_fragment"))
MAX_EVENTS = 1000
MAX_DUMP_BYTES = 4096
MAX_LINKS_PER_CELL = 12  # anomaly links in one matrix cell before "and N more"
# Rows of long tables in the PDF: a page-layout engine spends ~10 ms a row, and a printed list
# of thousands helps nobody. The HTML and JSON reports keep every row.
MAX_PRINTED_ROWS = 200
MAX_PRINTED_EVENTS = 100
MAX_PRINTED_KINDS = 15  # findings printed with their full reproducer in the PDF
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def printable(value: Any) -> str:
    """Text with control characters spelled out as \\xNN (they could hide or reorder content)."""
    text = "" if value is None else str(value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def hexdump(hex_text: str | None, limit: int = MAX_DUMP_BYTES) -> str:
    """Classic offset / hex / ASCII dump of a hex string, as the bytes went over the wire."""
    if not hex_text:
        return ""
    try:
        data = bytes.fromhex(hex_text)
    except ValueError:
        return printable(hex_text)
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset:offset + 16]
        hex_part = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:04x}  {hex_part:<47}  {text}")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes (complete in the JSON report)")
    return "\n".join(lines)


def ascii_text(hex_text: str | None) -> str:
    """The printable bytes of a reply as one string: what a device 'said', if it said words."""
    try:
        data = bytes.fromhex(hex_text or "")
    except ValueError:
        return ""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data[:MAX_DUMP_BYTES])


def render_html(results: Mapping[str, Any], evidence: Mapping[str, Any], *, for_print: bool = False,
                generated_at: datetime | None = None) -> str:
    """The report as an HTML string (`for_print` adds page rules for the PDF engine)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("otfuzz.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["printable"] = printable
    template = env.get_template("report.html.j2")
    return template.render(report_context(results, evidence, generated_at=generated_at), for_print=for_print)


def write_html(results: Mapping[str, Any], evidence: Mapping[str, Any], path: Path) -> Path:
    """Write the self-contained HTML report to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results, evidence), encoding="utf-8")
    return path


def report_context(results: Mapping[str, Any], evidence: Mapping[str, Any], *,
                   generated_at: datetime | None = None) -> dict[str, Any]:
    """Everything the template shows, with defaults for whatever the results lack."""
    campaign = _dict(results.get("campaign"))
    target = _dict(results.get("target"))
    tool = _dict(results.get("tool"))
    groups = [_dict(g) for g in results.get("groups") or []]
    anomalies = [_anomaly(_dict(a)) for a in results.get("anomalies") or []]
    requirements = [_dict(r) for r in evidence.get("requirements") or []]
    by_requirement = {str(r.get("id")): list(r.get("finding_ids") or []) for r in requirements}
    against: dict[Any, list[str]] = {}
    for req_id, ids in by_requirement.items():
        for i in ids:
            against.setdefault(i, []).append(req_id)
    by_id = {a["id"]: a for a in anomalies}
    findings = [_finding(_dict(f), against, by_id) for f in results.get("findings") or []]
    where = target.get("url") or f"{target.get('protocol', '?')}://{target.get('address', '?')}:{target.get('port', '?')}"
    generated = (generated_at or datetime.now(timezone.utc)).replace(microsecond=0).isoformat()
    tester = _dict(evidence.get("tester"))
    assessed = _dict(evidence.get("assessed_object"))
    return {
        "title": f"Robustness test evidence: {where}",
        "target_label": where,
        "generated_at": generated,
        "summary": _dict(evidence.get("summary")),
        "status": campaign.get("status", "unknown"),
        "stop_reason": campaign.get("stop_reason"),
        "assessed": assessed,
        "tester": tester,
        "facts": _facts(results, tester, assessed),
        "identity": sorted(_dict(target.get("identity")).items()),
        "requirements": requirements,
        "levels": evidence.get("security_levels"),
        "findings": findings,
        "findings_by_requirement": by_requirement,
        "severity_counts": {s: sum(1 for f in findings if f["severity"] == s) for s in ("high", "medium", "low")},
        "confirmed_total": sum(1 for f in findings if f["status"] == "confirmed"),
        "known_total": sum(1 for f in findings if f["known"]),
        "anomaly_total": len(anomalies),
        "behaviour_total": len({f["behaviour"] for f in findings}),
        "anomaly_classes": sorted(Counter(a["class"] for a in anomalies).items()),
        "anomalies": anomalies,
        "max_links": MAX_LINKS_PER_CELL,
        "max_print_rows": MAX_PRINTED_ROWS,
        "max_print_events": MAX_PRINTED_EVENTS,
        "max_print_kinds": MAX_PRINTED_KINDS,
        "groups": groups,
        "reply_kinds": _reply_kinds(groups),
        "unmapped_groups": evidence.get("unmapped_groups") or [],
        "rules": _dict(evidence.get("mapping")).get("rules") or [],
        "charts": _charts(results, groups),
        "search": _search(results),
        "extra_sections": _extra_sections(results),
        "record": _record(results, tool, campaign, target),
        "config_json": json.dumps(campaign.get("config") or {}, indent=2, sort_keys=True),
        "events": [_dict(e) for e in (results.get("events") or [])[:MAX_EVENTS]],
        "events_total": len(results.get("events") or []),
        "catalogue": _dict(evidence.get("catalogue")),
        "mapping_sha256": _dict(evidence.get("mapping")).get("sha256"),
    }


def _extra_sections(results: Mapping[str, Any]) -> list[Markup]:
    """HTML fragments of layers that own a part of the results (they escape their own content)."""
    out = []
    for key, module_name, function in SECTION_RENDERERS:
        if not isinstance(results.get(key), Mapping):
            continue
        try:
            render = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError):
            continue  # that layer is not installed: its raw data is still in the JSON report
        fragment = render(results)
        if fragment:
            out.append(Markup(fragment))
    return out


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _facts(results: Mapping[str, Any], tester: Mapping[str, Any], assessed: Mapping[str, Any]) -> list[tuple[str, str]]:
    campaign = _dict(results.get("campaign"))
    target = _dict(results.get("target"))
    tool = _dict(results.get("tool"))
    totals = _dict(results.get("totals"))
    return [
        ("Target", str(target.get("url") or target.get("address") or "not recorded")),
        ("Protocol", str(target.get("protocol") or "not recorded")),
        ("Component type", str(assessed.get("component_type") or "not given")),
        ("Test cases", str(totals.get("cases", "not recorded"))),
        ("Anomalies", str(totals.get("anomalies", len(results.get("anomalies") or [])))),
        ("Started", str(campaign.get("started_at") or "not recorded")),
        ("Ended", str(campaign.get("ended_at") or "not recorded")),
        ("Tool", f"{tool.get('name', 'otfuzz')} {tool.get('version', '?')}"),
        ("Operator", str(tester.get("operator") or "not recorded")),
        ("Organisation", str(tester.get("organisation") or "not recorded")),
        ("Tester independence", str(tester.get("independence") or "not recorded")),
    ]


def _record(results: Mapping[str, Any], tool: Mapping[str, Any], campaign: Mapping[str, Any],
            target: Mapping[str, Any]) -> list[tuple[str, str]]:
    liveness = _dict(results.get("liveness"))
    baseline = _dict(liveness.get("baseline_ms"))
    host = _dict(campaign.get("host"))
    rows = [
        ("Tool", f"{tool.get('name', 'otfuzz')} {tool.get('version', '?')}"),
        ("Campaign id", campaign.get("id")),
        ("Kind", campaign.get("kind")),
        ("Seed", campaign.get("seed")),
        ("Configuration SHA-256", campaign.get("config_sha256")),
        ("Seed file", _dict(campaign.get("config")).get("seeds")),
        ("Seed file SHA-256", _dict(campaign.get("config")).get("seeds_sha256")),
        ("Status", campaign.get("status")),
        ("Stop reason", campaign.get("stop_reason")),
        ("Started", campaign.get("started_at")),
        ("Ended", campaign.get("ended_at")),
        ("Elapsed (s)", campaign.get("elapsed_s")),
        ("Host", ", ".join(f"{k}: {v}" for k, v in sorted(host.items())) or None),
        ("Target URL", target.get("url")),
        ("Address", f"{target.get('address')}:{target.get('port')}" if target.get("address") else None),
        ("Target command", target.get("command")),
        ("Liveness probe", liveness.get("method")),
        ("Probe request (hex)", liveness.get("probe_request_hex")),
        ("Baseline latency (ms)", ", ".join(f"{k} {v}" for k, v in sorted(baseline.items())) or None),
        ("Degradation factor", liveness.get("degradation_factor")),
    ]
    return [(label, str(value)) for label, value in rows if value not in (None, "")]


def _reply_kinds(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    seen = {k for g in groups for k in _dict(g.get("replies"))}
    return [k for k in REPLY_KINDS if k in seen] + sorted(seen - set(REPLY_KINDS))


def _finding(f: dict[str, Any], against: Mapping[Any, list[str]], anomalies: Mapping[Any, dict[str, Any]]) -> dict[str, Any]:
    reproducer = _dict(f.get("reproducer"))
    frames = [h for h in reproducer.get("frames_hex") or [] if isinstance(h, str)]
    confirmation = _dict(f.get("confirmation"))
    evidence = _dict(f.get("target_evidence"))
    head = evidence.get("report") or (f"signal {evidence['signal']}" if evidence.get("signal") else
                                      f"exit code {evidence['returncode']}" if evidence.get("returncode") is not None else "")
    return {
        "id": f.get("id", "?"), "severity": str(f.get("severity", "medium")), "title": f.get("title", ""),
        "behaviour": str(f.get("behaviour", f.get("class", ""))),
        "class": f.get("class", "?"), "key": f.get("key", ""), "request_type": f.get("request_type", ""),
        "request_types": [str(t) for t in f.get("request_types") or [] if t],
        "violated_rules": list(f.get("violated_rules") or []), "occurrences": f.get("occurrences", 0),
        "first_case_id": f.get("first_case_id"), "last_case_id": f.get("last_case_id"),
        "first_seen": f.get("first_seen") or "", "last_seen": f.get("last_seen") or "",
        "suppressed_cases": f.get("suppressed_cases", 0), "status": str(confirmation.get("status", "not tried")),
        "trials": confirmation.get("trials"), "minimised": reproducer.get("minimised"),
        "case_ids": reproducer.get("case_ids") or [], "frames": [hexdump(h) for h in frames],
        "frames_full": [_short_hex(h, limit=None) for h in frames], "frames_short": [_short_hex(h) for h in frames],
        "evidence": bool(evidence), "evidence_head": head, "evidence_excerpt": str(evidence.get("excerpt") or "")[-3000:],
        "known": bool(f.get("known")), "requirements": against.get(f.get("id"), []),
        "first": next((anomalies[i] for i in f.get("anomaly_ids") or [] if i in anomalies), None),
    }


def _anomaly(a: dict[str, Any]) -> dict[str, Any]:
    reproducer = _dict(a.get("reproducer"))
    frames = reproducer.get("frames_hex") or a.get("frames_hex") or []
    return {
        "id": a.get("id", "?"),
        "signature": a.get("signature"),
        "class": a.get("class", "?"),
        "group": a.get("group", "?"),
        "case_id": a.get("case_id", "?"),
        "detected_at": a.get("detected_at", ""),
        "description": a.get("description", ""),
        "reproducible": a.get("reproducible"),
        "minimised": reproducer.get("minimised"),
        "case_ids": reproducer.get("case_ids") or [],
        "frames": [hexdump(f) for f in frames if isinstance(f, str)],
        "frames_hex": [f for f in frames if isinstance(f, str)],
        "frames_full": [_short_hex(f, limit=None) for f in frames if isinstance(f, str)],
        "frames_short": [_short_hex(f) for f in frames if isinstance(f, str)],
        "reply_kind": a.get("reply_kind"),
        "reply_dump": hexdump(a.get("reply_hex")),
        "reply_text": ascii_text(a.get("reply_hex")),
        "details": {k: json.dumps(a[k], sort_keys=True, default=str, separators=(", ", ": "))
                    for k in ("timings", "confirmation", "target_exit") if a.get(k)},
        "probes": len(a.get("probes") or []),
        "finding_id": a.get("finding_id"),
        "confirmation": str(_dict(a.get("confirmation")).get("status", "")),
        "sent_full": [_short_hex(h, limit=None) for h in a.get("frames_hex") or [] if isinstance(h, str)],
        "sent_short": [_short_hex(h) for h in a.get("frames_hex") or [] if isinstance(h, str)],
    }


def _short_hex(hex_text: str, limit: int | None = 24) -> str:
    """Hex in groups of four bytes (lines can break between groups), cut after `limit` bytes."""
    end = len(hex_text) if limit is None else min(len(hex_text), 2 * limit)
    shown = " ".join(hex_text[i:i + 8] for i in range(0, end, 8))
    return shown if end == len(hex_text) else f"{shown} ... ({len(hex_text) // 2} bytes)"


def _charts(results: Mapping[str, Any], groups: Sequence[Mapping[str, Any]]) -> list[Any]:
    timeline = [_dict(s) for s in results.get("timeline") or []]
    probes = [_dict(p) for p in results.get("probes") or []]
    baseline = _dict(_dict(results.get("liveness")).get("baseline_ms")).get("median")
    cases = plots.line_chart(
        "Test cases over time", [Series("cases", [(_num(s.get("t")), _num(s.get("cases"))) for s in timeline], "#1565c0")],
        "seconds since start", "cases (cumulative)")
    found = plots.line_chart(
        "Anomalies over time",
        [Series("anomalies", [(_num(s.get("t")), _num(s.get("anomalies"))) for s in timeline], "#c62828")],
        "seconds since start", "anomalies (cumulative)")
    charts = [cases, found, latency_chart(probes, baseline), reply_classes_chart(groups)]
    corpus = [_dict(c) for c in _dict(results.get("search")).get("corpus_over_time") or []]
    if corpus:
        charts.append(plots.line_chart(
            "Feedback corpus over time",
            [Series("corpus entries", [(_num(c.get("t")), _num(c.get("size"))) for c in corpus], "#6a1b9a"),
             Series("values the target reported", [(_num(c.get("t")), _num(c.get("observed"))) for c in corpus], "#ef6c00")],
            "seconds since start", "entries (cumulative)"))
    return charts


def latency_chart(probes: Sequence[Mapping[str, Any]], baseline: Any = None) -> Markup:
    """Health-probe latency over time, failed probes as crosses (the report and the dashboard)."""
    ok = [(_num(p.get("t")), _num(p.get("latency_ms"))) for p in probes if p.get("ok") and p.get("latency_ms") is not None]
    peak = max((y for _, y in ok), default=1.0)
    failed = [(_num(p.get("t")), peak) for p in probes if not p.get("ok")]
    latency_series = [Series("probe latency (ms)", ok, "#2e7d32", style="points" if len(ok) < 3 else "line"),
                      Series("probe failed", failed, "#c62828", style="crosses")]
    if isinstance(baseline, (int, float)) and (ok or failed):
        span = [t for t, _ in ok + failed]
        latency_series.append(Series("baseline median", [(min(span), baseline), (max(span), baseline)], "#757575", dashed=True))
    return plots.line_chart("Health-probe latency over time", latency_series, "seconds since start", "latency (ms)")


def reply_classes_chart(groups: Sequence[Mapping[str, Any]]) -> Markup:
    """Reply classes per test group as shares of each group's cases (the report and the dashboard)."""
    return plots.stacked_bars(
        "Reply classes per test group",
        [(str(g.get("name", "?")), {str(k): int(v) for k, v in _dict(g.get("replies")).items() if isinstance(v, int)})
         for g in groups], REPLY_KINDS)


def _search(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """Pairwise coverage per request type (least covered first) and the feedback corpus."""
    search = _dict(results.get("search"))
    if not search:
        return None
    pairs = _dict(search.get("pairs"))
    rows = []
    for name, row in _dict(pairs.get("by_request_type")).items():
        row = _dict(row)
        total = int(row.get("total") or 0)
        if total:
            rows.append({"name": name, "covered": int(row.get("covered") or 0), "total": total,
                         "share": 100.0 * int(row.get("covered") or 0) / total})
    rows.sort(key=lambda r: (r["share"], r["name"]))
    total = int(pairs.get("total") or 0)
    return {"pairs_cases": int(pairs.get("cases") or 0), "covered": int(pairs.get("covered") or 0), "total": total,
            "share": 100.0 * int(pairs.get("covered") or 0) / total if total else None, "rows": rows,
            "corpus_size": int(search.get("corpus_size") or 0), "observed_values": int(search.get("observed_values") or 0)}


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
