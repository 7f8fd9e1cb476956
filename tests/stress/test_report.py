"""The stress HTML fragment: escapes everything from the run, plots every pattern, shows recovery."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

from otfuzz.stress.report import stress_html

HOSTILE = '<script>alert("x")</script>'


def _doc() -> dict:
    step = {
        "kind": "rate", "label": f"200 req/s {HOSTILE}", "level": "level-2", "duration_s": 1.0, "rate_start": 200, "rate_end": 200,
        "connections": 1, "started_t": 2.0, "stopped_t": 3.0,
        "offered": {"intended": 200, "written": 200, "backpressure": 0, "disconnected": 0, "tool_shortfall": 0, "answered": 90,
                    "mean_offered_rps": 200.0, "mean_answered_rps": 90.0, "peak_open": 1},
        "replies": {"normal": 90},
        "essential": {"cycles": 10, "misses": 5, "miss_ratio": 0.5, "longest_outage_s": 0.5, "latency_p95_ms": 0.4},
        "recovery": {"recovered": True, "seconds": 1.75, "verdict": "pass", "reason": ""},
        "verdict": "fail", "reasons": [f"level-2 load: 5 of 10 cycles missed {HOSTILE}"],
    }
    timeline = [{"t": 2.0 + i * 0.5, "offered_rps": 200.0 if i < 2 else 0.0, "answered_rps": 90.0, "open_connections": 1,
                 "connects_ps": 0.0, "cycles": 5, "misses": 3 if i == 1 else 0, "latency_max_ms": None if i == 3 else 0.4,
                 "latency_p50_ms": 0.3} for i in range(8)]
    pattern = {"group": "request-flood", "flood": f"valid request {HOSTILE}", "note": HOSTILE, "started_t": 2.0, "ended_t": 5.5,
               "verdict": "fail", "reasons": ["x"], "recovered": True, "recovery_s": 1.75, "steps": [step], "timeline": timeline}
    return {"stress": {
        "profile": "quick", "status": "completed",
        "levels": {"level-1": {"request_rate": 50, "connections": 8, "connect_rate": 10}},
        "essential_function": {"description": HOSTILE, "request_hex": "00", "cadence_s": 0.1, "deadline_s": 0.05},
        "baseline": {"median_ms": 0.3, "p95_ms": 0.4},
        "patterns": [pattern, {**pattern, "group": "connection-flood"}],
        "verdicts": {"request-flood": {"verdict": "fail", "reasons": [HOSTILE]}},
        "thresholds": {"max_missed_level1": 0.01},
        "resources": {"measured": True, "pid": 42, "start": {"fds": 3}, "end": {"fds": 30}, "peak": {"fds": 30},
                      "samples": [{"t": 1.0, "fds": 3, "threads": 1, "rss_mb": 10.0, "cpu_percent": 1.0},
                                  {"t": 5.0, "fds": 30, "threads": 1, "rss_mb": 10.0, "cpu_percent": 50.0}]},
        "notes": [HOSTILE],
    }}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[override]
        self.tags.append(tag)


def test_everything_from_the_run_is_escaped() -> None:
    html = stress_html(_doc())
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    parser = _Tags()
    parser.feed(html)
    assert "script" not in parser.tags


def test_each_pattern_gets_a_plot_of_load_and_essential_function_and_the_resources_one() -> None:
    html = stress_html(_doc())
    assert html.count("<svg") == 3  # two patterns and the resources
    assert "missed cycles" in html and "open connections" in html and "offered req/s" in html
    assert "3 of 5 cycles missed" in html  # the miss bar of the interval with misses
    assert "recovered 1.75 s after load stopped" in html
    assert "1.75 s (slowest step)" in html


def test_a_missing_latency_breaks_the_line_instead_of_drawing_zero() -> None:
    svg = stress_html(_doc()).split("<svg")[1]
    latency_lines = re.findall(r'<polyline points="([^"]+)" fill="none" stroke="#57606a"', svg)
    assert len(latency_lines) == 2  # before and after the interval without an answer
    assert svg.count("<circle") == 7


def test_not_recovered_is_shown_as_such() -> None:
    doc = copy.deepcopy(_doc())
    doc["stress"]["patterns"][0]["steps"][0]["recovery"] = {"recovered": False, "seconds": None, "verdict": "fail",
                                                             "reason": "not back"}
    doc["stress"]["patterns"][0]["recovered"] = False
    html = stress_html(doc)
    assert "not recovered within the window" in html


def test_no_stress_section_gives_an_empty_fragment() -> None:
    assert stress_html({"campaign": {}}) == ""
