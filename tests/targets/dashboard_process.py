"""Start `otfuzz dashboard` in a child process and read the URL it prints; the browser settings
that make Playwright drive Debian's chromium (it cannot download its own browsers here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from otfuzz.store.evidence import EvidenceStore
from targets.servers import OTFUZZ

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
URL_LINE = re.compile(r"dashboard: (http://\S+)")


def start_dashboard(runs: Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """`otfuzz dashboard RUNS --port 0 OPTIONS` in a child; (process, the URL it printed)."""
    proc = subprocess.Popen([*OTFUZZ, "dashboard", str(runs), "--port", "0", *options], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = URL_LINE.search(line)
    if match is None:
        stop(proc)
        raise RuntimeError(f"the dashboard did not print its URL: {line!r}")
    return proc, match.group(1)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class _Config:
    """The least a store needs to record a run's start."""

    seed = 1
    operator = organisation = independence = None

    def as_dict(self) -> dict[str, object]:
        return {"target": "modbus://127.0.0.1:1"}

    def sha256(self) -> str:
        return "0" * 64


def started_store(run: Path) -> EvidenceStore:
    """A new run folder whose store has recorded a start and nothing else (no campaign needed)."""
    run.mkdir(parents=True)
    store = EvidenceStore.create(run)
    store.record_start("fuzz", _Config(), {"url": "modbus://127.0.0.1:1", "protocol": "modbus"})
    return store
