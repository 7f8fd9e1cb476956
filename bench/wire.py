"""The target's own ceiling for otfuzz's traffic: record what a default campaign put on the wire,
then send exactly that again with nothing else to do.

`record` runs a default campaign (in this process) with a tap on its TCP connections: every
connect, every write and how many bytes came back on which connection. `replay` sends the same
writes on the same pattern of connections against a freshly started server, with blocking
sockets and no analysis at all: it waits only for the bytes the campaign got before it sent
again, and not at all where the campaign waited out a silence. Cases over replay time is what
any client could reach with this traffic against this server: the ceiling of "reading every
reply" at concurrency 1, whatever the client is written in. bench/peers.py runs it as the
contestant `wire_ceiling`.

    .venv/bin/python bench/wire.py record --port 15020 --seconds 10 --out /tmp/wire.pickle
    .venv/bin/python bench/wire.py replay --port 15021 --events /tmp/wire.pickle

Asserts nothing (benchmarks are not tests); the campaign is bounded in time and the replay in
events. A read that waits past `--timeout` (0.05 s) for bytes the campaign got counts as a short
read, and its wait is left out of the rate: 0 short reads say the replay met the same answers.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import pickle
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from otfuzz.cli import main as otfuzz_main
from otfuzz.report.results import load_results
from otfuzz.transport import tcp

Event = tuple[str, int, bytes | int]  # ("open", wire, 0), ("send", wire, data), ("recv", wire, count)


def record(port: int, seconds: float, out: Path) -> None:
    events: list[Event] = []
    times: list[float] = []
    ids: dict[int, int] = {}  # id() of a live wire -> its number (an id() is reused by later objects)
    numbers = itertools.count()
    made, send, received = tcp._Wire.connection_made, tcp._Wire.send, tcp._Wire.data_received

    def tap_made(self: tcp._Wire, transport: Any) -> None:
        ids[id(self)] = next(numbers)
        events.append(("open", ids[id(self)], 0))
        times.append(time.perf_counter())
        made(self, transport)

    def tap_send(self: tcp._Wire, data: bytes) -> None:
        events.append(("send", ids[id(self)], bytes(data)))
        times.append(time.perf_counter())
        send(self, data)

    def tap_received(self: tcp._Wire, data: bytes) -> None:
        events.append(("recv", ids[id(self)], len(data)))
        times.append(time.perf_counter())
        received(self, data)

    tcp._Wire.connection_made, tcp._Wire.send, tcp._Wire.data_received = tap_made, tap_send, tap_received  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="otfuzz-wire-") as work:
        run = Path(work) / "run"
        with contextlib.redirect_stdout(sys.stderr):
            otfuzz_main(["run", f"modbus://127.0.0.1:{port}", "--duration", f"{seconds}s", "--seed", "1", "--out", str(run),
                         "--quiet", "--confirm-time", "1"])
        doc = load_results(run)
    fuzzing_s = doc["campaign"]["fuzzing_s"]
    # only what went out while fuzzing (from the first connection on): the confirmation phase
    # after it is not in the campaign's rate
    end = times[0] + fuzzing_s if times else 0.0
    cut = next((i for i, t in enumerate(times) if t > end), len(events))
    with out.open("wb") as f:
        pickle.dump({"events": events[:cut], "cases": doc["totals"]["cases"], "fuzzing_s": fuzzing_s,
                     "per_s": doc["totals"]["cases"] / fuzzing_s}, f)


def replay(port: int, events_file: Path, timeout: float = 0.05) -> dict[str, Any]:
    with events_file.open("rb") as f:
        recorded = pickle.load(f)
    events: list[Event] = recorded["events"]
    last_use: dict[int, int] = {}
    for i, (_, wire, _) in enumerate(events):
        last_use[wire] = i
    # after each send: the bytes the campaign had on each connection before it sent again
    socks: dict[int, socket.socket] = {}
    owed: dict[int, int] = {}
    short = 0
    short_s = 0.0  # time spent waiting for bytes that did not come this time
    started = time.perf_counter()
    for i, (kind, wire, value) in enumerate(events):
        if kind == "open":
            sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks[wire] = sock
        elif kind == "recv":
            owed[wire] = owed.get(wire, 0) + int(value)  # type: ignore[arg-type]
        elif kind == "send":
            for other, count in list(owed.items()):  # what came back before this send
                while count > 0 and other in socks:
                    waited = time.perf_counter()
                    try:
                        got = socks[other].recv(65536)
                    except OSError:
                        got = b""
                    if not got:
                        short += 1
                        short_s += time.perf_counter() - waited
                        break
                    count -= len(got)
                owed.pop(other)
            if wire in socks:
                with contextlib.suppress(OSError):
                    socks[wire].sendall(value)  # type: ignore[arg-type]
        if last_use.get(wire) == i and wire in socks and not owed.get(wire):
            socks.pop(wire).close()
    for sock in socks.values():
        sock.close()
    seconds = time.perf_counter() - started
    return {"per_s": recorded["cases"] / (seconds - short_s), "cases": recorded["cases"], "seconds": round(seconds, 3),
            "short_reads": short, "short_read_s": round(short_s, 3),
            "campaign_per_s": round(recorded["per_s"], 1), "writes": sum(1 for e in events if e[0] == "send"),
            "connections": sum(1 for e in events if e[0] == "open")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--port", type=int, required=True)
    rec.add_argument("--seconds", type=float, default=10.0)
    rec.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("replay")
    rep.add_argument("--port", type=int, required=True)
    rep.add_argument("--events", type=Path, required=True)
    rep.add_argument("--timeout", type=float, default=0.05,
                     help="how long to wait for bytes the campaign got (default 0.05 s; the time spent waiting for bytes "
                          "that do not come is left out of the rate)")
    args = parser.parse_args()
    if args.command == "record":
        record(args.port, args.seconds, args.out)
    else:
        print(json.dumps(replay(args.port, args.events, args.timeout)))


if __name__ == "__main__":
    main()
