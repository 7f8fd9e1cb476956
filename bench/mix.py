"""Where the default mix's time goes against the minimal responder: each test group alone,
beside the bare request/response loop, and what the 85% goal (issue 12) would need of them.

bench/throughput.py compares the whole default mix with the bare loop (bench/responder.py, a
request answered at once). This script runs each group of that mix alone for the same time, in
this process, and counts for each:

- cases/s and its ratio to the bare loop's requests/s, measured just before and just after the
  group (this machine's speed drifts by up to 2x within minutes: only neighbours compare), and
  the bare loop's own CPU per request;
- requests a case puts on the wire, and connections it opens (a tap on the TCP transport, as in
  bench/wire.py): a frame that breaks framing leaves the target's stream out of step, so the
  next case gets a fresh connection;
- this process's CPU per case while fuzzing (generation, judging, the store, the transport)
  and anomalies per case; and, apart, the CPU of generating a case alone (no network: the
  generator, its rules and triggers, as the campaign prepares a case, over `--generate` ids). Campaigns run at the defaults but `--confirm-time 1`: findings are
  confirmed while fuzzing within their share, as always, and what is left gets 1 s after it.

Then a model: the groups' weights per 100 cases (otfuzz.engine.strategies.GROUPS) and their own
rates give the rate the mix would have without connection cases; connection cases take their
share of the time (CONNECTION_SHARE of a campaign of 20 s or more; in a shorter one, that share
of 20 s, as the default run's `connection_share` shows). The model takes the long campaign's
share, the smallest. Last, what 85% of the bare loop would leave each case: the sequence
group's cases carry several requests that each wait for their answer in order (the state they
build is the point), so at the bare loop's own pace per request they take a fixed part of the
budget; the rest is what every other case may cost, wire and CPU. And since one process on one
core spends at most a case's wall time on it, the goal's time per case, less the case's
exchanges at the bare loop's own CPU per request, is the CPU left to make, judge and record it.

Prints JSON; asserts nothing (benchmarks are not tests). Every loop and campaign is bounded in time.

    .venv/bin/python bench/mix.py [--seconds 5] [--bare-seconds 3] [--generate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from throughput import bare_loop, campaign  # noqa: E402
from targets.servers import free_port, start_server, stop_server  # noqa: E402

from otfuzz.engine.campaign import CONNECTION_SHARE, Campaign  # noqa: E402
from otfuzz.engine.feedback import Feedback  # noqa: E402
from otfuzz.engine.findings import trigger_of  # noqa: E402
from otfuzz.engine.generator import CaseGenerator  # noqa: E402
from otfuzz.engine.rules import RuleMemo  # noqa: E402
from otfuzz.engine.strategies import GROUPS  # noqa: E402
from otfuzz.engine.values import Dictionary  # noqa: E402
from otfuzz.protocols import protocol_for  # noqa: E402
from otfuzz.transport import tcp  # noqa: E402
from otfuzz.transport.target import parse_target  # noqa: E402

GOAL = 0.85
ALONE = [name for name in GROUPS if name != "connection"]  # (connection cases hold for seconds: a share of the time)


class _Tap:
    """Counts the TCP connections otfuzz's transport makes while it is on, and notes them and
    this process's CPU time (from the campaign's start) when fuzzing ends: confirmation, after
    it, is not in the rate."""

    def __init__(self) -> None:
        self.opened = 0
        self.fuzzing_opened = 0
        self.fuzzing_cpu: float | None = None
        self._made = tcp._Wire.connection_made
        self._confirm = Campaign.confirm_pending

    def __enter__(self) -> _Tap:
        made, confirm, started = self._made, self._confirm, time.process_time()

        def counted(wire: tcp._Wire, transport: Any) -> None:
            self.opened += 1
            made(wire, transport)

        async def confirming(campaign: Campaign) -> None:
            self.fuzzing_cpu = time.process_time() - started
            self.fuzzing_opened = self.opened
            await confirm(campaign)

        tcp._Wire.connection_made = counted  # type: ignore[method-assign]
        Campaign.confirm_pending = confirming  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        tcp._Wire.connection_made = self._made  # type: ignore[method-assign]
        Campaign.confirm_pending = self._confirm  # type: ignore[method-assign]


def measure(url: str, seconds: float, groups: list[str]) -> dict[str, Any]:
    # as at the defaults, findings confirmed while fuzzing within their share; what is left
    # after it gets 1 s (not 120), outside the rate and the CPU figure
    extra = ["--confirm-time", "1", *(["--groups", ",".join(groups)] if groups else [])]
    with _Tap() as tap:
        rate, info = campaign(url, seconds, extra)
    assert tap.fuzzing_cpu is not None, "the campaign ended before confirmation"
    cpu = tap.fuzzing_cpu
    cases = info["cases"]
    sent = info["requests_sent"]
    return {"cases_per_s": round(rate, 1), "requests_per_s": info["requests_per_s"],
            "requests_per_case": round((sent.get("case_frames", 0) + sent.get("sync", 0)) / cases, 3),
            "connections_per_case": round(tap.fuzzing_opened / cases, 3),
            "cpu_us_per_case": round(cpu / cases * 1e6, 1),
            "anomalies_per_case": round(sum(info["anomalies"].values()) / cases, 3),
            "connection_share": round(info.get("connection_s", 0.0) / info["fuzzing_s"], 3),
            "cases": cases}


def generation_us(url: str, groups: list[str], cases: int) -> float:
    """CPU per case of making cases 0.. and preparing them as a campaign does (its rules and
    triggers, remembered per frame), with no target: a part of each case's CPU the bare loop
    never spends (the campaign does it while the target works, but on the same core)."""
    protocol = protocol_for(parse_target(url))
    generator = CaseGenerator(protocol, 1, groups or None, False, True, Feedback(Dictionary(protocol.dictionary())))
    rules, triggers = RuleMemo(protocol), {}
    cpu = time.process_time()
    for case_id in range(cases):
        case = generator.case(case_id)
        if case.pattern is None:
            for frame in case.frames:
                rules(frame)
                if frame not in triggers:
                    triggers[frame] = trigger_of(protocol, frame, rules)
    return (time.process_time() - cpu) / cases * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each group's campaign (default 5)")
    parser.add_argument("--bare-seconds", type=float, default=3.0, help="length of each bare loop (default 3)")
    parser.add_argument("--generate", type=int, default=20000, help="cases generated per group, no network (default 20000)")
    args = parser.parse_args()
    port = free_port()
    proc = start_server([sys.executable, str(HERE / "responder.py"), "--port", str(port)], port)
    url = f"modbus://127.0.0.1:{port}"
    protocol = protocol_for(parse_target(url))
    rows: dict[str, dict[str, Any]] = {}
    bare_cpu: list[float] = []  # this process's CPU per request of each bare loop

    def bare_rate() -> float:
        cpu = time.process_time()
        rate = asyncio.run(bare_loop(protocol, port, args.bare_seconds))
        bare_cpu.append((time.process_time() - cpu) / (rate * args.bare_seconds))
        return rate

    try:
        before = bare_rate()
        for name in [*ALONE, "default mix"]:
            row = measure(url, args.seconds, [name] if name in GROUPS else [])
            after = bare_rate()
            bare = (before + after) / 2
            row.update({"bare_loop_per_s": round(bare, 1), "ratio_to_bare_loop": round(row["cases_per_s"] / bare, 3),
                        "requests_ratio_to_bare_loop": round(row["requests_per_s"] / bare, 3)})
            rows[name] = row
            before = after
    finally:
        stop_server(proc)
    for name, row in rows.items():  # (after the wire: nothing between a campaign and its bare loops)
        row["generation_us_per_case"] = round(generation_us(url, [name] if name in GROUPS else [], args.generate), 1)
    mix = rows["default mix"]
    weights = {name: GROUPS[name] for name in ALONE}
    per_100 = sum(weight / rows[name]["cases_per_s"] for name, weight in weights.items())  # seconds per 100 such cases
    implied = sum(weights.values()) / per_100 * (1 - CONNECTION_SHARE)
    bare = mix["bare_loop_per_s"]
    sequence = rows["sequence"]
    allowed_per_100 = 100 / (GOAL * bare) * (1 - CONNECTION_SHARE)
    # the sequence cases at the bare loop's pace per request, and nothing else
    sequence_floor = weights["sequence"] * sequence["requests_per_case"] / bare
    others = sum(weight for name, weight in weights.items() if name != "sequence")
    model = {
        "weights_per_100_cases": GROUPS,
        "connection_share": CONNECTION_SHARE,
        "mix_from_groups_per_s": round(implied, 1),
        "mix_measured_per_s": mix["cases_per_s"],
        "goal_per_s": round(GOAL * bare, 1),
        "goal_us_per_case": round(allowed_per_100 / 100 * 1e6, 1),
        "sequence_floor_us_per_100_cases": round(sequence_floor * 1e6, 1),
        "left_per_other_case_us": round((allowed_per_100 - sequence_floor) / others * 1e6, 1),
        "bare_loop_us_per_request": round(1e6 / bare, 1),
        "bare_loop_cpu_us_per_request": round(statistics.median(bare_cpu) * 1e6, 1),
        # the same in the bare loop's round trips (whatever this machine's speed): a case sent
        # alone, waiting for its answer before the next goes out, takes at least one
        "left_per_other_case_in_round_trips": round((allowed_per_100 - sequence_floor) / others * bare, 3),
        "other_groups_us_per_case_now": {name: round(1e6 / rows[name]["cases_per_s"], 1)
                                         for name in weights if name != "sequence"},
        # One process on one core spends at most a case's wall time on it: the goal's time per
        # case is also its CPU budget. Less the exchanges themselves, at the bare loop's own cost
        # per request, that leaves this much for making, judging and recording a case:
        "cpu_left_beyond_the_exchanges_us_per_case": round(
            allowed_per_100 / 100 * 1e6 - mix["requests_per_case"] * statistics.median(bare_cpu) * 1e6, 1),
        "mix_cpu_us_per_case_now": mix["cpu_us_per_case"],
        "mix_generation_us_per_case": mix["generation_us_per_case"],
        "mix_connections_per_case": mix["connections_per_case"],
    }
    print(json.dumps({"url": url, "groups": rows, "model": model}, indent=2))


if __name__ == "__main__":
    main()
