"""Small inline SVG charts for the HTML and PDF reports, drawn without any plotting library.

The report must be one self-contained file that opens offline and renders the same in a
browser and in WeasyPrint, so charts are plain SVG strings. Every label goes through
`markupsafe.escape`: group names and reply classes come from the results document, and
nothing in it may become markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from markupsafe import Markup, escape

REPLY_COLOURS: Mapping[str, str] = MappingProxyType({
    "normal": "#2e7d32",
    "exception": "#1565c0",
    "malformed": "#ef6c00",
    "spec-violation": "#6a1b9a",
    "no-reply": "#757575",
    "closed": "#8d6e63",
    "reset": "#c62828",
})
OTHER_COLOUR = "#455a64"

_W, _H = 720, 230  # chart size in px; the plot area leaves room for axes and legend
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 30, 44


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    style: str = "line"  # line, points, crosses
    dashed: bool = False


@dataclass(frozen=True)
class _Axis:
    lo: float
    hi: float
    ticks: tuple[float, ...] = field(default=())

    def scale(self, value: float, start: float, end: float) -> float:
        span = self.hi - self.lo or 1.0
        return start + (value - self.lo) / span * (end - start)


def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[float, ...]:
    """Round tick values (1, 2 or 5 times a power of ten) covering lo..hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (0.0,)
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return tuple(ticks)


def _fmt(value: float) -> str:
    if abs(value) >= 10000:
        return f"{value / 1000:.0f}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def _frame(title: str, body: list[str], height: int = _H) -> Markup:
    label = escape(title)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{label}" '
        f'viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" font-family="sans-serif" font-size="11">'
        f"<title>{label}</title>"
        f'<text x="{_LEFT}" y="16" font-size="13" font-weight="bold">{label}</text>'
        + "".join(body) + "</svg>"
    )


def _empty(title: str, message: str) -> Markup:
    return _frame(title, [f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" fill="#757575">{escape(message)}</text>'],
                  height=80)


def line_chart(title: str, series: Sequence[Series], x_label: str, y_label: str) -> Markup:
    """Lines or markers against a shared numeric x axis (seconds since the campaign start)."""
    points = [p for s in series for p in s.points if all(math.isfinite(v) for v in p)]
    if not points:
        return _empty(title, "no samples recorded")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(0.0, min(ys)), max(ys) if max(ys) > 0 else 1.0, 4)
    x = _Axis(x_ticks[0], x_ticks[-1], x_ticks)
    y = _Axis(y_ticks[0], y_ticks[-1], y_ticks)
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _H - _BOTTOM, _TOP
    body = _axes(x, y, x_label, y_label)
    for s in series:
        coords = [(x.scale(px, x0, x1), y.scale(py, y0, y1)) for px, py in s.points
                  if math.isfinite(px) and math.isfinite(py)]
        colour = escape(s.colour)
        if s.style == "line" and coords:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{dash} points="{path}"/>')
        elif s.style == "points":
            body += [f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.2" fill="{colour}"/>' for cx, cy in coords]
        else:
            body += [f'<path d="M{cx - 4:.1f},{cy - 4:.1f}l8,8m0,-8l-8,8" stroke="{colour}" stroke-width="1.6"/>'
                     for cx, cy in coords]
    body += _legend([(s.name, s.colour) for s in series])
    return _frame(title, body)


def stacked_bars(title: str, rows: Sequence[tuple[str, Mapping[str, int]]], order: Sequence[str]) -> Markup:
    """One horizontal bar per row (test group), split by key (reply class), as shares of the row."""
    rows = [(label, counts) for label, counts in rows if sum(counts.values()) > 0]
    if not rows:
        return _empty(title, "no replies recorded")
    keys = list(order) + sorted({k for _, counts in rows for k in counts} - set(order))
    bar, gap, label_w = 18, 8, 130
    height = _TOP + 10 + len(rows) * (bar + gap) + 40
    x0, x1 = label_w, _W - _RIGHT - 60
    body = []
    for index, (label, counts) in enumerate(rows):
        top = _TOP + 10 + index * (bar + gap)
        total = sum(counts.values())
        body.append(f'<text x="{x0 - 6}" y="{top + bar - 5}" text-anchor="end">{escape(label)}</text>')
        left = float(x0)
        for key in keys:
            n = counts.get(key, 0)
            if n <= 0:
                continue
            width = (x1 - x0) * n / total
            body.append(f'<rect x="{left:.1f}" y="{top}" width="{max(width, 0.5):.1f}" height="{bar}" '
                        f'fill="{escape(REPLY_COLOURS.get(key, OTHER_COLOUR))}"><title>{escape(key)}: {n}</title></rect>')
            left += width
        body.append(f'<text x="{x1 + 6}" y="{top + bar - 5}">{total}</text>')
    used = [k for k in keys if any(counts.get(k, 0) for _, counts in rows)]
    body += _legend([(k, REPLY_COLOURS.get(k, OTHER_COLOUR)) for k in used], y=height - 14, x=x0)
    return _frame(title, body, height=height)


def _axes(x: _Axis, y: _Axis, x_label: str, y_label: str) -> list[str]:
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _H - _BOTTOM, _TOP
    out = [f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>']
    for tick in x.ticks:
        px = x.scale(tick, x0, x1)
        out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" stroke="#333"/>'
                   f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">{escape(_fmt(tick))}</text>')
    for tick in y.ticks:
        py = y.scale(tick, y0, y1)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#e0e0e0"/>'
                   f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(_fmt(tick))}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{_H - 8}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14 {(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    return out


def _legend(items: Sequence[tuple[str, str]], y: int = 16, x: int | None = None) -> list[str]:
    out = []
    left = x if x is not None else _W - _RIGHT - sum(24 + 7 * len(name) for name, _ in items)
    for name, colour in items:
        out.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{escape(colour)}"/>'
                   f'<text x="{left + 14}" y="{y}">{escape(name)}</text>')
        left += 24 + 7 * len(name)
    return out
