"""Search power against the project's faulty Modbus server: cases to the first detection of each
planted defect, per strategy, over three seeds; the default schedule's findings with all ten
defects planted at once; pairwise coverage reached in the first 60 s against pymodbus.

The faulty server's ten defects (tests/targets/faulty_modbus.py) are of the kinds real devices
have: two crashes with a report, a hang, a slow and a malformed reply (one request type each), a
crash that needs two fields off their defaults (pair-crash), a magic value (magic-crash), state
an earlier request on the same connection set (state-crash), connection exhaustion and a
slow-read hang. Each strategy runs alone per seed, with every defect planted; a defect's figure is
the case id of the first anomaly of the finding that matches it (or "-" if none did).

Prints figures; asserts nothing (benchmarks are not tests). Every run is bounded in cases and time.

    .venv/bin/python bench/search.py [--seconds 60] [--default-seconds 300] [--seeds 1,2,3] [--skip-default]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from targets.servers import TARGETS, free_port, script, start_server, stop_server  # noqa: E402

from otfuzz.cli import main as otfuzz_main  # noqa: E402
from otfuzz.report.results import load_results  # noqa: E402

Finding = dict[str, Any]


def _report(f: Finding) -> str:
    return str((f.get("target_evidence") or {}).get("report"))


def _frames(f: Finding) -> list[bytes]:
    return [bytes.fromhex(h) for h in (f.get("reproducer") or {}).get("frames_hex", [])]


def _last(f: Finding) -> bytes:
    frames = _frames(f)
    return frames[-1] if frames else b""


def _hang(f: Finding) -> bool:
    return f["class"] in ("hang", "unresponsive-after")


def _bare_crash(f: Finding) -> bool:
    return f["class"] == "crash" and not (f.get("target_evidence") or {}).get("report")


PLANTED: dict[str, tuple[tuple[str, ...], Callable[[Finding], bool]]] = {
    "overflow-crash": (("--defect", "overflow-crash"), lambda f: f["class"] == "crash" and "OverflowError" in _report(f)),
    "count-abort": (("--defect", "count-abort"), lambda f: f["class"] == "crash" and "length_error" in _report(f)),
    "truncated-write-hang": (("--defect", "truncated-write-hang"),
                             lambda f: _hang(f) and len(_last(f)) >= 8 and _last(f)[7] in (5, 6, 15, 16)),
    "slow-read-input-registers": (("--fault", "slow:4"), lambda f: f["class"] == "slow-reply"),
    "malformed-read-discrete-inputs": (("--fault", "malformed:2"), lambda f: f["class"] == "malformed-reply"),
    "pair-crash": (("--defect", "pair-crash"),
                   lambda f: _bare_crash(f) and len(_last(f)) >= 12 and _last(f)[6] == 0 and _last(f)[7] == 3),
    "magic-crash": (("--defect", "magic-crash"), lambda f: f["class"] == "crash" and "KeyError" in _report(f)),
    "state-crash": (("--defect", "state-crash"),
                    lambda f: _bare_crash(f) and len(_frames(f)) >= 2 and _last(f)[7:8] == b"\x03"),
    "connection-exhaustion": (("--defect", "connection-exhaustion", "--max-clients", "30"),
                              lambda f: f["request_type"] in ("connection:many-connections", "connection:half-closed")),
    "slow-read-hang": (("--defect", "slow-read-hang"),
                       lambda f: _hang(f) and (f["request_type"] == "connection:slow-read" or 0 < len(_last(f)) < 7)),
}
STRATEGIES = ("boundary", "structural", "mutation", "sequence", "pairs", "connection")


def campaign(work: Path, name: str, seed: int, seconds: float, groups: str | None, cases: int | None = None) -> dict[str, Any]:
    port = free_port()
    server = [sys.executable, str(TARGETS / "faulty_modbus.py"), "--port", str(port), "--hang-seconds", "2", "--slow-ms", "400"]
    for args, _ in PLANTED.values():
        server += list(args)
    run = work / f"{name}-{seed}"
    argv = ["run", f"modbus://127.0.0.1:{port}", "--duration", f"{seconds}s", "--seed", str(seed), "--out", str(run),
            "--quiet", "--target-cmd", shlex.join(server), "--max-connections", "60"]
    if groups:
        argv += ["--groups", groups]
    if cases:
        argv += ["--cases", str(cases)]
    otfuzz_main(argv)
    return load_results(run)


def first_detection(doc: dict[str, Any]) -> dict[str, int | None]:
    """Per planted defect: the case id of the first anomaly of a finding that matches it."""
    first: dict[int, int] = {}
    for anomaly in doc["anomalies"]:
        fid = anomaly.get("finding_id")
        if fid is not None:
            first[fid] = min(first.get(fid, anomaly["case_id"]), anomaly["case_id"])
    out: dict[str, int | None] = {}
    for name, (_, test) in PLANTED.items():
        ids = [first[f["id"]] for f in doc["findings"] if test(f) and f["id"] in first]
        out[name] = min(ids) if ids else None
    return out


def distinct(doc: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(planted defects reported as a finding of the right class, findings matching none, missed)."""
    findings = doc["findings"]
    matched = {name: [f for f in findings if test(f)] for name, (_, test) in PLANTED.items()}
    hit = {f["id"] for found in matched.values() for f in found}
    return (sum(1 for found in matched.values() if found), sum(1 for f in findings if f["id"] not in hit),
            [name for name, found in matched.items() if not found])


