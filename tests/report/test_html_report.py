"""The HTML report: self-contained, readable, and deaf to anything the device says.

The Chromium test loads the report in Debian's headless Chromium (installed by .ci/run) and
checks it renders, logs no console error, fetches nothing, runs no script, and shows the
device's `<script>` bytes as text.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from chromium_cdp import chromium_binary, open_page
from report_samples import IMG_DESCRIPTION, SCRIPT_REPLY, SCRIPT_VENDOR, hostile_results

from otfuzz.compliance.evidence import EvidenceOptions, build_evidence
from otfuzz.report.html import hexdump, printable, render_html, write_html

OPTIONS = EvidenceOptions(component_type="embedded-device", sl_t=(2, 2, 2, 2, 2, 2, 2))


@pytest.fixture(scope="module")
def html() -> str:
    results = hostile_results()
    return render_html(results, build_evidence(results, OPTIONS))


def test_device_markup_is_escaped_never_emitted(html: str) -> None:
    assert SCRIPT_VENDOR not in html and "<script" not in html.lower()
    assert "&lt;script&gt;window.__pwned = 2&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x onerror=" in html
    assert "<b>bold</b>" not in html and "PLC-9000 &lt;b&gt;bold&lt;/b&gt;" in html


def test_control_characters_from_the_device_are_spelled_out(html: str) -> None:
    assert "\x07" not in html and "\x1b" not in html
    assert "a bell \\x07" in html and "1.0\\x1b[31m" in html
    assert printable("a\u202e\u2028b\x00") == "a\u202e\\x2028b\\x00"


class _Tags(HTMLParser):
    """Every real tag and attribute in a page (escaped text never shows up here)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_is_self_contained_and_forbids_scripts_and_fetches(html: str) -> None:
    parser = _Tags()
    parser.feed(html)
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "base", "form"}
    links = [attrs.get("href") or attrs.get("src") for _, attrs in parser.tags if {"href", "src"} & set(attrs)]
    assert links and all(link.startswith("#") for link in links)  # in-page anchors only
    assert not [attrs for _, attrs in parser.tags if any(name.startswith("on") for name in attrs)]
    assert "url(" not in html and "@import" not in html
    csp = [attrs["content"] for tag, attrs in parser.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0]


def test_findings_come_first_then_matrix_levels_charts_and_anomalies_as_appendix(html: str) -> None:
    order = [html.index(marker) for marker in ('id="summary"', 'id="findings"', 'id="requirements"', 'id="levels"',
                                               'id="charts"', 'id="anomalies"', 'id="record"')]
    assert order == sorted(order)
    assert "Result: FAIL" in html and html.count("<svg") == 4
    # The matrix cites findings, the findings table lists reproducers, anomalies point to their finding.
    assert 'id="finding-1"' in html and 'href="#finding-1"' in html and 'id="anomaly-1"' in html
    assert "2 distinct defects (1 high, 0 medium, 1 low) from 2 anomalies" in " ".join(html.split())
    assert "otfuzz replay RUN --finding 1" in html
    assert "00 01 00 00 00 06 01 03 ff ff 00 00" in html  # the minimised reproducer, hex and ASCII
    assert "&lt;script&gt;window.__pwned = 5&lt;/script&gt;" in html  # a title quoting the device, escaped


def test_report_renders_from_a_document_missing_every_optional_key(tmp_path: Path) -> None:
    path = write_html({}, build_evidence({}), tmp_path / "report.html")
    text = path.read_text()
    assert "Result: INCONCLUSIVE" in text and "No anomaly was recorded" in text and "no samples recorded" in text


def test_hexdump_shows_offsets_hex_and_printable_text() -> None:
    assert hexdump(SCRIPT_REPLY.hex()).splitlines()[0] == \
        "0000  3c 73 63 72 69 70 74 3e 77 69 6e 64 6f 77 2e 5f  <script>window._"
    assert hexdump("zz") == "zz" and hexdump(None) == ""


