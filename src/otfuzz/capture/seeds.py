"""The seed file: what a capture showed each server endpoint being asked, for fuzzing from it.

Per server endpoint (protocol, address, port): the request types seen with their real field
values and how often, and the observed sessions (each connection's requests in order, with the
replies). Unknown flows and messages no declared request type decodes are counted and listed.
The file is JSON; its `sha256` is the hash of its canonical content without that field, so a
campaign can record which seeds made its cases and refuse a file edited since.

`captured_seeds` turns a seed file back into what the case generator takes, through the target's
own protocol module: frames normalised the way its sessions expect, templates with the values
as seen, and session prefixes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otfuzz.capture.flows import Flow, build_flows, endpoint_text
from otfuzz.capture.pcap import CaptureError, ReadStats, read_packets
from otfuzz.capture.recognise import Recognised, known_ports, recognise
from otfuzz.errors import OtfuzzError
from otfuzz.protocols.base import Protocol, Template

FORMAT = "otfuzz-seeds"
VERSION = 1
MAX_LISTED = 200
"""Unparsed messages and unknown flows listed per seed file (all are counted)."""
MAX_SESSION_STEPS = 64


def content_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `document` without its own `sha256` field."""
    body = {k: v for k, v in document.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


@dataclass
class CaptureReading:
    """A capture read whole: its flows, what recognised each, and the reader's counts."""

    path: Path
    sha256: str
    stats: ReadStats
    flows: list[Flow]
    recognised: list[Recognised | None]


def read_capture(path: Path) -> CaptureReading:
    """Read, reassemble and recognise every flow of the capture at `path` (CaptureError if it cannot be read)."""
    path = Path(path)
    stats = ReadStats()
    flows = build_flows(read_packets(path, stats), known_ports())
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:  # pragma: no cover - read_packets opened it already
        raise CaptureError(f"cannot read capture {path}: {exc.strerror}") from None
    return CaptureReading(path, digest, stats, flows, [recognise(f) for f in flows])


def _pair(found: Recognised, flow: Flow) -> list[dict[str, Any]]:
    """Requests of one connection in order, each with the first reply that came after it and
    before the next request (replies are matched by time, as the protocol's peers exchange them)."""
    steps: list[dict[str, Any]] = []
    replies = sorted(found.replies, key=lambda m: m.ts)
    at = 0
    requests = found.requests
    for i, request in enumerate(requests):
        next_ts = requests[i + 1].ts if i + 1 < len(requests) else float("inf")
        while at < len(replies) and replies[at].ts < request.ts:
            at += 1
        reply = None
        if at < len(replies) and replies[at].ts <= next_ts:
            reply = replies[at].raw
            at += 1
        template = found.templates.get(request.raw)
        steps.append({
            "request": request.raw.hex(),
            "type": template.name if template is not None else None,
            "control": request.raw in found.control,
            "reply": reply.hex() if reply is not None else None,
        })
    return steps


def build_seeds(reading: CaptureReading) -> dict[str, Any]:
    """The seed document for a capture read whole."""
    endpoints: dict[tuple[str, str, str], dict[str, Any]] = {}
    unknown: list[dict[str, Any]] = []
    counts = {"packets": reading.stats.packets, "flows": len(reading.flows), "recognised_flows": 0, "unknown_flows": 0,
              "requests": 0, "replies": 0, "unparsed_requests": 0, "unframed_bytes": 0, "retransmitted_segments": 0,
              "out_of_order_segments": 0, "overlapping_segments": 0, "conflicting_overlaps": 0, "unread_bytes": 0,
              "skipped_packets": dict(sorted(reading.stats.skipped.items()))}
    for flow, found in zip(reading.flows, reading.recognised):
        for stream in (flow.to_server, flow.to_client):
            counts["retransmitted_segments"] += stream.stats.retransmitted
            counts["out_of_order_segments"] += stream.stats.out_of_order
            counts["overlapping_segments"] += stream.stats.overlapping
            counts["conflicting_overlaps"] += stream.stats.conflicting
            counts["unread_bytes"] += stream.stats.unread
        if found is None:
            counts["unknown_flows"] += 1
            if flow.bytes_seen() and len(unknown) < MAX_LISTED:
                unknown.append({"transport": flow.transport, "client": endpoint_text(flow.client), "server": endpoint_text(flow.server),
                                "first_packet": flow.first_packet, "packets": flow.packets, "bytes": flow.bytes_seen(),
                                "reason": "no supported protocol frames and recognises its requests"})
            continue
        counts["recognised_flows"] += 1
        key = (found.scheme, flow.transport, endpoint_text(flow.server))
        entry = endpoints.setdefault(key, {"protocol": found.scheme, "transport": flow.transport, "server": key[2],
                                           "clients": [], "requests": [], "sessions": [], "unparsed": [],
                                           "counts": {"requests": 0, "replies": 0, "unparsed": 0}})
        client = endpoint_text(flow.client)
        if client not in entry["clients"]:
            entry["clients"].append(client)
        by_frame = {r["frame"]: r for r in entry["requests"]}
        for request in found.requests:
            if request.raw in found.control:
                continue
            template = found.templates.get(request.raw)
            if template is None:
                entry["counts"]["unparsed"] += 1
                counts["unparsed_requests"] += 1
                if len(entry["unparsed"]) < MAX_LISTED:
                    entry["unparsed"].append({"frame": request.raw[:256].hex(), "length": len(request.raw),
                                              "reason": "; ".join(found.protocol.check_request(request.raw)[:2])
                                              or "no declared request type decodes it exactly"})
                continue
            frame = found.protocol.normalise_request(request.raw).hex()
            seen = by_frame.get(frame)
            if seen is None:
                seen = by_frame[frame] = {"type": template.name, "code": template.code, "writes": template.writes,
                                          "frame": frame, "count": 0,
                                          "values": {k: _plain(v) for k, v in template.values.items()}}
                entry["requests"].append(seen)
            seen["count"] += 1
        entry["sessions"].append({"client": client, "first_packet": flow.first_packet,
                                  "steps": _pair(found, flow)[:MAX_SESSION_STEPS]})
        entry["counts"]["requests"] += len(found.requests)
        entry["counts"]["replies"] += len(found.replies)
        counts["requests"] += len(found.requests)
        counts["replies"] += len(found.replies)
        counts["unframed_bytes"] += sum(found.unframed.values())
    document: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "capture": {"file": reading.path.name, "sha256": reading.sha256, "link_type": reading.stats.link_type},
        "counts": counts,
        "endpoints": list(endpoints.values()),
        "unknown_flows": unknown,
    }
    document["sha256"] = content_hash(document)
    return document