def pymodbus_coverage(seconds: float, work: Path) -> dict[str, Any]:
    port = free_port()
    server = start_server([*script("pymodbus_server.py"), "--port", str(port)], port)
    try:
        run = work / "pairs-pymodbus"
        otfuzz_main(["run", f"modbus://127.0.0.1:{port}", "--duration", f"{seconds}s", "--groups", "pairs", "--out", str(run),
                     "--quiet"])
        return load_results(run)["search"]["pairs"]
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per strategy and seed (default 60)")
    parser.add_argument("--default-seconds", type=float, default=300.0, help="default schedule per seed (default 300)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--skip-default", action="store_true", help="leave out the default-schedule runs")
    parser.add_argument("--only", default=",".join(STRATEGIES), help="strategies to run (comma-separated; empty: none)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="otfuzz-bench-search-") as tmp:
        work = Path(tmp)
        print(f"cases to first detection (strategy alone, {args.seconds:g} s per seed, seeds {args.seeds}; '-' = not reached)")
        names = list(PLANTED)
        print(f"{'strategy':<11} " + " ".join(f"{n[:14]:>14}" for n in names))
        for strategy in [s for s in args.only.split(",") if s]:
            cells: dict[str, list[str]] = {n: [] for n in names}
            for seed in seeds:
                found = first_detection(campaign(work, strategy, seed, args.seconds, strategy))
                for n in names:
                    cells[n].append("-" if found[n] is None else str(found[n]))
            print(f"{strategy:<11} " + " ".join(f"{'/'.join(cells[n]):>14}" for n in names), flush=True)
        if not args.skip_default:
            print(f"\ndefault schedule, {args.default_seconds:g} s, all ten defects planted:")
            for seed in seeds:
                started = time.monotonic()
                doc = campaign(work, "default", seed, args.default_seconds, None)
                reported, spurious, missed = distinct(doc)
                found = first_detection(doc)
                print(f"  seed {seed}: {reported}/10 reported as distinct findings of the right class, {spurious} other "
                      f"findings, missed {missed or 'none'}; {doc['totals']['cases']} cases in "
                      f"{time.monotonic() - started:.0f} s; first detection by case id {found}", flush=True)
        coverage = pymodbus_coverage(60.0, work)
        print(f"\npairwise coverage in 60 s against pymodbus: {coverage['covered']}/{coverage['total']} pairs "
              f"({100 * coverage['covered'] / max(1, coverage['total']):.1f}%)")
        for name, row in sorted(coverage["by_request_type"].items()):
            print(f"  {name}: {row['covered']}/{row['total']}")


if __name__ == "__main__":
    main()
