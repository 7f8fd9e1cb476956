"""Fixtures of the stress tests: the project's degrading server and pymodbus on loopback, and a
helper that runs a short stress test into a fresh run folder and returns its results document."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otfuzz.report.results import load_results
from otfuzz.stress.runner import run_stress
from otfuzz.stress.runner import StressConfig
from otfuzz.stress.verdicts import Thresholds
from targets.servers import HOST, free_port, script, start_server, stop_server


def degrading_argv(port: int, capacity: float | None = None, recovery: float | None = None, leak: bool = False) -> list[str]:
    argv = [*script("degrading_server.py"), "--port", str(port)]
    if capacity is not None:
        argv += ["--capacity", str(capacity)]
    if recovery is not None:
        argv += ["--recovery", str(recovery)]
    if leak:
        argv.append("--leak")
    return argv


@pytest.fixture
def degrading_server() -> Iterator[Callable[..., tuple[str, int]]]:
    """Factory: start degrading_server.py with a capacity (req/s) and a recovery time; returns (host, port)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(capacity: float | None = None, recovery: float | None = None, leak: bool = False) -> tuple[str, int]:
        port = free_port()
        procs.append(start_server(degrading_argv(port, capacity, recovery, leak), port))
        return HOST, port

    try:
        yield start
    finally:
        for proc in procs:
            stop_server(proc)


# Short and fast: 1 s steps, a 20 Hz essential function, small levels.
FAST = dict(cadence=0.05, deadline=0.05, step_duration=1.0, level1_rate=40.0, level2_rate=160.0,
            level1_connections=4, level2_connections=16, level1_connect_rate=10.0, level2_connect_rate=40.0)


def stress(tmp_path: Path, target: str, groups: list[str], thresholds: Thresholds | None = None,
           **overrides: Any) -> tuple[str, dict[str, Any], Path]:
    """Run a short stress test; returns (status, results document, run folder)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    options = {**FAST, **overrides}
    config = StressConfig(target=target, groups=groups, thresholds=thresholds or Thresholds(recovery_window=6.0), **options)
    status, _, _ = run_stress(config, run_dir)
    return status, load_results(run_dir), run_dir
