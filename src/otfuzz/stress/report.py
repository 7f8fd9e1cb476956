"""The stress section of the HTML report: verdicts, and per pattern a plot and a table of steps.

`stress_html(results)` takes the results document and returns a self-contained HTML fragment
(inline SVG, inline styles, no scripts) that the HTML report embeds. Everything that came from
the run (labels, reasons, notes, the target's own words) is escaped; numbers are formatted by
this module, never interpolated raw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

WIDTH, LEFT, RIGHT = 760, 64, 64
TOP_Y, TOP_H = 24, 110  # offered load panel
BOT_Y, BOT_H = 170, 100  # essential-function panel
HEIGHT = BOT_Y + BOT_H + 44

_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700", "not-run": "#57606a"}


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) < 1e15:
            return f"{int(value)}"
        return f"{float(value):.{digits}f}"
    return _e(value)


def _badge(verdict: str) -> str:
    colour = _COLOURS.get(verdict, "#57606a")
    return (f'<span class="verdict verdict-{_e(verdict)}" style="display:inline-block;padding:0 .5em;border-radius:.3em;'
            f'color:#fff;background:{colour};font-weight:600">{_e(verdict)}</span>')


def _points(xs: Sequence[float], ys: Sequence[float | None]) -> list[str]:
    """Polyline segments; a None value breaks the line."""
    segments: list[str] = []
    current: list[str] = []
    for x, y in zip(xs, ys):
        if y is None:
            if len(current) > 1:
                segments.append(" ".join(current))
            current = []
            continue
        current.append(f"{x:.1f},{y:.1f}")
    if len(current) > 1:
        segments.append(" ".join(current))
    return segments


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    for step in (1, 2, 2.5, 5, 10):
        top = step * magnitude
        if top >= value:
            return float(top)
    return float(value)


def pattern_svg(pattern: Mapping[str, Any], deadline_ms: float) -> str:
    """Offered load (top) and essential-function latency and misses (bottom) over the pattern's time."""
    timeline = list(pattern.get("timeline") or [])
    if not timeline:
        return '<p class="no-plot">No load samples were recorded for this pattern.</p>'
    t0 = float(pattern["started_t"])
    t1 = max(float(pattern["ended_t"]), float(timeline[-1]["t"]))
    span = max(t1 - t0, 1e-6)
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (min(max(t, t0), t1) - t0) / span * plot_w

    connections = pattern.get("group") == "connection-flood"
    xs = [x(float(p["t"])) for p in timeline]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
           f'role="img" font-family="sans-serif" font-size="11">',
           f"<title>{_e(pattern.get('group', ''))}: offered load and essential function over time</title>"]
    # Steps: shaded load periods, then the recovery marker of each.
    for step in pattern.get("steps") or []:
        a, b = x(float(step["started_t"])), x(float(step["stopped_t"]))
        out.append(f'<rect x="{a:.1f}" y="{TOP_Y}" width="{max(b - a, 0.5):.1f}" height="{BOT_Y + BOT_H - TOP_Y}" fill="#0969da" '
                   f'fill-opacity="0.07"><title>{_e(step.get("label", ""))}</title></rect>')
        recovery = step.get("recovery") or {}
        if recovery.get("recovered") and recovery.get("seconds") is not None:
            rx = x(float(step["stopped_t"]) + float(recovery["seconds"]))
            out.append(f'<line x1="{rx:.1f}" x2="{rx:.1f}" y1="{BOT_Y}" y2="{BOT_Y + BOT_H}" stroke="#1a7f37" stroke-width="1.5">'
                       f'<title>recovered {_num(recovery["seconds"], 2)} s after load stopped</title></line>')
        elif recovery.get("recovered") is False:
            out.append(f'<line x1="{b:.1f}" x2="{b:.1f}" y1="{BOT_Y}" y2="{BOT_Y + BOT_H}" stroke="#cf222e" stroke-dasharray="4 3" '
                       f'stroke-width="1.5"><title>not recovered within the window</title></line>')
    # Top panel: offered and answered load (or open connections and connects/s).
    if connections:
        series = [("open connections", "open_connections", "#0969da"), ("connects/s", "connects_ps", "#8250df"),
                  ("requests answered/s", "answered_rps", "#1a7f37")]
        unit = "connections, per s"
    else:
        series = [("offered req/s", "offered_rps", "#0969da"), ("answered req/s", "answered_rps", "#1a7f37")]
        unit = "requests/s"
    top_max = _nice_max(max([float(p.get(key) or 0) for p in timeline for _, key, _ in series] + [1.0]))

    def ytop(v: float) -> float:
        return TOP_Y + TOP_H - v / top_max * TOP_H

    out.append(_axes(TOP_Y, TOP_H, top_max, unit))
    for n, (name, key, colour) in enumerate(series):
        for seg in _points(xs, [ytop(float(p.get(key) or 0)) for p in timeline]):
            out.append(f'<polyline points="{seg}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        out.append(f'<text x="{LEFT + 4 + n * 150}" y="{TOP_Y - 8}" fill="{colour}">{_e(name)}</text>')
    # Bottom panel: worst latency per interval (log scale: sub-millisecond and deadline both show) and misses.
    latencies = [p.get("latency_max_ms") for p in timeline]
    seen = [float(v) for v in latencies if v is not None and v > 0]
    lo = 10 ** math.floor(math.log10(min(seen + [deadline_ms / 10])))
    hi = 10 ** math.ceil(math.log10(max(seen + [deadline_ms, lo * 10])))

    def ybot(v: float) -> float:
        v = min(max(v, lo), hi)
        return BOT_Y + BOT_H - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * BOT_H

    out.append(_axes(BOT_Y, BOT_H, hi, "latency ms (log)", lo))
    dy = ybot(deadline_ms)
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{dy:.1f}" y2="{dy:.1f}" stroke="#9a6700" stroke-dasharray="2 3"/>')
    out.append(f'<text x="{WIDTH - RIGHT + 4}" y="{dy + 4:.1f}" fill="#9a6700">deadline</text>')
    ys = [None if v is None else ybot(float(v)) for v in latencies]
    for seg in _points(xs, ys):
        out.append(f'<polyline points="{seg}" fill="none" stroke="#57606a" stroke-width="1.2"/>')
    for px, py in zip(xs, ys):  # dots too, so an answered interval between two silent ones still shows
        if py is not None:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="1.6" fill="#57606a"/>')
    bar_w = max(2.0, plot_w / max(len(timeline), 1) * 0.6)
    for p, px in zip(timeline, xs):
        misses, cycles = int(p.get("misses") or 0), int(p.get("cycles") or 0)
        if misses:
            h = BOT_H * misses / max(cycles, misses)
            out.append(f'<rect x="{px - bar_w:.1f}" y="{BOT_Y + BOT_H - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="#cf222e" '
                       f'fill-opacity="0.6"><title>{misses} of {cycles} cycles missed</title></rect>')
    out.append(f'<text x="{LEFT + 4}" y="{BOT_Y - 8}" fill="#57606a">essential function: worst latency</text>'
               f'<text x="{LEFT + 220}" y="{BOT_Y - 8}" fill="#cf222e">missed cycles (share of interval)</text>'
               f'<text x="{LEFT + 440}" y="{BOT_Y - 8}" fill="#1a7f37">| recovered</text>')
    # Time axis.
    base = BOT_Y + BOT_H
    for i in range(6):
        t = t0 + span * i / 5
        tx = x(t)
        out.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{base}" y2="{base + 4}" stroke="#57606a"/>'
                   f'<text x="{tx:.1f}" y="{base + 16}" text-anchor="middle">{t:.1f}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{base + 32}" text-anchor="middle">seconds since the run started</text>')
    out.append("</svg>")
    return "".join(out)


