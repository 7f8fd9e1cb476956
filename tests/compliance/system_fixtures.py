"""Helpers for the zone-and-conduit tests: system files, real servers behind real relays, run folders.

Servers and relays are real processes on 127.0.0.1 (pymodbus behind tests/targets/policy_relay.py),
started on free ports and stopped by PID. `record_fuzz_run` writes a run folder through the
evidence store exactly as a campaign does, for worked examples whose outcome must be fixed.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from targets.servers import HOST, free_port, script, start_server, stop_server

from otfuzz.store.evidence import EvidenceStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "three-zone" / "system.yaml"


def write_system(folder: Path, text: str, name: str = "system.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def otfuzz(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the otfuzz command line in a child process (bounded in time)."""
    return subprocess.run([sys.executable, "-m", "otfuzz.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@contextlib.contextmanager
def servers() -> Iterator[Any]:
    """A factory of real servers and relays on loopback; every one is stopped on exit."""
    started: list[subprocess.Popen[bytes]] = []

    class Factory:
        def modbus(self) -> int:
            port = free_port()
            started.append(start_server([*script("pymodbus_server.py"), "--port", str(port)], port))
            return port

        def relay(self, upstream: int, allow_fc: Sequence[int] = (1, 2, 3, 4), mode: str = "exception", leak: bool = False) -> int:
            port = free_port()
            argv = [*script("policy_relay.py"), "--listen", str(port), "--upstream", f"{HOST}:{upstream}",
                    "--allow-fc", ",".join(map(str, allow_fc)), "--mode", mode] + (["--leak"] if leak else [])
            started.append(start_server(argv, port))
            return port

        def script(self, name: str, *args: str) -> int:
            port = free_port()
            started.append(start_server([*script(name), "--port", str(port), *args], port))
            return port

    try:
        yield Factory()
    finally:
        for proc in started:
            stop_server(proc)


def record_fuzz_run(run_dir: Path, port: int, groups: dict[str, int], anomalies: Sequence[tuple[str, str]] = ()) -> Path:
    """A completed fuzz run against modbus://127.0.0.1:PORT with these cases per group and anomalies."""
    run_dir.mkdir(parents=True)
    store = EvidenceStore.create(run_dir)
    try:
        store.set_meta("campaign", {"id": "worked-example", "kind": "fuzz", "seed": 0, "config": {}, "config_sha256": "0" * 64,
                                    "started_at": "2025-01-01T00:00:00.000+00:00", "ended_at": "2025-01-01T00:10:00.000+00:00",
                                    "status": "completed", "host": {}})
        store.set_meta("tool", {"name": "otfuzz", "version": "test"})
        store.set_meta("target", {"url": f"modbus://127.0.0.1:{port}", "protocol": "modbus", "address": "127.0.0.1", "port": port})
        for group, cases in groups.items():
            store.count(group, "normal", cases)
        for n, (group, cls) in enumerate(anomalies):
            store.add_anomaly(n, group, cls, {"case_id": n, "group": group, "class": cls, "description": "worked example"})
        store.flush(sum(groups.values()), 600.0)
    finally:
        store.close()
    return run_dir
