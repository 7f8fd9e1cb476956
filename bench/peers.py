"""otfuzz beside a peer fuzzer: boofuzz 0.4.2 and otfuzz against the same pymodbus 3.16.1.

boofuzz is GPL-2, so it is never a dependency of otfuzz: this script installs it into a
throwaway virtual environment (`--venv`, default under /tmp) and runs a boofuzz Modbus/TCP
definition there (bench/peers_boofuzz.py). Each measurement gets a freshly started pymodbus on
127.0.0.1 (`python -m otfuzz.demo serve`), and the contestants are interleaved over several
rounds (their order rotating each round) so that a busy machine weighs on all alike:

- boofuzz at its defaults (a connection per case; it does not read replies),
- boofuzz reading a reply after every case (`receive_data_after_fuzz=True`, 5 s receive timeout),
- otfuzz at its defaults (concurrency 1; every reply read and classified; new findings replayed
  and minimised as they are met, which may take up to half of the fuzzing time),
- otfuzz with `--no-confirm` (anomalies recorded, no replay: the engine's own pace),
- otfuzz with `--concurrency 4`,
- `wire_ceiling`: the traffic of otfuzz's default campaign (recorded in that run) sent again by
  a client that does nothing else (bench/wire.py): what pymodbus allows that traffic at most,
  whatever reads and judges it. Cases over replay time.

otfuzz's cases/s is cases over fuzzing time, as in bench/throughput.py; `--confirm-time 1`
bounds the confirmation phase, which comes after fuzzing and is not in the rate. Prints the rates of
each round, the medians and the median of the per-round ratios to boofuzz's default rate.
Asserts nothing (benchmarks are not tests); every run is bounded in time.

    .venv/bin/python bench/peers.py [--rounds 3] [--seconds 30] [--only boofuzz,otfuzz]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from targets.servers import free_port, start_server, stop_server  # noqa: E402

from otfuzz.report.results import load_results  # noqa: E402

BOOFUZZ = "boofuzz==0.4.2"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "otfuzz-bench-boofuzz"


def boofuzz_python(venv: Path) -> Path:
    """The interpreter of a virtual environment holding boofuzz 0.4.2, made on first use."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m, sys; sys.exit(m.version('boofuzz') != '0.4.2')"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing {BOOFUZZ} into {venv} (benchmark only)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", BOOFUZZ], check=True)
    return python


def boofuzz(python: Path, read_replies: bool) -> Callable[[int, float, Path], dict[str, Any]]:
    def run(port: int, seconds: float, work: Path) -> dict[str, Any]:
        out = work / "boofuzz.json"
        argv = [str(python), str(HERE / "peers_boofuzz.py"), "--port", str(port), "--seconds", str(seconds), "--out", str(out)]
        if read_replies:
            argv.append("--read-replies")
        # boofuzz logs every case to stdout and to a SQLite file under its working directory
        subprocess.run(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 120, check=True)
        result: dict[str, Any] = json.loads(out.read_text())
        return {"per_s": result["per_s"], "cases": result["cases"], "seconds": round(result["seconds"], 2)}
    return run


def otfuzz(extra: list[str]) -> Callable[[int, float, Path], dict[str, Any]]:
    def run(port: int, seconds: float, work: Path) -> dict[str, Any]:
        out = work / "run"
        argv = [sys.executable, "-m", "otfuzz.cli", "run", f"modbus://127.0.0.1:{port}", "--duration", f"{seconds}s",
                "--seed", "1", "--out", str(out), "--quiet", "--confirm-time", "1", *extra]
        subprocess.run(argv, stdout=subprocess.DEVNULL, timeout=seconds + 120, check=True, env={**os.environ})
        doc = load_results(out)
        elapsed = doc["campaign"]["fuzzing_s"]
        return {"per_s": doc["totals"]["cases"] / elapsed, "cases": doc["totals"]["cases"], "seconds": round(elapsed, 2),
                "findings": doc["totals"]["findings"]}
    return run


def wire_ceiling(port: int, seconds: float, work: Path) -> dict[str, Any]:
    """What otfuzz's default campaign put on the wire, sent again by a client that does nothing
    else (bench/wire.py), against a second fresh pymodbus: the target's ceiling for that traffic."""
    events = work / "wire.pickle"
    subprocess.run([sys.executable, str(HERE / "wire.py"), "record", "--port", str(port), "--seconds", str(seconds),
                    "--out", str(events)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 120, check=True)
    server, again = pymodbus()
    try:
        out = subprocess.run([sys.executable, str(HERE / "wire.py"), "replay", "--port", str(again), "--events", str(events)],
                             capture_output=True, text=True, timeout=seconds + 300, check=True)
    finally:
        stop_server(server)
    result: dict[str, Any] = json.loads(out.stdout)
    return {key: result[key] for key in ("per_s", "cases", "seconds", "campaign_per_s", "short_reads", "connections")}


def pymodbus() -> tuple[subprocess.Popen[bytes], int]:
    """A freshly started pymodbus 3.16.1 (the demo target) and its port."""
    port = free_port()
    return start_server([sys.executable, "-m", "otfuzz.demo", "serve", "--port", str(port)], port), port


def measure(contestant: Callable[[int, float, Path], dict[str, Any]], seconds: float) -> dict[str, Any]:
    """One contestant against a freshly started pymodbus, stopped afterwards."""
    server, port = pymodbus()
    try:
        with tempfile.TemporaryDirectory(prefix="otfuzz-peers-") as work:
            return contestant(port, seconds, Path(work))
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each measurement (default 30; e.g. 5 for a quick look)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"throwaway venv for boofuzz (default {DEFAULT_VENV})")
    parser.add_argument("--only", help="comma-separated contestants (default all: boofuzz,boofuzz_reading_replies,otfuzz,"
                                       "otfuzz_no_confirm,otfuzz_concurrency_4,wire_ceiling)")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        raise SystemExit("--rounds must be 1 or more and --seconds positive")
    python = boofuzz_python(args.venv)
    contestants = {
        "boofuzz": boofuzz(python, read_replies=False),
        "boofuzz_reading_replies": boofuzz(python, read_replies=True),
        "otfuzz": otfuzz([]),
        "otfuzz_no_confirm": otfuzz(["--no-confirm"]),
        "otfuzz_concurrency_4": otfuzz(["--concurrency", "4"]),
        "wire_ceiling": wire_ceiling,
    }
    names = [n.strip() for n in args.only.split(",")] if args.only else list(contestants)
    unknown = [n for n in names if n not in contestants]
    if unknown:
        raise SystemExit(f"unknown contestant {unknown[0]} (contestants: {', '.join(contestants)})")
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: nobody always goes first
        results: dict[str, Any] = {}
        for name in order:
            started = time.perf_counter()
            results[name] = measure(contestants[name], args.seconds)
            results[name]["per_s"] = round(results[name]["per_s"], 1)
            print(f"round {r + 1} {name}: {results[name]['per_s']} cases/s ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        rounds.append(results)
    summary: dict[str, Any] = {"rounds": rounds, "median_per_s": {n: statistics.median(x[n]["per_s"] for x in rounds) for n in names}}
    if "boofuzz" in names:
        summary["median_ratio_to_boofuzz"] = {
            n: round(statistics.median(x[n]["per_s"] / x["boofuzz"]["per_s"] for x in rounds), 2) for n in names if n != "boofuzz"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
