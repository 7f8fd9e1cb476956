"""Passive conduit audit: every captured industrial flow against the system model's conduits.

Each flow's client and server are mapped to assets by the model's addresses (a server reached
through a conduit's published endpoint, `via`, is that channel's server), and so to zones. A
flow between two zones must travel on a conduit channel of its protocol to its server, and each
operation in it (Modbus function codes, DNP3 functions, IEC 104 type ids, OPC UA services) must
be on the channel's policy. A flow is flagged when no channel of that zone pair carries its
protocol, or the channel is for another server (SR 5.1, network segmentation), or it carries an
operation the policy does not allow, or an address the model does not know (SR 5.2, zone
boundary protection). A passive audit can show a conduit leaks, never that it holds: its
findings feed `otfuzz gap` as failures only.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from otfuzz.capture.flows import endpoint_text
from otfuzz.capture.seeds import CaptureReading, read_capture
from otfuzz.compliance.gap import AUDIT_FILE
from otfuzz.compliance.system import Channel, Conduit, SystemModel, load_system
from otfuzz.errors import OtfuzzError

SEGMENTATION, BOUNDARY = "SR 5.1", "SR 5.2"


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def _operation(found: Any, raw: bytes) -> tuple[str, int | None, bool, bool]:
    template = found.templates.get(raw)
    if template is None:
        return f"unparsed ({found.protocol.describe(raw)[:40]})", None, True, False
    return template.name, template.code, template.writes, template.disruptive


def _channel_for(model: SystemModel, scheme: str, client_zone: str | None,
                 server: tuple[str, int]) -> tuple[list[tuple[Conduit, Channel]], tuple[Conduit, Channel] | None]:
    """Channels of this protocol from the client's zone, and the one whose endpoint is `server`."""
    host, port = _normal(server[0]), server[1]
    candidates = [(c, ch) for c, ch in model.channels() if ch.protocol == scheme and ch.from_zone == client_zone]
    for conduit, channel in candidates:
        ends = {(_normal(channel.via[0]), channel.via[1]), (_normal(channel.direct[0]), channel.direct[1])}
        if (host, port) in ends:
            return candidates, (conduit, channel)
    return candidates, None


