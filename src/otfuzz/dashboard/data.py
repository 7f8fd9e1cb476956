"""What the dashboard shows, read from run folders without ever writing to them.

Every read opens the run's evidence store read-only (SQLite `file:` URI, `mode=ro`) for the time
of one snapshot and closes it again: a WAL reader never blocks the campaign's writes, and a
short read transaction never holds back its checkpoints. The numbers are those the reports
compute (the store's own aggregates, `results_from_store` for the verdict, the report's chart
functions), so the dashboard cannot disagree with the report written afterwards.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from otfuzz.errors import OtfuzzError
from otfuzz.report import plots
from otfuzz.report.html import latency_chart, reply_classes_chart
from otfuzz.report.reports import FILE_NAMES
from otfuzz.report.results import SEVERITIES
from otfuzz.store.evidence import STORE_NAME, EvidenceStore

RUN_DEPTH = 2  # RUNS_DIR/<run> and RUNS_DIR/<plan>/<entry> (run-plan folders)
STALLED_AFTER_S = 15.0  # a run recorded as running whose store was not written for this long
MAX_FINDINGS = 500  # rows sent per snapshot; the report has them all
MAX_FRAMES = 8  # reproducer frames shown per finding
MAX_FRAME_BYTES = 256
MAX_CHART_POINTS = 600
CHARTS = ("rate", "latency", "replies")


def find_runs(root: Path) -> list[Path]:
    """Run folders at or below `root` (two levels deep), in name order."""
    found = []
    if (root / STORE_NAME).is_file():
        found.append(root)
    level = [root]
    for _ in range(RUN_DEPTH):
        children = []
        for folder in level:
            try:
                children += sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue
        found += [p for p in children if (p / STORE_NAME).is_file()]
        level = children
    return found


def run_id(root: Path, run_dir: Path) -> str:
    """The run's name in URLs: its path below the runs folder ('.' for the folder itself)."""
    return run_dir.relative_to(root).as_posix() if run_dir != root else "."


