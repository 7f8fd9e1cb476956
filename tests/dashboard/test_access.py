"""The dashboard's command line and HTTP edges: bad options are one line and exit 2; only the
listed runs and their report files are served; a foreign Host header is refused on loopback
(a web page cannot reach it by DNS rebinding)."""

from __future__ import annotations

import http.client
import socket
import subprocess
from pathlib import Path

import pytest

from targets.dashboard_process import start_dashboard, started_store, stop
from targets.servers import OTFUZZ


@pytest.mark.parametrize("options,message", [
    (["/nonexistent-runs"], "runs folder /nonexistent-runs does not exist"),
    ([".", "--bind", "plc.example"], "--bind needs an IP address"),
    ([".", "--port", "70000"], "--port must be from 0 to 65535"),
])
def test_bad_options_are_one_line_and_exit_2(options: list[str], message: str) -> None:
    done = subprocess.run([*OTFUZZ, "dashboard", *options], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*OTFUZZ, "dashboard", str(tmp_path), "--port", str(port)], capture_output=True, text=True,
                              timeout=30)
    assert done.returncode == 2 and "Address already in use" in done.stderr and "choose another --port" in done.stderr


def _get(url: str, path: str, host: str | None = None) -> int:
    address = url.split("//", 1)[1].split("/", 1)[0]
    conn = http.client.HTTPConnection(address, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host or address})
        return conn.getresponse().status
    finally:
        conn.close()


def test_only_listed_runs_and_their_reports_are_served(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    started_store(run).close()
    (run / "reports").mkdir()
    (run / "reports" / "results.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("not for the dashboard")
    proc, url = start_dashboard(tmp_path / "runs")
    try:
        assert _get(url, "/run/r1") == 200
        assert _get(url, "/run/r1/reports/results.json") == 200
        assert _get(url, "/run/r1/reports/evidence.sqlite") == 404
        assert _get(url, "/run/r1/reports/..%2F..%2F..%2Fsecret.txt") == 404
        assert _get(url, "/run/../secret.txt") == 404
        assert _get(url, "/run/r1/chart/anything.svg") == 404
        assert _get(url, "/", host="attacker.example") == 403
        assert _get(url, "/", host="localhost:1") == 200
    finally:
        stop(proc)
