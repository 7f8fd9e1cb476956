"""What watching costs: campaign throughput on a real pymodbus with and without a dashboard whose
event streams a few browsers hold open, and how long one dashboard snapshot, runs list and
chart take to read from the store.

Prints figures; asserts nothing (benchmarks are not tests). Every loop is bounded in time.

    .venv/bin/python bench/dashboard.py [--seconds 8] [--clients 4] [--repeat 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from targets.servers import OTFUZZ, free_port, script, start_server, stop_server  # noqa: E402

from otfuzz.dashboard.data import CHARTS, RunsReader  # noqa: E402
from otfuzz.store.evidence import EvidenceStore  # noqa: E402


def campaign(port: int, run: Path, seconds: float) -> float:
    """Cases per second of one campaign (no confirmation phase, so only fuzzing is timed)."""
    subprocess.run([*OTFUZZ, "run", f"modbus://127.0.0.1:{port}", "--duration", f"{seconds}s", "--seed", "1", "--out", str(run),
                    "--quiet", "--no-confirm"], check=True, stdout=subprocess.DEVNULL, timeout=seconds + 60)
    store = EvidenceStore.open(run, read_only=True)
    try:
        cases = sum(sum(r.values()) for r in store.counts().values())
        meta = store.get_meta("campaign")
    finally:
        store.close()
    return cases / float(meta.get("fuzzing_s") or meta.get("elapsed_s") or seconds)


def hold_streams(url: str, clients: int, until: float) -> list[int]:
    """`clients` threads each reading the run's event stream until `until`; events each received."""
    received = [0] * clients

    def read(i: int) -> None:
        while time.monotonic() < until:
            try:
                with urllib.request.urlopen(url, timeout=5) as stream:
                    while time.monotonic() < until:
                        if stream.readline().startswith(b"data:"):
                            received[i] += 1
            except OSError:
                time.sleep(0.2)

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    return received


def timed(job, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        job()
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    server = start_server([*script("pymodbus_server.py"), "--port", str(port)], port)
    dashboard = None
    try:
        with tempfile.TemporaryDirectory(prefix="otfuzz-bench-dashboard-") as tmp:
            runs = Path(tmp)
            alone = campaign(port, runs / "alone", args.seconds)
            dashboard = subprocess.Popen([*OTFUZZ, "dashboard", str(runs), "--port", "0"], stdout=subprocess.PIPE, text=True)
            assert dashboard.stdout is not None
            url = re.search(r"(http://\S+)", dashboard.stdout.readline()).group(1)  # type: ignore[union-attr]
            received = hold_streams(f"{url}run/watched/events", args.clients, time.monotonic() + args.seconds + 5)
            watched = campaign(port, runs / "watched", args.seconds)
            print(f"campaign on pymodbus, {args.seconds:g} s: {alone:8.0f} cases/s alone, {watched:8.0f} cases/s with "
                  f"{args.clients} event streams open ({watched / alone - 1:+.1%}); events received per stream: {received}")
            reader = RunsReader(runs)
            run = runs / "watched"
            findings = len(reader.snapshot(run)["findings_list"])
            print(f"snapshot of a run with {findings} findings: {timed(lambda: reader.snapshot(run), args.repeat):7.1f} ms")
            print(f"runs list of {len(reader.runs())} runs (verdicts cached): {timed(reader.rows, args.repeat):7.1f} ms")
            for name in CHARTS:
                print(f"chart {name}: {timed(lambda: reader.chart(run, name), args.repeat):7.1f} ms")
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(10)
        stop_server(server)


if __name__ == "__main__":
    main()
