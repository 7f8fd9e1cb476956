"""The system view as reports: the SL gap per zone (from `otfuzz gap`) as JSON, HTML and PDF.

The gap spans several runs, so it is a report of its own rather than a section of one run's;
it uses the same escaping (Jinja2 autoescape), the same no-fetch policy and the same PDF engine
as the campaign report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import escape

from otfuzz import __version__
from otfuzz.compliance.system import FR_NAMES
from otfuzz.errors import OtfuzzError
from otfuzz.report.pdf import html_to_pdf

GAP_FORMATS = ("json", "html", "pdf")


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("otfuzz.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def render_gap_html(section: Mapping[str, Any]) -> str:
    """The system report: a page of its own."""
    return _env().get_template("gap.html.j2").render(
        s=section, version=__version__, fr_names=FR_NAMES,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def gap_fragment(results: Mapping[str, Any]) -> str:
    """The system view as a section of a run's HTML/PDF report (results key "system_gap")."""
    section = results["system_gap"]
    body = _env().get_template("gap_section.html.j2").render(s=section, fr_names=FR_NAMES)
    title = escape(section["system"]["name"])
    return f'<section id="system-gap"><h2>System view: security-level gap per zone ({title})</h2>\n{body}</section>'



def write_gap_reports(section: Mapping[str, Any], out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Write gap.json / gap.html / gap.pdf into `out_dir`; returns the paths written."""
    unknown = [f for f in formats if f not in GAP_FORMATS]
    if unknown:
        raise OtfuzzError(f"unknown gap report format '{unknown[0]}' (known: {', '.join(GAP_FORMATS)})")
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if "json" in formats:
            path = out_dir / "gap.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(section, indent=2) + "\n")
            os.replace(tmp, path)
            written.append(path)
        if "html" in formats:
            path = out_dir / "gap.html"
            path.write_text(render_gap_html(section))
            written.append(path)
    except OSError as exc:
        raise OtfuzzError(f"cannot write the gap report into {out_dir}: {exc.strerror}") from None
    if "pdf" in formats:
        written.append(html_to_pdf(render_gap_html(section), out_dir / "gap.pdf"))
    return written