def _axes(y: int, h: int, top: float, unit: str, log_bottom: float | None = None) -> str:
    """Frame and three labels; with `log_bottom` the labels are decades from it up to `top`."""
    parts = [f'<rect x="{LEFT}" y="{y}" width="{WIDTH - LEFT - RIGHT}" height="{h}" fill="none" stroke="#d0d7de"/>']
    for frac in (0.0, 0.5, 1.0):
        if log_bottom is None:
            value = top * frac
        else:
            value = 10 ** (math.log10(log_bottom) + frac * (math.log10(top) - math.log10(log_bottom)))
        yy = y + h - frac * h
        parts.append(f'<text x="{LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end">{_num(value, 3 if value < 1 else 1)}</text>')
    parts.append(f'<text x="{LEFT - 44}" y="{y + h / 2:.1f}" transform="rotate(-90 {LEFT - 44} {y + h / 2:.1f})" '
                 f'text-anchor="middle">{_e(unit)}</text>')
    return "".join(parts)


def resources_svg(samples: Sequence[Mapping[str, Any]]) -> str:
    """Descriptors, threads and memory of the target over the run: a leak is a rising line."""
    if len(samples) < 2:
        return ""
    t0, t1 = float(samples[0]["t"]), float(samples[-1]["t"])
    span = max(t1 - t0, 1e-6)
    plot_w = WIDTH - LEFT - RIGHT
    h = 120
    xs = [LEFT + (float(s["t"]) - t0) / span * plot_w for s in samples]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {h + 60}" width="{WIDTH}" height="{h + 60}" '
           'role="img" font-family="sans-serif" font-size="11"><title>target resources over time</title>',
           f'<rect x="{LEFT}" y="20" width="{plot_w}" height="{h}" fill="none" stroke="#d0d7de"/>']
    for n, (name, key, colour) in enumerate((("open descriptors", "fds", "#0969da"), ("threads", "threads", "#8250df"),
                                             ("memory MiB", "rss_mb", "#bf3989"), ("CPU %", "cpu_percent", "#9a6700"))):
        values = [float(s.get(key) or 0) for s in samples]
        top = _nice_max(max(values + [1.0]))
        ys = [20 + h - v / top * h for v in values]
        for seg in _points(xs, ys):
            out.append(f'<polyline points="{seg}" fill="none" stroke="{colour}" stroke-width="1.4"/>')
        out.append(f'<text x="{LEFT + 4 + n * 160}" y="14" fill="{colour}">{_e(name)} (max {_num(max(values))})</text>')
    out.append(f'<text x="{LEFT}" y="{h + 36}">{t0:.1f} s</text><text x="{WIDTH - RIGHT}" y="{h + 36}" text-anchor="end">{t1:.1f} s</text>'
               f'<text x="{LEFT + plot_w / 2:.1f}" y="{h + 36}" text-anchor="middle">each line scaled to its own maximum</text></svg>')
    return "".join(out)


