"""The dashboard in a real browser (Debian's chromium through Playwright) watching a real campaign
on a real pymodbus: live updates without reload, findings as they appear, device strings as
text, no console errors, and the token off loopback."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from targets.dashboard_process import start_dashboard, stop
from targets.hostile_pymodbus import PRODUCT, VENDOR

pytestmark = pytest.mark.integration


def _open(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A new page at `url`, collecting console errors and uncaught exceptions."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.goto(url)
    return page, errors


def _findings(page: Any) -> set[str]:
    return set(page.eval_on_selector_all("#findings tr[data-finding]", "rows => rows.map(r => r.dataset.finding)"))


def test_run_page_counts_cases_and_shows_new_findings_live_without_reload(live_run: Any, browser: Any) -> None:
    page, errors = _open(browser, live_run.url)
    page.wait_for_selector("#runs tr[data-run='live']")
    assert page.inner_text("#runs tr[data-run='live'] td:nth-child(5)") == "modbus"
    page.click("#runs tr[data-run='live'] a")
    # the new document, not its load event: the charts load beside a live campaign and another
    # test worker, and are waited for below
    page.wait_for_url("**/run/live", wait_until="commit")
    page.evaluate("window.__same_document = true")  # gone if the page reloaded
    page.wait_for_function("() => document.getElementById('live').textContent === 'live'")
    first = int(page.inner_text("#cases"))
    seen = _findings(page)
    page.wait_for_function("n => Number(document.getElementById('cases').textContent) > n", arg=first, timeout=15000)
    page.wait_for_function("n => document.querySelectorAll('#findings tr[data-finding]').length > n", arg=len(seen),
                           timeout=15000)
    new = _findings(page) - seen
    assert new, "no finding appeared while the page was open"
    row = page.locator(f"#findings tr[data-finding='{sorted(new)[0]}']")
    assert "malformed" in row.inner_text() or row.locator("code.hex").count() >= 1
    assert page.evaluate("window.__same_document") is True
    assert int(page.get_attribute("body", "data-updates") or 0) >= 2
    for chart in ("rate", "latency", "replies"):  # server-drawn SVG images that loaded
        page.wait_for_function(f"() => document.querySelector('img[data-chart={chart}]')?.naturalWidth > 0", timeout=30000)
    page.close()
    assert errors == []


def test_device_strings_with_markup_show_as_text(live_run: Any, browser: Any) -> None:
    page, errors = _open(browser, live_run.url + "run/live")
    page.wait_for_function("() => Number(document.body.dataset.updates || 0) >= 1")  # the script rewrote the table too
    identity = page.inner_text("#identity")
    assert VENDOR in identity and PRODUCT in identity
    assert page.locator("#identity img, #identity script, #identity b").count() == 0
    assert page.evaluate("window.__otfuzz_owned") is None
    page.close()
    assert errors == []


def test_the_run_page_after_the_campaign_shows_its_end_and_verdict(live_run: Any, browser: Any) -> None:
    assert live_run.campaign.wait(60) == 0
    page, errors = _open(browser, live_run.url + "run/live")
    page.wait_for_function("() => document.getElementById('status').textContent === 'completed'")
    assert page.inner_text("#verdict") in ("pass", "fail", "partial", "not-tested")
    cases = int(page.inner_text("#cases"))
    from otfuzz.store.evidence import EvidenceStore

    store = EvidenceStore.open(live_run.run)
    try:
        assert cases == sum(sum(r.values()) for r in store.counts().values())
    finally:
        store.close()
    page.close()
    assert errors == []


def test_off_loopback_every_request_needs_the_token(live_run: Any, browser: Any) -> None:
    proc, url = start_dashboard(live_run.runs, "--bind", "0.0.0.0")
    try:
        assert "?token=" in url
        local = url.replace("0.0.0.0", "127.0.0.1")  # bound to every address; we talk to it on loopback only
        base, token = local.split("?token=")
        for path in ("", "events", "run/live", "run/live/snapshot.json", "run/live/chart/rate.svg"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=5)
            assert refused.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(base + "?token=" + token[:-1] + ("A" if token[-1] != "A" else "B"), timeout=5)
        assert wrong.value.code == 403
        page, errors = _open(browser, local)  # the token once; then a same-site cookie carries it
        page.wait_for_selector("#runs tr[data-run='live']")
        page.click("#runs tr[data-run='live'] a")
        page.wait_for_function("() => Number(document.body.dataset.updates || 0) >= 1")
        page.close()
        assert errors == []
    finally:
        stop(proc)


def test_stop_is_refused_without_allow_control(live_run: Any) -> None:
    request = urllib.request.Request(live_run.url + "run/live/stop", method="POST", headers={"X-Otfuzz-Control": "stop"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 403


def test_run_with_dashboard_and_allow_control_stops_from_the_browser(pymodbus_server: tuple[str, int], tmp_path: Any,
                                                                      browser: Any) -> None:
    import subprocess

    from targets.servers import OTFUZZ

    host, port = pymodbus_server
    run = tmp_path / "controlled"
    child = subprocess.Popen([*OTFUZZ, "run", f"modbus://{host}:{port}", "--duration", "60s", "--out", str(run), "--quiet",
                              "--no-confirm", "--dashboard", "--dashboard-port", "0", "--allow-control"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:") and "/run/controlled" in line, line
        page, errors = _open(browser, line.split()[1])
        deadline = time.monotonic() + 15
        while page.locator("#cases").count() == 0 and time.monotonic() < deadline:  # 404 until the store exists
            time.sleep(0.2)
            page.reload()
        page.wait_for_function("() => Number(document.getElementById('cases').textContent) > 0", timeout=15000)
        errors.clear()  # the 404s of a run that had not recorded its start yet
        page.click("#stop")
        page.wait_for_function("() => document.getElementById('stop-result').textContent === 'stop requested'")
        before_shutdown = list(errors)  # the dashboard then stops with the campaign: reconnects fail, rightly
        page.close()
        assert child.wait(30) == 130  # stopped as by Ctrl-C: everything recorded is kept, --resume continues it
        assert before_shutdown == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    from otfuzz.store.evidence import EvidenceStore

    store = EvidenceStore.open(run)
    try:
        assert store.get_meta("campaign")["status"] == "interrupted"
    finally:
        store.close()
