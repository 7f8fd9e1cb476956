"""Baselines of known findings, and findings merged across runs.

A vendor's CI runs the same campaign on every build. The first run's findings are accepted (or
ticketed) once: `otfuzz findings RUN --save-baseline known.yaml` writes their keys with a note
each, and later runs and reports given `--baseline known.yaml` mark those findings known, so
the exit status and the JUnit report fail only on findings that are new. Keys are compared
with every alias a finding has (the keys its occurrences had before minimisation), so a known
defect reached through another input is still known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otfuzz.engine.findings import KEY_FORMAT, SEVERITY_ORDER
from otfuzz.errors import OtfuzzError

BASELINE_VERSION = 1


@dataclass(frozen=True)
class Baseline:
    """The keys a baseline names, with the note each one carries."""

    path: Path
    notes: Mapping[str, str] = field(default_factory=dict)

    def knows(self, finding: Mapping[str, Any]) -> bool:
        return any(key in self.notes for key in keys_of(finding))

    def note(self, finding: Mapping[str, Any]) -> str:
        return next((self.notes[k] for k in keys_of(finding) if k in self.notes), "")


def keys_of(finding: Mapping[str, Any]) -> list[str]:
    """A finding's key first, then its aliases."""
    keys = [str(finding.get("key", ""))]
    keys += [str(a) for a in finding.get("aliases") or [] if str(a) not in keys]
    return [k for k in keys if k]


def load_baseline(path: Path) -> Baseline:
    """Read a baseline; anything that does not parse is one line naming the problem."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise OtfuzzError(f"cannot read baseline {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise OtfuzzError(f"baseline {path} is not valid YAML{at}") from None
    if not isinstance(data, Mapping) or "findings" not in data:
        raise OtfuzzError(f"baseline {path} is not an otfuzz baseline (write one with: otfuzz findings RUN --save-baseline {path})")
    version, key_format = data.get("otfuzz_baseline"), data.get("key_format")
    if version != BASELINE_VERSION:
        raise OtfuzzError(f"baseline {path}: unknown baseline version {version!r} (this otfuzz reads version {BASELINE_VERSION})")
    if key_format != KEY_FORMAT:
        raise OtfuzzError(f"baseline {path}: unknown key format version {key_format!r} (this otfuzz writes and reads {KEY_FORMAT}); "
                          "save a new baseline with this version")
    items = data["findings"] or []
    if not isinstance(items, list):
        raise OtfuzzError(f"baseline {path}: 'findings' must be a list")
    notes: dict[str, str] = {}
    for n, item in enumerate(items, start=1):
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str) or not item["key"]:
            raise OtfuzzError(f"baseline {path}: finding {n} has no key")
        notes[item["key"]] = str(item.get("note") or "")
        for alias in item.get("aliases") or []:
            notes.setdefault(str(alias), str(item.get("note") or ""))
    return Baseline(Path(path), notes)


def save_baseline(findings: Sequence[Mapping[str, Any]], path: Path, source: str = "",
                  previous: Baseline | None = None) -> Path:
    """Write the findings' keys (and aliases) with an empty note each, keeping notes already given."""
    doc = {
        "otfuzz_baseline": BASELINE_VERSION,
        "key_format": KEY_FORMAT,
        "source": source,
        "findings": [{
            "key": f["key"], "aliases": [a for a in keys_of(f)[1:]], "class": f.get("class"), "severity": f.get("severity"),
            "title": f.get("title"), "note": previous.note(f) if previous is not None else "",
        } for f in findings],
    }
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    except OSError as exc:
        raise OtfuzzError(f"cannot write baseline {path}: {exc.strerror}") from None
    return Path(path)


def mark_known(findings: Iterable[dict[str, Any]], baseline: Baseline | None) -> list[dict[str, Any]]:
    """Set `known` (and the baseline's note) on each finding; returns the new ones."""
    new = []
    for finding in findings:
        finding["known"] = baseline is not None and baseline.knows(finding)
        if finding["known"]:
            finding["known_note"] = baseline.note(finding) if baseline is not None else ""
        else:
            new.append(finding)
    return new


def gating(findings: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """New findings that should fail a CI build: not known, and not refuted by replay."""
    return [f for f in findings if not f.get("known")
            and (f.get("confirmation") or {}).get("status") != "not reproduced"]


def merge_runs(runs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per distinct defect over several runs of the same target, matched by key or alias."""
    merged: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for run, findings in runs:
        for f in findings:
            keys = keys_of(f)
            slot = next((index[k] for k in keys if k in index), None)
            if slot is None:
                slot = len(merged)
                merged.append({"key": f["key"], "class": f.get("class"), "severity": f.get("severity"), "title": f.get("title"),
                               "behaviour": f.get("behaviour"),
                               "occurrences": 0, "runs": [], "known": False, "aliases": []})
            row = merged[slot]
            row["occurrences"] += int(f.get("occurrences") or 0)
            row["runs"].append({"run": run, "id": f.get("id"), "occurrences": f.get("occurrences"),
                                "status": (f.get("confirmation") or {}).get("status")})
            row["known"] = row["known"] or bool(f.get("known"))
            for key in keys:
                index.setdefault(key, slot)
                if key != row["key"] and key not in row["aliases"]:
                    row["aliases"].append(key)
    order = {s: n for n, s in enumerate(SEVERITY_ORDER)}
    merged.sort(key=lambda r: (order.get(str(r["severity"]), 9), r["key"]))
    return merged