def audit_capture(reading: CaptureReading, model: SystemModel) -> dict[str, Any]:
    """The audit document of one capture against one system model."""
    assets = {_normal(a.address): a for a in model.assets}
    zone_of = {a.name: model.zone_of(a.name).name for a in model.assets if any(a.name in z.assets for z in model.zones)}
    flows: list[dict[str, Any]] = []
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for flow, found in zip(reading.flows, reading.recognised):
        if found is None:
            continue
        client_asset = assets.get(_normal(flow.client[0]))
        server_asset = assets.get(_normal(flow.server[0]))
        client_zone = zone_of.get(client_asset.name) if client_asset else None
        candidates, hit = _channel_for(model, found.scheme, client_zone, flow.server)
        if hit is not None:
            server_asset = model.asset(hit[1].server)
        server_zone = zone_of.get(server_asset.name) if server_asset else None
        ops: Counter[str] = Counter()
        denied: Counter[str] = Counter()
        policy = hit[1].policy if hit else None
        for request in found.requests:
            if request.raw in found.control:
                continue
            name, code, writes, disruptive = _operation(found, request.raw)
            label = name if code is None else f"{name} ({code})"
            ops[label] += 1
            if policy is not None and not policy.allows(name, code, writes, disruptive):
                denied[label] += 1
        problems: list[tuple[str, str]] = []
        if client_asset is None:
            problems.append((BOUNDARY, f"client {flow.client[0]} is no asset of the model"))
        if server_asset is None:
            problems.append((BOUNDARY, f"server {endpoint_text(flow.server)} is no asset of the model nor a conduit endpoint"))
        if client_zone and server_zone and client_zone != server_zone:
            if hit is None:
                same_pair = [ch for _, ch in candidates if ch.to_zone == server_zone]
                if same_pair:
                    problems.append((SEGMENTATION, f"wrong server: the {found.scheme} channels from {client_zone} to {server_zone} "
                                     f"lead to {', '.join(sorted({ch.server for ch in same_pair}))}, not {server_asset.name}"))
                else:
                    problems.append((SEGMENTATION, f"no conduit channel carries {found.scheme} from {client_zone} to {server_zone}"))
            elif denied:
                problems.append((BOUNDARY, f"operation not allowed by channel {hit[0].name}/{hit[1].name}: "
                                 + ", ".join(f"{op} x{n}" for op, n in sorted(denied.items()))))
        record = {
            "protocol": found.scheme, "transport": flow.transport, "first_packet": flow.first_packet, "packets": flow.packets,
            "client": endpoint_text(flow.client), "server": endpoint_text(flow.server),
            "client_asset": client_asset.name if client_asset else None, "server_asset": server_asset.name if server_asset else None,
            "from_zone": client_zone, "to_zone": server_zone,
            "channel": f"{hit[0].name}/{hit[1].name}" if hit else None,
            "operations": dict(sorted(ops.items())),
            "flagged": bool(problems), "requirements": sorted({r for r, _ in problems}), "problems": [p for _, p in problems],
        }
        flows.append(record)
        pair = pairs.setdefault((client_zone or "(outside the model)", server_zone or "(outside the model)"),
                                {"from": client_zone or "(outside the model)", "to": server_zone or "(outside the model)",
                                 "flows": 0, "flagged": 0, "operations": Counter()})
        pair["flows"] += 1
        pair["flagged"] += int(bool(problems))
        pair["operations"].update({f"{found.scheme} {op}": n for op, n in ops.items()})
    verdicts = []
    for zone in model.zones:
        into = [f for f in flows if f["to_zone"] == zone.name or (f["to_zone"] is None and f["from_zone"] == zone.name)]
        for requirement in (SEGMENTATION, BOUNDARY):
            bad = [f for f in into if requirement in f["requirements"]]
            if bad:
                verdicts.append({"zone": zone.name, "requirement": requirement, "verdict": "fail",
                                 "reason": f"passive audit of {reading.path.name}: {len(bad)} of {len(into)} captured flows "
                                           f"into {zone.name} break the conduit model ({bad[0]['problems'][0]})"})
            elif into:
                verdicts.append({"zone": zone.name, "requirement": requirement, "verdict": "no-violation-seen",
                                 "reason": f"passive audit of {reading.path.name}: {len(into)} captured flows into {zone.name}, "
                                           "none outside the conduit model (observation only, not a test)"})
    unknown = sum(1 for found in reading.recognised if found is None)
    return {
        "schema_version": 1,
        "kind": "capture-audit",
        "capture": {"file": str(reading.path), "sha256": reading.sha256, "packets": reading.stats.packets,
                    "flows": len(reading.flows), "industrial_flows": len(flows), "unknown_flows": unknown},
        "system": {"name": model.name, "file": model.path, "sha256": model.sha256},
        "summary": {"flows": len(flows), "flagged": sum(1 for f in flows if f["flagged"])},
        "zone_pairs": [{**p, "operations": dict(sorted(p["operations"].items()))} for p in pairs.values()],
        "flows": flows,
        "verdicts": verdicts,
    }


