"""Findings against the project's faulty Modbus server: how many planted defects a campaign
reports as distinct findings, how many it confirms, how soon it has met every one, and how much
of the campaign it then spends meeting them again (known-finding suppression).

The server has five defects, each reached through many inputs (see tests/targets/faulty_modbus.py):
a crash with a Python traceback on any read whose range runs past 65535, a C++-style abort on
any write-multiple whose byte count disagrees with its quantity, a hang on any truncated write,
a slow reply on every read-input-registers request, a malformed reply on every
read-discrete-inputs request. otfuzz starts and restarts it (--target-cmd).

With --healthy, the same campaign against a plain pymodbus server instead: no defect is
planted, so every finding is one of pymodbus's own leniencies (it acts on out-of-spec input, or
answers some requests oddly); the figures are how many findings, how many behaviours and how
many request types each finding covers (one leniency of a shared layer should be one finding).

Prints figures; asserts nothing (benchmarks are not tests). Bounded by --seconds per run.

    .venv/bin/python bench/findings.py [--seconds 120] [--seeds 1,2,3] [--healthy]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from targets.servers import TARGETS, free_port  # noqa: E402

from otfuzz.cli import main as otfuzz_main  # noqa: E402
from otfuzz.report.results import load_results  # noqa: E402

PLANTED = {
    "overflow-crash": (("--defect", "overflow-crash"), lambda f: f["class"] == "crash" and "OverflowError" in _report(f)),
    "count-abort": (("--defect", "count-abort"), lambda f: f["class"] == "crash" and "length_error" in _report(f)),
    "truncated-write-hang": (("--defect", "truncated-write-hang"), lambda f: f["class"] in ("hang", "unresponsive-after")),
    "slow-read-input-registers": (("--fault", "slow:4"), lambda f: f["class"] == "slow-reply"),
    "malformed-read-discrete-inputs": (("--fault", "malformed:2"), lambda f: f["class"] == "malformed-reply"),
}


def _report(finding: dict) -> str:
    return str((finding.get("target_evidence") or {}).get("report"))


def campaign(seconds: float, seed: int, work: Path) -> dict:
    port = free_port()
    server = [sys.executable, str(TARGETS / "faulty_modbus.py"), "--port", str(port), "--hang-seconds", "3", "--slow-ms", "400"]
    for args, _ in PLANTED.values():
        server += list(args)
    run = work / f"seed-{seed}"
    otfuzz_main(["run", f"modbus://127.0.0.1:{port}", "--duration", f"{seconds}s", "--seed", str(seed), "--out", str(run),
                 "--quiet", "--target-cmd", shlex.join(server), "--confirm-time", "60"])
    return load_results(run)


def healthy_campaign(seconds: float, seed: int, work: Path) -> dict:
    port = free_port()
    server = [sys.executable, str(TARGETS / "pymodbus_server.py"), "--port", str(port)]
    run = work / f"healthy-{seed}"
    otfuzz_main(["run", f"modbus://127.0.0.1:{port}", "--duration", f"{seconds}s", "--seed", str(seed), "--out", str(run),
                 "--quiet", "--target-cmd", shlex.join(server), "--confirm-time", "60"])
    return load_results(run)


def healthy_figures(doc: dict) -> str:
    findings = doc["findings"]
    by_class = Counter(f["class"] for f in findings)
    spread = sorted((len(f.get("request_types") or []) for f in findings), reverse=True)
    return (f"{len(findings)} findings ({dict(by_class)}) showing {len({f['behaviour'] for f in findings})} behaviours, "
            f"from {len(doc['anomalies'])} anomalies in {doc['totals']['cases']} cases; "
            f"request types per finding, largest first: {spread[:8]}; "
            f"{sum(1 for f in findings if f['confirmation']['status'] == 'confirmed')} confirmed by replay")


def figures(doc: dict) -> dict:
    findings = doc["findings"]
    matched = {name: [f for f in findings if test(f)] for name, (_, test) in PLANTED.items()}
    first_seen = {}
    for name, found in matched.items():
        ids = [a for f in found for a in doc["anomalies"] if a["finding_id"] == f["id"]]
        if ids:
            first_seen[name] = min(a["elapsed_s"] for a in ids)
    fuzzing = float(doc["campaign"].get("fuzzing_s") or doc["campaign"]["elapsed_s"])
    confirmed_at = [f["confirmed_elapsed_s"] for f in findings if f.get("confirmed_elapsed_s") is not None]
    after = fuzzing - min(confirmed_at) if confirmed_at else 0.0
    return {
        "planted": len(PLANTED),
        "reported": sum(1 for found in matched.values() if found),
        "findings": len(findings),
        "spurious": len(findings) - sum(len(found) for found in matched.values()),
        "confirmed": sum(1 for f in findings if f["confirmation"]["status"] == "confirmed"),
        "anomalies": len(doc["anomalies"]),
        "cases": doc["totals"]["cases"],
        "suppressed": doc["totals"]["replies"].get("suppressed", 0),
        "last_first_occurrence_s": max(first_seen.values()) if first_seen else None,
        "known_share": doc["totals"]["known_finding_s"] / after if after > 0 else 0.0,
        "per_defect": {name: len(found) for name, found in matched.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="campaign length per seed (default 120)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    parser.add_argument("--healthy", action="store_true", help="against plain pymodbus: no planted defect")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="otfuzz-bench-findings-") as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            if args.healthy:
                print(f"seed {seed}, healthy pymodbus: {healthy_figures(healthy_campaign(args.seconds, seed, Path(tmp)))}")
                continue
            f = figures(campaign(args.seconds, seed, Path(tmp)))
            last = "n/a" if f["last_first_occurrence_s"] is None else f"{f['last_first_occurrence_s']:.1f} s"
            print(f"seed {seed}: {f['planted']} planted defects, {f['reported']} reported as findings "
                  f"({f['findings']} findings, {f['spurious']} not a planted defect), {f['confirmed']} confirmed by replay; "
                  f"{f['anomalies']} anomalies in {f['cases']} cases ({f['suppressed']} held back as known); "
                  f"last first occurrence at {last}; {100 * f['known_share']:.1f}% of the time after the first "
                  f"confirmation spent on known findings")
            print(f"  findings per planted defect: {f['per_defect']}")


if __name__ == "__main__":
    main()
