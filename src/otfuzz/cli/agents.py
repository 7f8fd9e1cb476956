"""`otfuzz agent` and `otfuzz agents`, and run-plan's --broker mode: distributed campaigns.

Thin argument handling over `otfuzz.agents`: an unreachable broker or a bad option is one line
and exit 2 before anything is consumed or sent; the broker URL is only ever shown masked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from otfuzz.agents.broker import ENV_BROKER
from otfuzz.cli.common import add_scope_option, duration
from otfuzz.errors import OtfuzzError
from otfuzz.store.runs import EXIT_INTERRUPTED


def add_broker_option(parser: argparse.ArgumentParser, required_for: str) -> None:
    parser.add_argument("--broker", metavar="URL", default=None,
                        help=f"Redis broker URL, e.g. redis://broker:6379/0 ({required_for}; default ${ENV_BROKER}; "
                             "credentials in the URL are never printed)")


def broker_url(args: argparse.Namespace) -> str:
    from otfuzz.agents.broker import check_url

    return check_url(args.broker or os.environ.get(ENV_BROKER))


def add_commands(sub: Any) -> None:
    agent = sub.add_parser("agent", help="run plan entries sent to one zone (long-running; one per zone or more)")
    add_broker_option(agent, "required")
    agent.add_argument("--zone", required=True, help="the zone this agent serves: it consumes only that zone's queue")
    add_scope_option(agent)
    agent.add_argument("--work", type=Path, default=Path("otfuzz-agent"),
                       help="folder for run folders and the agent's key pair (default ./otfuzz-agent)")
    agent.add_argument("--key", type=Path, help="Ed25519 private key that signs the bundles (default WORK/agent.key, made on first start)")
    agent.add_argument("--name", help="agent name shown by otfuzz agents (default ZONE-HOST-PID)")
    agent.add_argument("--redeliver-after", type=duration, default=600.0,
                       help="a task whose agent has been silent this long goes to another agent of the zone (default 10m)")
    agent.set_defaults(func=cmd_agent)

    agents = sub.add_parser("agents", help="list the agents connected to a broker: zone, scope, what each runs")
    add_broker_option(agents, "required")
    agents.add_argument("--json", action="store_true", help="print the agents as JSON")
    agents.set_defaults(func=cmd_agents)


def cmd_agent(args: argparse.Namespace) -> int:
    from otfuzz.agents.worker import Agent, prepare_agent

    config = prepare_agent(broker_url(args), args.zone, args.scope, args.work, args.key, args.name, args.redeliver_after)
    Agent(config).serve()
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    from otfuzz.agents.broker import connect, get_json, lease_key, list_agents

    client = connect(broker_url(args))
    agents = list_agents(client)
    for record in agents:
        running = record.get("running")
        if running:
            lease = get_json(client, lease_key(running["plan"], running["entry"])) or {}
            running["cases"] = lease.get("cases")
    if args.json:
        print(json.dumps(agents, indent=2))
        return 0
    if not agents:
        print("no agents connected")
        return 0
    rows = [("name", "zone", "scope", "running", "seen")]
    for record in agents:
        running = record.get("running")
        what = "idle" if not running else f"{running['entry']} ({running.get('cases') or 0} cases, {time.time() - running['since']:.0f} s)"
        rows.append((record["name"], record["zone"], ",".join(record.get("scope") or []) or "loopback",
                     what, f"{record['seen_s_ago']:g} s ago"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    print(f"{len(agents)} agent{'s' if len(agents) != 1 else ''} in {len({r['zone'] for r in agents})} zone(s)")
    return 0


def add_run_plan_options(parser: argparse.ArgumentParser) -> None:
    """run-plan's distributed mode."""
    add_broker_option(parser, "send each entry to the agents of its zone instead of running it here")
    parser.add_argument("--trust", type=Path, metavar="KEYS", help="folder of the agents' public keys (*.pub): only bundles "
                        "they signed are merged (required with --broker)")
    parser.add_argument("--lost-after", type=duration, default=1800.0,
                        help="with --broker: report an entry lost once no agent has worked on it this long (default 30m)")


def run_plan_remote(args: argparse.Namespace, plan: Any, runs: Path, resume: bool) -> int:
    """run-plan --broker: dispatch, wait, verify and unpack; the exit status as run-plan's."""
    from otfuzz.agents.coordinator import RemotePlanRunner, load_trust
    from otfuzz.compliance.plan import PLAN_FILE, plan_exit_status, write_plan

    url = broker_url(args)
    if args.trust is None:
        raise OtfuzzError("run-plan --broker needs --trust KEYS/, the folder of the agents' public keys")
    if args.scope:
        raise OtfuzzError("run-plan --broker takes no --scope: each agent's scope is set where it runs (otfuzz agent --scope)")
    trust = load_trust(args.trust)
    tester = {"operator": args.operator, "organisation": args.organisation, "independence": args.independence}
    runner = RemotePlanRunner(plan, runs, url, trust, args.lost_after, tester)
    runner.check()
    if not resume:
        from otfuzz.store.runs import prepare_run_dir

        prepare_run_dir(runs)
        write_plan(plan, runs / PLAN_FILE)
    try:
        outcomes = runner.run()
    except KeyboardInterrupt:
        print(f"interrupted; the agents carry on. Collect their results with: otfuzz run-plan --resume {runs} --broker URL "
              f"--trust {args.trust}", file=sys.stderr)
        return EXIT_INTERRUPTED
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    print(f"plan finished: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}; runs in {runs}")
    status = plan_exit_status(outcomes)
    if status:
        bad = sum(counts.get(k, 0) for k in ("failed", "error", "refused", "rejected", "lost", "interrupted"))
        print(f"otfuzz: error: {bad} entries did not complete; see {runs}/plan-status.json", file=sys.stderr)
    return status