def import_capture(path: Path, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Read a capture and write its seed file into `out_dir` (created); CaptureError when no
    flow speaks a supported protocol."""
    reading = read_capture(path)
    document = build_seeds(reading)
    if not document["endpoints"]:
        flows = document["counts"]["flows"]
        raise CaptureError(f"capture {path}: no supported protocol recognised in its {flows} flow(s) "
                           "(otfuzz protocols lists what is supported)")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{Path(path).stem}.seeds.json"
        target.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    except OSError as exc:
        raise OtfuzzError(f"cannot write seeds into {out_dir}: {exc.strerror}") from None
    return target, document


def load_seed_file(path: Path) -> tuple[dict[str, Any], str]:
    """A seed file and its content hash; OtfuzzError naming the problem when it is not one."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise OtfuzzError(f"cannot read seed file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtfuzzError(f"seed file {path} is not JSON ({exc}); make one with: otfuzz capture import CAPTURE --out DIR") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("endpoints"), list):
        raise OtfuzzError(f"{path} is not an otfuzz seed file (make one with: otfuzz capture import CAPTURE --out DIR)")
    if document.get("version") != VERSION:
        raise OtfuzzError(f"seed file {path}: version {document.get('version')!r} is not supported (this otfuzz reads {VERSION})")
    digest = content_hash(document)
    if document.get("sha256") not in (None, digest):
        raise OtfuzzError(f"seed file {path} was changed after import (its sha256 does not match its content); "
                          "import the capture again, or delete the sha256 line to accept the edit")
    return document, digest


@dataclass(frozen=True)
class CapturedSeeds:
    """What the case generator takes from a seed file, for one target's protocol module."""

    file: str
    sha256: str
    requests: tuple[bytes, ...]  # distinct captured requests, normalised, in the order first seen
    templates: tuple[Template, ...]  # the same requests as templates with their values as seen
    sessions: tuple[tuple[bytes, ...], ...]  # each observed connection's requests, in order


