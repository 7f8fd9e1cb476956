"""Start `otfuzz dashboard` in a child process and read the URL it prints; the browser settings
that make Playwright drive Debian's chromium (it cannot download its own browsers here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