def _steps_table(steps: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for s in steps:
        off, ess, rec = s.get("offered") or {}, s.get("essential") or {}, s.get("recovery") or {}
        recovery = ("interrupted" if rec.get("recovered") is None else
                    f"{_num(rec.get('seconds'), 2)} s" if rec.get("recovered") else "not recovered")
        rows.append(
            "<tr>"
            f"<td>{_e(s.get('label', ''))}</td><td>{_e(s.get('level', ''))}</td>"
            f"<td>{_num(off.get('mean_offered_rps'))}</td><td>{_num(off.get('mean_answered_rps'))}</td>"
            f"<td>{_num(off.get('peak_open'))}</td>"
            f"<td>{_num(off.get('backpressure'))} / {_num(off.get('disconnected'))} / {_num(off.get('tool_shortfall'))}</td>"
            f"<td>{_num(ess.get('misses'))} / {_num(ess.get('cycles'))}</td><td>{_num(ess.get('latency_p95_ms'), 2)}</td>"
            f"<td>{_num(ess.get('longest_outage_s'), 2)}</td><td>{_e(recovery)}</td>"
            f"<td>{_badge(str(s.get('verdict', '')))}"
            + "".join(f"<br><small>{_e(r)}</small>" for r in s.get("reasons") or [])
            + f"<br><small>recovery: {_e(rec.get('verdict', ''))}{(' – ' + _e(rec['reason'])) if rec.get('reason') else ''}</small>"
            "</td></tr>"
        )
    head = ("<tr><th>step</th><th>level</th><th>offered /s</th><th>answered /s</th><th>peak open</th>"
            "<th>held back: target buffer / closed / otfuzz</th><th>missed / cycles</th><th>p95 ms</th>"
            "<th>longest outage s</th><th>recovery</th><th>verdict</th></tr>")
    return f'<table class="stress-steps">{head}{"".join(rows)}</table>'


def stress_html(results: Mapping[str, Any]) -> str:
    """The stress section of a results document as a safe HTML fragment ('' when there is none)."""
    stress = results.get("stress")
    if not isinstance(stress, Mapping):
        return ""
    fn = stress.get("essential_function") or {}
    deadline_ms = float(fn.get("deadline_s") or 0.05) * 1000
    out = ['<section class="otfuzz-stress"><h2>Network stress and denial of service (CR 7.1, 7.2, 7.4)</h2>']
    levels = stress.get("levels") or {}
    level_text = "; ".join(f"{_e(name)}: {_num(lv.get('request_rate'))} req/s, {_num(lv.get('connections'))} connections, "
                           f"{_num(lv.get('connect_rate'))} connects/s" for name, lv in levels.items())
    baseline = stress.get("baseline") or {}
    out.append(
        f"<p>Profile <b>{_e(stress.get('profile', ''))}</b> ({_e(stress.get('status', ''))}). Levels: {level_text}.</p>"
        f"<p>Essential function: {_e(fn.get('description', ''))}, every {_num(fn.get('cadence_s'), 3)} s, deadline "
        f"{_num(fn.get('deadline_s'), 3)} s (request <code>{_e(fn.get('request_hex', ''))}</code>). Baseline latency: "
        f"median {_num(baseline.get('median_ms'), 3)} ms, p95 {_num(baseline.get('p95_ms'), 3)} ms.</p>")
    verdicts = stress.get("verdicts") or {}
    rows = "".join(f"<tr><td>{_e(group)}</td><td>{_badge(str(v.get('verdict', '')))}</td><td>"
                   + "<br>".join(_e(r) for r in v.get("reasons") or []) + "</td></tr>" for group, v in verdicts.items())
    out.append(f'<table class="stress-verdicts"><tr><th>test group</th><th>verdict</th><th>why</th></tr>{rows}</table>')
    thresholds = stress.get("thresholds") or {}
    if thresholds:
        out.append("<p><small>Thresholds: " + ", ".join(f"{_e(k)} = {_num(v, 3)}" for k, v in thresholds.items()) + "</small></p>")
    for note in stress.get("notes") or []:
        out.append(f'<p class="note">{_e(note)}</p>')
    for pattern in stress.get("patterns") or []:
        recovery = pattern.get("recovery_s")
        recovered = pattern.get("recovered")
        rec_text = ("not measured" if recovered is None else f"{_num(recovery, 2)} s (slowest step)" if recovered
                    else "not recovered within the window")
        out.append(f'<h3>{_e(pattern.get("group", ""))} {_badge(str(pattern.get("verdict", "")))}</h3>')
        if pattern.get("flood"):
            out.append(f"<p>Traffic: {_e(pattern['flood'])}. Recovery: {_e(rec_text)}.</p>")
        if pattern.get("note"):
            out.append(f'<p class="note">{_e(pattern["note"])}</p>')
        if pattern.get("steps"):
            out.append(pattern_svg(pattern, deadline_ms))
            out.append(_steps_table(pattern["steps"]))
    res = stress.get("resources") or {}
    if res.get("measured"):
        start, end, peak = res.get("start") or {}, res.get("end") or {}, res.get("peak") or {}
        out.append(f"<h3>Target resources (pid {_num(res.get('pid'))})</h3>")
        out.append("<p>" + ", ".join(f"{_e(k)}: {_num(start.get(k))} before, {_num(end.get(k))} after, peak {_num(peak.get(k))}"
                                     for k in ("fds", "threads", "rss_mb")) + "</p>")
        out.append(resources_svg(res.get("samples") or []))
    out.append("</section>")
    return "\n".join(out)