def format_audit(document: Mapping[str, Any]) -> str:
    """The stdout table: one line per flow, flagged ones marked, then the zone-pair summary."""
    rows = [("", "protocol", "client", "server", "zones", "channel", "operations")]
    for f in document["flows"]:
        zones = f"{f['from_zone'] or '?'} -> {f['to_zone'] or '?'}"
        ops = ", ".join(f"{k} x{v}" for k, v in f["operations"].items())
        rows.append(("FLAG" if f["flagged"] else "ok", f["protocol"], f["client"], f["server"], zones, f["channel"] or "-", ops[:70]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths)) + "  " + str(r[-1]) for r in rows]
    for f in document["flows"]:
        for problem in f["problems"]:
            lines.append(f"FLAG {f['client']} -> {f['server']}: {problem} ({', '.join(f['requirements'])})")
    s = document["summary"]
    lines.append(f"{s['flows']} industrial flows, {s['flagged']} flagged; {document['capture']['unknown_flows']} flows of no supported protocol")
    return "\n".join(lines)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Conduit audit: {{ doc.capture.file }}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:3px 6px;text-align:left}
tr.flag{background:#fdd}</style></head><body>
<h1>Passive conduit audit</h1>
<p>Capture <code>{{ doc.capture.file }}</code> (SHA-256 {{ doc.capture.sha256 }}), {{ doc.capture.packets }} packets;
system <code>{{ doc.system.name }}</code> ({{ doc.system.file }}, SHA-256 {{ doc.system.sha256 }}).
{{ doc.summary.flows }} industrial flows, {{ doc.summary.flagged }} flagged.</p>
<h2>Zone pairs</h2><table><tr><th>from</th><th>to</th><th>flows</th><th>flagged</th><th>operations</th></tr>
{% for p in doc.zone_pairs %}<tr><td>{{ p.from }}</td><td>{{ p.to }}</td><td>{{ p.flows }}</td><td>{{ p.flagged }}</td>
<td>{% for op, n in p.operations.items() %}{{ op }} &times;{{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
{% endfor %}</table>
<h2>Flows</h2><table><tr><th>verdict</th><th>protocol</th><th>client</th><th>server</th><th>zones</th><th>channel</th><th>operations</th><th>problems</th></tr>
{% for f in doc.flows %}<tr class="{{ 'flag' if f.flagged else 'ok' }}"><td>{{ 'flagged' if f.flagged else 'allowed' }}</td>
<td>{{ f.protocol }}</td><td>{{ f.client }} ({{ f.client_asset or '?' }})</td><td>{{ f.server }} ({{ f.server_asset or '?' }})</td>
<td>{{ f.from_zone or '?' }} &rarr; {{ f.to_zone or '?' }}</td><td>{{ f.channel or '-' }}</td>
<td>{% for op, n in f.operations.items() %}{{ op }} &times;{{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
<td>{% for p in f.problems %}{{ p }}{% if not loop.last %}; {% endif %}{% endfor %} {{ f.requirements | join(', ') }}</td></tr>
{% endfor %}</table>
<h2>IEC 62443-3-3</h2><table><tr><th>zone</th><th>requirement</th><th>verdict</th><th>reason</th></tr>
{% for v in doc.verdicts %}<tr><td>{{ v.zone }}</td><td>{{ v.requirement }}</td><td>{{ v.verdict }}</td><td>{{ v.reason }}</td></tr>
{% endfor %}</table></body></html>
"""


def render_audit_html(document: Mapping[str, Any]) -> str:
    """HTML with Jinja2 autoescape, as the reports: captured bytes and names are never markup."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_HTML).render(doc=document)


def run_audit(capture: Path, model_path: Path, out: Path | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Audit `capture` against the system file `model_path`; write audit.json and audit.html into `out`."""
    model = load_system(model_path)  # a model that does not check stops here (SystemModelError)
    document = audit_capture(read_capture(capture), model)
    if not document["flows"]:
        raise OtfuzzError(f"capture {capture}: no supported protocol recognised in its {document['capture']['flows']} flow(s); "
                          "nothing to audit")
    written: list[Path] = []
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / AUDIT_FILE).write_text(json.dumps(document, indent=1) + "\n")
            (out / "audit.html").write_text(render_audit_html(document))
        except OSError as exc:
            raise OtfuzzError(f"cannot write the audit into {out}: {exc.strerror}") from None
        written = [out / AUDIT_FILE, out / "audit.html"]
    return document, written
