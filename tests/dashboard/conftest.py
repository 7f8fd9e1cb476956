"""Fixtures of the dashboard tests: a real campaign on a real pymodbus, a dashboard in its own
process, and Debian's chromium driven by Playwright (which cannot download browsers here)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from targets.dashboard_process import CHROMIUM, CHROMIUM_ARGS, start_dashboard, stop
from targets.servers import HOST, OTFUZZ, free_port, script, start_server, stop_server

@dataclass
class LiveRun:
    runs: Path
    run: Path
    url: str
    campaign: subprocess.Popen[str]


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """A 20 s campaign on a pymodbus whose identity holds markup, watched by a dashboard."""
    port = free_port()
    server = start_server([*script("hostile_pymodbus.py"), "--port", str(port)], port)
    runs = tmp_path_factory.mktemp("runs")
    run = runs / "live"
    campaign = subprocess.Popen([*OTFUZZ, "run", f"modbus://{HOST}:{port}", "--duration", "20s", "--seed", "3", "--out",
                                 str(run), "--quiet", "--confirm-time", "5"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, text=True)
    dashboard = None
    try:
        deadline = time.monotonic() + 20
        while not (run / "evidence.sqlite").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        dashboard, url = start_dashboard(runs)
        yield LiveRun(runs, run, url, campaign)
    finally:
        if dashboard is not None:
            stop(dashboard)
        stop(campaign)
        stop_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