@pytest.mark.skipif(chromium_binary() is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_chromium_renders_the_report_with_no_console_error_and_device_script_as_text(tmp_path: Path) -> None:
    results = hostile_results()
    # The stress layer renders its own section; its reasons may quote the device too.
    results["stress"] = {"profile": "quick", "verdicts": {"request-flood": {"verdict": "fail", "reasons": [SCRIPT_VENDOR]},
                                                          "recovery": {"verdict": "pass", "reasons": []}}}
    path = write_html(results, build_evidence(results, OPTIONS), tmp_path / "report.html")
    expressions = {
        "title": "document.title",
        "pwned": "typeof window.__pwned",
        "scripts": "document.scripts.length",
        "imgs": "document.images.length",
        "svgs": "document.querySelectorAll('svg').length",
        "matrix": "document.querySelectorAll('table.matrix tbody tr').length",
        "text": "document.body.innerText",
        "stress": "document.querySelectorAll('section.otfuzz-stress table.stress-verdicts tr').length",
        "height": "document.body.scrollHeight",
    }
    run = open_page(chromium_binary(), tmp_path / "profile", path.as_uri(), list(expressions.values()))
    got = {name: run.values[expr] for name, expr in expressions.items()}
    assert run.errors() == []
    assert [url for url in run.requests if url != path.as_uri()] == []  # nothing fetched
    assert got["pwned"] == "undefined" and got["scripts"] == 0 and got["imgs"] == 0
    assert got["title"].startswith("Robustness test evidence") and got["svgs"] == 4 and got["height"] > 2000
    assert got["matrix"] > 5 and got["stress"] == 3
    assert SCRIPT_VENDOR in got["text"]  # the device's bytes, as text
    assert "<script>window.__pwned = 1</script>" in got["text"]
    assert IMG_DESCRIPTION.replace("\x07", "\\x07") in got["text"]


def test_many_occurrences_are_one_finding_with_a_row_per_anomaly() -> None:
    results = hostile_results()
    template = results["anomalies"][1]
    long_frame = ["ab" * 100]
    results["anomalies"] = [dict(template, id=i, frames_hex=long_frame, finding_id=2) for i in range(1, 251)]
    results["findings"][1].update(anomaly_ids=list(range(1, 251)), occurrences=250,
                                  reproducer={"case_ids": [1], "frames_hex": long_frame, "minimised": True})
    results["findings"][0].update(anomaly_ids=[], occurrences=0, groups=[])
    evidence = build_evidence(results, OPTIONS)
    screen = render_html(results, evidence)
    assert screen.count('class="anomaly sev-border') == 2 and screen.count('<tr id="anomaly-') == 250
    words = " ".join(screen.split())
    assert "from 250 anomalies" in words and "250 anomalies: 250 malformed-reply" in words
    assert screen.count('<a href="#finding-2">2</a>') == 1 + 250  # the findings table, then every occurrence
    printed = render_html(results, evidence, for_print=True)
    assert printed.count('<tr id="anomaly-') == 200 and "all 250 are in the HTML and JSON reports" in printed
    assert printed.count("... (100 bytes)") >= 200  # cut in print
    assert "250 occurrences" in words  # the matrix counts occurrences, cites the finding
    assert "request types)" not in words  # one request type: named as such
    results["findings"][1]["request_types"] = ["read_coils", "write_single_coil", "write_single_register"]
    words = " ".join(render_html(results, evidence).split())
    assert "(on 3 request types)" in words and "request types read_coils, write_single_coil, write_single_register" in words


def test_the_search_section_shows_pairwise_coverage_least_covered_first_and_the_corpus_chart() -> None:
    results = hostile_results()
    results["search"] = {
        "pairs": {"cases": 120, "covered": 150, "total": 200, "by_request_type": {
            "read_coils": {"covered": 100, "total": 100}, "write_single_register": {"covered": 50, "total": 100}}},
        "corpus_size": 42, "observed_values": 7, "observations": 40, "connection_s": 0.0, "investigating_s": 1.0,
        "corpus_over_time": [{"t": 0.5, "size": 3, "observed": 0}, {"t": 1.0, "size": 42, "observed": 7}],
    }
    page = render_html(results, build_evidence(results, OPTIONS))
    assert "150 of 200 value pairs" in page and "(75.0%) in 120 pairs cases" in page
    assert page.index("<td>write_single_register</td>") < page.index("<td>read_coils</td>")  # least covered first
    assert "Feedback corpus: 42 cases" in page and "Feedback corpus over time" in page
    assert "Search reached" not in render_html(hostile_results(), build_evidence(hostile_results(), OPTIONS))
