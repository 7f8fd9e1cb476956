"""Dispatch overhead of distributed campaigns: what one broker costs per task, before any fuzzing.

Starts a Debian redis-server and real `otfuzz agent` processes (Celery workers) on loopback, then
measures with tasks an agent refuses at once (a target outside its scope), so the figures are
the coordinator + broker + agent path alone, not a campaign:

- publish: time for the coordinator to hand one task to the broker (send_task), median and p95;
- round trip: publish, agent receives, checks the entry, stores its result, coordinator reads it;
- burst: N tasks sent at once to one zone, until every result is back, with 1 and 2 agents.

Prints figures; asserts nothing (benchmarks are not tests). Bounded in count and time.

    .venv/bin/python bench/agents.py [--tasks 200] [--rounds 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "agents"))

from agent_fixtures import Agents, start_redis  # noqa: E402
from targets.servers import stop_server  # noqa: E402

from otfuzz.agents.broker import TASK_NAME, TASK_VERSION, make_app, zone_queue  # noqa: E402
from otfuzz.compliance.plan import PlanEntry  # noqa: E402


def refused_payload(n: int) -> dict:
    entry = PlanEntry(id=f"{n:05d}-fuzz-bench", kind="fuzz", target="modbus://10.255.0.1:502", protocol="modbus", asset="bench",
                      zone="bench", sl_t=[1] * 7, channels=[], from_zones=[], duration_s=1.0, groups=["boundary"])
    return {"version": TASK_VERSION, "plan_key": "bench", "entry": dataclasses.asdict(entry), "seed": 0, "system": {}, "tester": {}}


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"median {statistics.median(values) * 1000:.2f} ms, p95 {values[int(len(values) * 0.95) - 1] * 1000:.2f} ms"


def burst(app: object, n: int, timeout: float) -> float:
    t0 = time.perf_counter()
    sent = [app.send_task(TASK_NAME, args=[refused_payload(i)], queue=zone_queue("bench")) for i in range(n)]  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    for result in sent:
        result.get(timeout=max(0.1, deadline - time.monotonic()), interval=0.002)
    return n / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks per burst (default 200)")
    parser.add_argument("--rounds", type=int, default=50, help="publish and round-trip samples (default 50)")
    args = parser.parse_args()
    server, url = start_redis()
    root = Path(tempfile.mkdtemp(prefix="otfuzz-bench-agents-"))
    agents = Agents(url, root)
    try:
        app = make_app(url)
        publish = []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            app.send_task(TASK_NAME, args=[refused_payload(i)], queue=zone_queue("nobody"))
            publish.append(time.perf_counter() - t0)
        print(f"publish ({args.rounds} tasks): {ms(publish)}")
        agents.start("bench-1", "bench")
        burst(app, 5, 30)  # warm up the agent
        trips = []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            app.send_task(TASK_NAME, args=[refused_payload(i)], queue=zone_queue("bench")).get(timeout=30, interval=0.001)
            trips.append(time.perf_counter() - t0)
        print(f"round trip, 1 agent ({args.rounds} tasks): {ms(trips)}")
        print(f"burst of {args.tasks}, 1 agent: {burst(app, args.tasks, 120):.0f} tasks/s")
        agents.start("bench-2", "bench")
        burst(app, 5, 30)
        print(f"burst of {args.tasks}, 2 agents: {burst(app, args.tasks, 120):.0f} tasks/s")
        print("(2 CPU cores shared with other work; agents, broker and coordinator on one machine)")
    finally:
        agents.stop_all()
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