def _last_write(run_dir: Path) -> float:
    """When the store (or its write-ahead log) was last written, as a Unix time."""
    times = []
    for name in (STORE_NAME, STORE_NAME + "-wal"):
        try:
            times.append((run_dir / name).stat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


def _status(meta: Mapping[str, Any], run_dir: Path) -> str:
    status = str(meta.get("status") or "running")
    if status == "running" and time.time() - _last_write(run_dir) > STALLED_AFTER_S:
        return "stalled"  # killed, or waiting for a target: nothing written for a while
    return status


def _cases(counts: Mapping[str, Mapping[str, int]]) -> int:
    return sum(sum(replies.values()) for replies in counts.values())


@dataclass
class RunsReader:
    """Reads the runs below one folder; caches verdicts of finished runs by the store's mtime."""

    root: Path
    _verdicts: dict[Path, tuple[float, str]] = field(default_factory=dict)

    def runs(self) -> list[Path]:
        return find_runs(self.root)

    def resolve(self, name: str) -> Path | None:
        """The run folder called `name` in URLs, only if it is one of the listed runs."""
        for run_dir in self.runs():
            if run_id(self.root, run_dir) == name:
                return run_dir
        return None

    def rows(self) -> list[dict[str, Any]]:
        """One row per run for the runs list."""
        return [self.row(run_dir) for run_dir in self.runs()]

    def row(self, run_dir: Path) -> dict[str, Any]:
        name = run_id(self.root, run_dir)
        try:
            store = EvidenceStore.open(run_dir, read_only=True)
        except OtfuzzError as exc:
            return {"id": name, "status": "unreadable", "error": str(exc), "target": "", "protocol": "", "kind": "",
                    "cases": 0, "findings": 0, "findings_by_severity": {}, "verdict": ""}
        try:
            return self._row(store, run_dir, name)
        except sqlite3.Error as exc:
            return {"id": name, "status": "unreadable", "error": str(exc), "target": "", "protocol": "", "kind": "",
                    "cases": 0, "findings": 0, "findings_by_severity": {}, "verdict": ""}
        finally:
            store.close()

    def _row(self, store: EvidenceStore, run_dir: Path, name: str) -> dict[str, Any]:
        meta = store.get_meta("campaign") or {}
        target = store.get_meta("target") or {}
        severities = store.finding_severities()
        status = _status(meta, run_dir)
        return {
            "id": name, "status": status, "kind": str(meta.get("kind") or ""),
            "target": str(target.get("url") or meta.get("config", {}).get("target") or ""),
            "protocol": str(target.get("protocol") or ""), "cases": _cases(store.counts()),
            "findings": sum(severities.values()), "findings_by_severity": {s: severities.get(s, 0) for s in SEVERITIES},
            "started_at": str(meta.get("started_at") or ""),
            "verdict": "pending" if status in ("running", "stalled") else self._verdict(store, run_dir),
        }

    def _verdict(self, store: EvidenceStore, run_dir: Path) -> str:
        """The compliance verdict the report would state (pass, fail, partial...), once per version."""
        written = _last_write(run_dir)
        cached = self._verdicts.get(run_dir)
        if cached is not None and cached[0] == written:
            return cached[1]
        from otfuzz.compliance.evidence import build_evidence
        from otfuzz.report.results import results_from_store

        try:
            verdict = str(build_evidence(results_from_store(store))["summary"]["overall"])
        except (OtfuzzError, KeyError, ValueError):
            verdict = "not evaluated"
        self._verdicts[run_dir] = (written, verdict)
        return verdict

    def snapshot(self, run_dir: Path) -> dict[str, Any]:
        """Everything the run page shows that changes while the run goes on, JSON-ready."""
        row = self.row(run_dir)
        if row["status"] == "unreadable":
            return row
        store = EvidenceStore.open(run_dir, read_only=True)
        try:
            meta = store.get_meta("campaign") or {}
            target = store.get_meta("target") or {}
            next_case, elapsed = store.progress()
            tail = store.timeline_tail(12)
            probes = store.probes_tail(1)
            findings = store.findings()
            anomalies = sum(store.anomaly_classes().values())
            duration = (meta.get("config") or {}).get("duration")
        finally:
            store.close()
        order = {s: n for n, s in enumerate(SEVERITIES)}
        findings.sort(key=lambda f: (order.get(str(f.get("severity")), 9), f["id"]))
        last_probe = probes[-1] if probes else None
        return {
            **row,
            "elapsed_s": round(float(elapsed), 1),
            "duration_s": duration,
            "rate": round(_recent_rate(tail) if row["status"] == "running" else row["cases"] / max(float(elapsed), 1e-9), 1),
            "anomalies": anomalies,
            "health": "unknown" if last_probe is None else ("ok" if last_probe["ok"] else str(last_probe["reason"])),
            "probe_ms": None if last_probe is None else last_probe["latency_ms"],
            "identity": {str(k): str(v) for k, v in sorted((target.get("identity") or {}).items())},
            "stop_reason": str(meta.get("stop_reason") or ""),
            "findings_list": [_finding_row(f) for f in findings[:MAX_FINDINGS]],
            "findings_shown": min(len(findings), MAX_FINDINGS),
            "charts_version": f"{next_case}-{len(tail) and tail[-1]['t']}-{anomalies}",
            "reports": reports_of(run_dir),
        }

    def chart(self, run_dir: Path, name: str) -> Markup:
        """One of CHARTS as a standalone SVG document, from the same store data the report uses."""
        store = EvidenceStore.open(run_dir, read_only=True)
        try:
            if name == "rate":
                return rate_chart(store.timeline())
            if name == "latency":
                liveness = store.get_meta("liveness") or {}
                return latency_chart(_thin(store.probes()), (liveness.get("baseline_ms") or {}).get("median"))
            groups = [{"name": g, "replies": replies} for g, replies in store.counts().items()]
            return reply_classes_chart(groups)
        finally:
            store.close()


def _recent_rate(tail: Sequence[Mapping[str, Any]]) -> float:
    """Cases per second over the last few timeline samples (about five seconds)."""
    if len(tail) < 2:
        return 0.0
    first, last = tail[0], tail[-1]
    span = float(last["t"]) - float(first["t"])
    return max(0.0, (int(last["cases"]) - int(first["cases"])) / span) if span > 0 else 0.0


def _thin(points: list[dict[str, Any]], limit: int = MAX_CHART_POINTS) -> list[dict[str, Any]]:
    """At most `limit` evenly spaced points, always keeping the last (a browser draws it live)."""
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]


def rate_chart(timeline: Sequence[Mapping[str, Any]]) -> Markup:
    """Cases per second over time, from the store's once-a-second cumulative case counts."""
    points = []
    samples = _thin(list(timeline), MAX_CHART_POINTS + 1)
    for before, after in zip(samples, samples[1:]):
        span = float(after["t"]) - float(before["t"])
        if span > 0:
            points.append((float(after["t"]), max(0.0, (int(after["cases"]) - int(before["cases"])) / span)))
    points = [p for p in points if all(math.isfinite(v) for v in p)]
    return plots.line_chart("Test cases per second", [plots.Series("cases/s", points, "#1565c0")],
                            "seconds since start", "cases per second")


def _finding_row(f: Mapping[str, Any]) -> dict[str, Any]:
    reproducer = f.get("reproducer") or {}
    frames = [h for h in reproducer.get("frames_hex") or [] if isinstance(h, str)]
    return {
        "id": f["id"], "severity": str(f.get("severity") or "medium"), "class": str(f.get("class") or ""),
        "title": str(f.get("title") or ""), "occurrences": int(f.get("occurrences") or 0),
        "status": str((f.get("confirmation") or {}).get("status") or "pending"),
        "case_ids": [int(c) for c in (reproducer.get("case_ids") or [])[:MAX_FRAMES]],
        "frames_hex": [h[:2 * MAX_FRAME_BYTES] + ("..." if len(h) > 2 * MAX_FRAME_BYTES else "") for h in frames[:MAX_FRAMES]],
        "more_frames": max(0, len(frames) - MAX_FRAMES),
        "minimised": bool(reproducer.get("minimised")),
    }


def reports_of(run_dir: Path) -> list[str]:
    """The report files a run folder holds (written by otfuzz report into RUN/reports)."""
    folder = run_dir / "reports"
    return [name for name in FILE_NAMES.values() if (folder / name).is_file()]
