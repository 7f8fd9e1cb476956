"""What the speed techniques cost in detection: the same campaign (target, seed, number of cases)
at defaults and with `--no-pipeline` (no learned silence, no sync request, no spare connection,
no pipelining: every faulty frame waited for in full), compared finding by finding.

A technique that hid answers would show as finding keys met only without it, run after run. Keys
met in one run but not the other by chance (a rare rule combination the generator reached once)
differ from seed to seed in both directions: the two runs' cases part ways, since what a case
observes (a silence proven in 1 ms or waited out for 5) feeds the choice of later cases.

So `--verify-synced N` also checks the sync request directly: it records every frame a defaults
campaign judged silent because the request sent right behind it was answered first, then sends
up to N of them again, each alone on a fresh connection to a fresh target, without a sync, and
waits `--wait` seconds (default 0.05, ten times the usual silence timeout) for an answer. Each
one answered there is a silence the sync may have made up. Prints per seed the rate of each run, the findings
of each, and the keys only one of them has; asserts nothing (benchmarks are not tests). Every
campaign is bounded by its case count.

    .venv/bin/python bench/detection.py [--cases 3000] [--seeds 3,4,5] [--only dnp3py,pymodbus]
        [--verify-synced 500 [--wait 0.05]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from targets.servers import free_port  # noqa: E402

from otfuzz.cli import main as otfuzz_main  # noqa: E402
from otfuzz.report.results import load_results  # noqa: E402

TARGETS = {
    "dnp3py": ([sys.executable, str(ROOT / "tests" / "targets" / "dnp3_outstation.py")], "dnp3://127.0.0.1:{port}?outstation=1&master=2"),
    "pymodbus": ([sys.executable, "-m", "otfuzz.demo", "serve"], "modbus://127.0.0.1:{port}"),
}


def campaign(name: str, seed: int, cases: int, extra: list[str]) -> dict[str, Any]:
    command, url = TARGETS[name]
    port = free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        with contextlib.redirect_stdout(sys.stderr):
            status = otfuzz_main(["run", url.format(port=port), "--cases", str(cases), "--seed", str(seed), "--out", str(run),
                                  "--quiet", "--target-cmd", shlex.join([*command, "--port", str(port)]), *extra])
        doc = load_results(run)
    if status != 0:
        raise SystemExit(f"{name} campaign (seed {seed}{' ' + ' '.join(extra) if extra else ''}) ended with status {status}")
    return {"per_s": round(doc["totals"]["cases"] / doc["campaign"]["fuzzing_s"], 1), "findings": len(doc["findings"]),
            "keys": sorted({f["key"] for f in doc["findings"]})}


def synced_frames(name: str, seed: int, cases: int) -> list[bytes]:
    """The frames a defaults campaign judged silent by the sync request's answer (recorded by
    wrapping the transport's synced exchange: a benchmark's look inside, not a product feature)."""
    from otfuzz.transport import tcp

    seen: list[bytes] = []
    original = tcp.Connection.exchange_synced

    async def recording(self: Any, frame: bytes, sync: bytes, timeout: float, meanwhile: Any = None) -> Any:
        exchange, in_step = await original(self, frame, sync, timeout, meanwhile)
        if in_step and exchange.outcome == "timeout" and not exchange.leftover:
            seen.append(frame)
        return exchange, in_step

    tcp.Connection.exchange_synced = recording  # type: ignore[method-assign]
    try:
        campaign(name, seed, cases, [])
    finally:
        tcp.Connection.exchange_synced = original  # type: ignore[method-assign]
    return seen


def answered_alone(name: str, frames: list[bytes], wait: float) -> tuple[int, list[str]]:
    """Send each frame alone (a fresh connection, no sync) to one fresh target; how many were answered."""
    import asyncio

    from targets.servers import start_server, stop_server

    from otfuzz.protocols import protocol_for
    from otfuzz.transport.target import parse_target
    from otfuzz.transport.tcp import Connection

    command, url = TARGETS[name]
    port = free_port(socket.SOCK_STREAM)
    protocol = protocol_for(parse_target(url.format(port=port)))
    proc = start_server([*command, "--port", str(port)], port)

    async def run() -> tuple[int, list[str]]:
        answered, examples = 0, []
        for frame in frames:
            conn = await Connection.open("127.0.0.1", port, protocol.session(), 2.0)
            try:
                exchange = await conn.exchange(frame, wait, True)
            finally:
                conn.close()
            if exchange.outcome == "reply" or exchange.leftover:
                answered += 1
                examples.append(frame.hex())
        return answered, examples[:5]

    try:
        return asyncio.run(run())
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases per campaign (default 3000)")
    parser.add_argument("--seeds", default="3,4,5", help="comma-separated seeds (default 3,4,5)")
    parser.add_argument("--only", help=f"comma-separated targets (default all: {','.join(TARGETS)})")
    parser.add_argument("--verify-synced", type=int, default=0, metavar="N",
                        help="also send up to N frames judged silent by the sync again, alone and waited for")
    parser.add_argument("--wait", type=float, default=0.05, help="seconds each of them is waited for (default 0.05)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown target {unknown[0]} (targets: {', '.join(TARGETS)})")
    out: dict[str, Any] = {}
    for name in names:
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            fast, full = campaign(name, seed, args.cases, []), campaign(name, seed, args.cases, ["--no-pipeline"])
            rows.append({"seed": seed, "defaults_per_s": fast["per_s"], "no_pipeline_per_s": full["per_s"],
                         "defaults_findings": fast["findings"], "no_pipeline_findings": full["findings"],
                         "both": len(set(fast["keys"]) & set(full["keys"])),
                         "only_defaults": sorted(set(fast["keys"]) - set(full["keys"])),
                         "only_no_pipeline": sorted(set(full["keys"]) - set(fast["keys"]))})
        out[name] = {"runs": rows}
        if args.verify_synced:
            seed = int(args.seeds.split(",")[0])
            frames = synced_frames(name, seed, args.cases)
            sample = frames[: args.verify_synced]
            answered, examples = answered_alone(name, sample, args.wait) if sample else (0, [])
            out[name]["synced"] = {"seed": seed, "judged_silent_by_sync": len(frames), "sent_again": len(sample),
                                   "wait_s": args.wait, "answered_alone": answered, "examples": examples}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
