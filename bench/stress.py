"""Stress-load capacity of otfuzz on loopback, from one process, against a trivial responder.

Two figures: the highest valid-request rate otfuzz can offer (open-loop, the same LoadGenerator
`otfuzz stress` uses) with every request written on schedule, and the highest number of
concurrent connections it can open and hold. The responder runs in its own process and answers
every complete 12-byte request with a fixed reply, so it costs as little as a target can; the
figures say whether otfuzz, the responder or the kernel ran out first (CPU seconds of each side,
send-buffer backpressure, otfuzz's own shortfall). Only 127.0.0.1; every loop is bounded in
time and count. Prints figures, asserts nothing.

    .venv/bin/python bench/stress.py [--seconds 2] [--max-rate 2000000] [--max-connections 19000]
    .venv/bin/python bench/stress.py --serve PORT   # the responder alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from targets.servers import free_port, start_server, stop_server  # noqa: E402

from otfuzz.protocols.modbus import ModbusTCP  # noqa: E402
from otfuzz.stress.load import LoadGenerator, LoadStats  # noqa: E402
from otfuzz.stress.floods import valid_flood  # noqa: E402
from otfuzz.stress.patterns import FloodFrames, Step  # noqa: E402

REQUEST_SIZE = 12
REPLY = bytes.fromhex("7072000000050103020000")  # read of one holding register: value 0


class Responder(asyncio.Protocol):
    """Counts complete 12-byte requests per chunk and answers each with the same fixed reply."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pending = 0

    def data_received(self, data: bytes) -> None:
        total = self.pending + len(data)
        count, self.pending = divmod(total, REQUEST_SIZE)
        if count:
            self.transport.write(REPLY * count)


async def serve(port: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port, backlog=4096)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _distinct(count: int = 64) -> FloodFrames:
    """Valid reads that differ (transaction ids): the per-frame path malformed floods take."""
    frames = tuple(bytes.fromhex(f"{i + 1:04x}00000006010300000001") for i in range(count))
    return FloodFrames(frames, f"{count} distinct valid reads", tuple(False for _ in frames))


async def _step(port: int, step: Step, connect_timeout: float = 5.0, distinct: bool = False) -> LoadStats:
    modbus = ModbusTCP()
    stats = LoadStats()
    gen = LoadGenerator(modbus, "127.0.0.1", port, connect_timeout, 10_000.0, asyncio.Event())
    await gen.run(step, _distinct() if distinct else valid_flood(modbus), stats)
    await asyncio.sleep(0.2)  # late replies still count
    return stats


def rate_sweep(port: int, server_pid: int, seconds: float, max_rate: float, connections: int,
               distinct: bool = False) -> list[dict[str, float]]:
    rows = []
    rate = 5000.0
    for _ in range(20):  # bounded: at most 20 doublings
        if rate > max_rate:
            break
        step = Step("request-flood", "rate", seconds, rate, rate, connections=connections)
        cpu_self, cpu_server, wall = _self_cpu(), _cpu(server_pid), time.monotonic()
        stats = asyncio.run(_step(port, step, distinct=distinct))
        wall = time.monotonic() - wall
        row = {
            "rate": rate, "connections": connections, "distinct_frames": 64 if distinct else 1, "intended": stats.intended, "written": stats.written,
            "written_per_s": round(stats.written / seconds), "answered_per_s": round(stats.answered / seconds),
            "backpressure": stats.backpressure, "tool_shortfall": stats.tool_shortfall,
            "tool_lag_max_ms": round(stats.lag_max * 1000, 1),
            "otfuzz_cpu_per_s": round((_self_cpu() - cpu_self) / wall, 2),
            "responder_cpu_per_s": round((_cpu(server_pid) - cpu_server) / wall, 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if stats.tool_shortfall > 0.02 * stats.intended or stats.answered < 0.95 * stats.intended:
            break
        rate *= 2
    return rows


def connection_sweep(port: int, max_connections: int, hold: float) -> list[dict[str, float]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for count in (1000, 2000, 4000, 8000, 12000, 16000, max_connections):
        if count > max_connections:
            break
        start = time.monotonic()
        stats = asyncio.run(_step(port, Step("connection-flood", "idle", hold, connections=count)))
        row = {"connections": count, "held": stats.held, "peak_open": stats.peak_open, "failures": dict(stats.connect_failures),
               "open_s": round(time.monotonic() - start - hold, 2), "fd_limit": hard}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if stats.held < count:
            break
        time.sleep(1.0)  # let TIME_WAIT sockets and the responder settle
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help="run the trivial responder only")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each rate step")
    parser.add_argument("--max-rate", type=float, default=2_000_000.0)
    parser.add_argument("--max-connections", type=int, default=19000)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    port = free_port()
    server = start_server([sys.executable, __file__, "--serve", str(port)], port)
    try:
        print(f"# {os.cpu_count()} CPUs; responder pid {server.pid} on 127.0.0.1:{port}", flush=True)
        print("# valid-request rate, one connection", flush=True)
        one = rate_sweep(port, server.pid, args.seconds, args.max_rate, 1)
        print("# valid-request rate, eight connections", flush=True)
        eight = rate_sweep(port, server.pid, args.seconds, args.max_rate, 8)
        print("# valid-request rate, one connection, 64 distinct requests (the per-frame path of malformed floods)", flush=True)
        distinct = rate_sweep(port, server.pid, args.seconds, args.max_rate, 1, distinct=True)
        print("# concurrent connections held (idle)", flush=True)
        conns = connection_sweep(port, args.max_connections, 2.0)
    finally:
        stop_server(server)

    def best(rows: list[dict[str, float]]) -> dict[str, float] | None:
        clean = [r for r in rows if r["tool_shortfall"] <= 0.02 * r["intended"] and r["answered_per_s"] >= 0.95 * r["rate"]]
        return clean[-1] if clean else None

    summary = {
        "max_clean_rate_1_connection": best(one),
        "max_clean_rate_8_connections": best(eight),
        "max_clean_rate_64_distinct_requests": best(distinct),
        "max_written_per_s": max(r["written_per_s"] for r in one + eight),
        "max_connections_held": max((r["held"] for r in conns), default=0),
    }
    print("# summary")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