def _endpoints_for(document: Mapping[str, Any], scheme: str, port: int | None) -> list[Mapping[str, Any]]:
    mine = [e for e in document["endpoints"] if isinstance(e, dict) and e.get("protocol") == scheme]
    same_port = [e for e in mine if str(e.get("server", "")).rpartition(":")[2] == str(port)]
    return same_port or mine


def captured_seeds(protocol: Protocol, scheme: str, port: int | None, path: Path, sha256: str | None = None,
                   document: Mapping[str, Any] | None = None) -> CapturedSeeds:
    """The seeds a seed file holds for a target of `scheme` on `port` (its endpoints on that
    port, else every endpoint of that protocol). With `sha256`, the file must still hash to it,
    so a resumed or replayed campaign regenerates the same cases or refuses to run."""
    if document is None:
        document, digest = load_seed_file(path)
    else:
        digest = content_hash(document)
    if sha256 is not None and digest != sha256:
        raise OtfuzzError(f"seed file {path} changed since the run started (sha256 {digest[:12]}..., the run used "
                          f"{sha256[:12]}...): restore it to replay or resume this run")
    endpoints = _endpoints_for(document, scheme, port)
    if not endpoints:
        have = sorted({str(e.get("protocol")) for e in document["endpoints"] if isinstance(e, dict)})
        raise OtfuzzError(f"seed file {path} has no {scheme} endpoint (it has: {', '.join(have) or 'none'})")
    requests: dict[bytes, Template] = {}
    sessions: list[tuple[bytes, ...]] = []
    try:
        for entry in endpoints:
            for item in entry.get("requests", []):
                frame = protocol.normalise_request(bytes.fromhex(item["frame"]))
                template = protocol.from_capture(frame)
                if template is not None and frame not in requests:
                    requests[frame] = template
            for session in entry.get("sessions", []):
                steps = [protocol.normalise_request(bytes.fromhex(s["request"])) for s in session.get("steps", [])
                         if not s.get("control")]
                steps = [s for s in steps if s in requests]
                if steps:
                    sessions.append(tuple(steps))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OtfuzzError(f"seed file {path} is damaged ({exc!r}); import the capture again") from None
    if not requests:
        raise OtfuzzError(f"seed file {path}: none of its {scheme} requests decodes as a {protocol.name} request type")
    return CapturedSeeds(str(path), digest, tuple(requests), tuple(requests.values()), tuple(sessions))


def seed_summary(seeds: CapturedSeeds) -> dict[str, Any]:
    """For the evidence store and reports: which seeds, and how much of them."""
    return {"file": seeds.file, "sha256": seeds.sha256, "requests": len(seeds.requests), "sessions": len(seeds.sessions),
            "request_types": sorted({t.name for t in seeds.templates})}


def describe_import(document: Mapping[str, Any], written: Path) -> list[str]:
    """Lines `otfuzz capture import` prints: per endpoint what was learned, then what was not read."""
    counts = document["counts"]
    lines = [f"{counts['packets']} packets, {counts['flows']} flows ({counts['recognised_flows']} recognised, "
             f"{counts['unknown_flows']} unknown); {counts['retransmitted_segments']} retransmitted, "
             f"{counts['out_of_order_segments']} out-of-order, {counts['overlapping_segments']} overlapping segments"]
    for e in document["endpoints"]:
        types = sorted({r["type"] for r in e["requests"]})
        lines.append(f"  {e['protocol']} {e['server']}: {len(e['requests'])} distinct requests of {len(types)} types "
                     f"({', '.join(types[:6])}{', ...' if len(types) > 6 else ''}), {len(e['sessions'])} sessions, "
                     f"{e['counts']['unparsed']} unparsed")
    for u in document["unknown_flows"][:10]:
        lines.append(f"  unknown: {u['transport']} {u['client']} -> {u['server']} ({u['bytes']} bytes)")
    if counts["unparsed_requests"] or counts["unknown_flows"] or counts["unread_bytes"] or counts["skipped_packets"]:
        skipped = ", ".join(f"{n} {why}" for why, n in counts["skipped_packets"].items())
        lines.append(f"not read: {counts['unparsed_requests']} unparsed requests, {counts['unknown_flows']} unknown flows, "
                     f"{counts['unread_bytes']} bytes after holes" + (f"; packets skipped: {skipped}" if skipped else ""))
    lines.append(f"seeds written to {written} (sha256 {document['sha256']})")
    return lines

