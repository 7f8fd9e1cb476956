"""The system view as reports: the SL gap per zone (from `otfuzz gap`) as JSON, HTML and PDF,
and the model drawn as zones coloured by SL-T (`otfuzz model show`).

The gap spans several runs, so it is a report of its own rather than a section of one run's;
it uses the same escaping (Jinja2 autoescape), the same no-fetch policy and the same PDF engine
as the campaign report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
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


# Zone fill colour by its highest SL-T (1 green .. 4 red), with the legend text.
SL_COLOURS: Mapping[int, str] = MappingProxyType({1: "#d9f0d3", 2: "#fff2b2", 3: "#fdd0a2", 4: "#f4a6a6"})


def system_dot(model: Any) -> str:
    """Graphviz DOT of the model: a cluster per zone filled by its highest SL-T, an edge per channel."""
    def q(text: str) -> str:
        return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(model.name)} {{", "  compound=true; rankdir=LR; fontname=Helvetica;",
             "  node [fontname=Helvetica, fontsize=10, shape=box, style=\"rounded,filled\", fillcolor=white];",
             "  edge [fontname=Helvetica, fontsize=9];", f"  label={q(model.name + ' - zones coloured by highest SL-T')}; labelloc=t;"]
    for n, zone in enumerate(model.zones):
        top = max(zone.sl_t)
        title = f"{zone.name}  SL-T {''.join(map(str, zone.sl_t))} ({zone.criticality})"
        lines += [f"  subgraph cluster_{n} {{",
                  f"    label={q(title)};",
                  f"    style=filled; fillcolor={q(SL_COLOURS[top])}; color=gray40;",
                  f"    {q('zone:' + zone.name)} [shape=point, style=invis, width=0];"]
        for name in zone.assets:
            asset = model.asset(name)
            served = "\\n".join(f"{s.protocol}:{s.port}" for s in asset.services)
            label = f"{asset.name}\\n{asset.address}" + (f"\\n{served}" if served else "")
            lines.append(f"    {q('asset:' + name)} [label=\"{label}\"];")
        lines.append("  }")
    index = {z.name: n for n, z in enumerate(model.zones)}
    for conduit, channel in model.channels():
        allow = ",".join(map(str, channel.policy.allow)) if channel.policy else "no policy"
        label = f"{conduit.name}: {channel.protocol}:{channel.port}\\n[{allow}]"
        lines.append(f"  {q('zone:' + channel.from_zone)} -> {q('asset:' + channel.server)} "
                     f"[ltail=cluster_{index[channel.from_zone]}, label=\"{label}\"];")
    for conduit in model.conduits:
        if not conduit.channels:
            a, b = conduit.zones
            lines.append(f"  {q('zone:' + a)} -> {q('zone:' + b)} [ltail=cluster_{index[a]}, lhead=cluster_{index[b]}, "
                         f"dir=none, style=dashed, label={q(conduit.name + ' (no channels)')}];")
    legend = " | ".join(f"SL {level}" for level in SL_COLOURS)
    lines.append(f"  legend [shape=record, style=filled, fillcolor=white, label={q(legend)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_system(model: Any, out: Path) -> Path:
    """Write the model's drawing to `out`: .svg, .png, .pdf through Graphviz, or the DOT source."""
    dot = system_dot(model)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png", "pdf", "dot", "gv"):
        raise OtfuzzError(f"--out {out}: unknown format '{fmt}' (use .svg, .png, .pdf or .dot)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt in ("dot", "gv"):
            out.write_text(dot)
        else:
            exe = shutil.which("dot")
            if exe is None:
                raise OtfuzzError("Graphviz 'dot' is not installed (apt-get install graphviz); or write the DOT source with --out system.dot")
            done = subprocess.run([exe, f"-T{fmt}", "-o", str(out)], input=dot.encode(), capture_output=True, timeout=60)
            if done.returncode != 0:
                raise OtfuzzError(f"Graphviz failed: {done.stderr.decode(errors='replace').strip()[:200]}")
    except OSError as exc:
        raise OtfuzzError(f"cannot write {out}: {exc.strerror}") from None
    return out
