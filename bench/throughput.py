"""Campaign throughput on loopback: otfuzz against pymodbus, against a minimal responder and
against cpppo (EtherNet/IP), each beside a bare asyncio request/response loop against the same
server.

Prints figures; asserts nothing (benchmarks are not tests). Every loop is bounded in time.

    .venv/bin/python bench/throughput.py [--seconds 10] [--memory-cases 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from targets.servers import free_port, start_server, stop_server  # noqa: E402

from otfuzz.cli import main as otfuzz_main  # noqa: E402
from otfuzz.report.results import load_results  # noqa: E402

VALID = bytes.fromhex("000100000006010300000001")


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def bare_loop(port: int, seconds: float, request: bytes = VALID, register: bytes | None = None) -> float:
    """The simplest honest request/response loop: write, await the reply, repeat. With
    `register` (an EtherNet/IP RegisterSession), that goes first and its session handle
    (octets 4..8) goes into the request."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if register is not None:
        client.waiter = loop.create_future()
        transport.write(register)
        reply = await client.waiter
        request = request[:4] + reply[4:8] + request[8:]
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        client.waiter = loop.create_future()
        transport.write(request)
        await client.waiter
        count += 1
    transport.close()
    return count / (time.perf_counter() - start)


def enip_rows(seconds: float, results: dict[str, object]) -> None:
    """otfuzz at defaults against cpppo 5.2.5 beside the bare loop against the same server."""
    from otfuzz.protocols.enip import EtherNetIP

    protocol = EtherNetIP()
    register = next(t for t in protocol.templates() if t.name == "register_session").encode()
    port = free_port()
    server = start_server([sys.executable, str(ROOT / "tests" / "targets" / "enip_server.py"), "--port", str(port)], port)
    try:
        # the bare loop sends the health probe's Get_Attribute_Single with the session handle
        rate = asyncio.run(bare_loop(port, seconds, protocol.probe().frame, register))
        results["bare_loop_vs_cpppo_enip_per_s"] = round(rate, 1)
        rate, info = campaign(f"enip://127.0.0.1:{port}", seconds, [])
        results["otfuzz_vs_cpppo_enip_per_s"] = round(rate, 1)
        results["otfuzz_vs_cpppo_enip"] = info
    finally:
        stop_server(server)


def campaign(url: str, seconds: float, extra: list[str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        status = otfuzz_main(["run", url, "--duration", f"{seconds}s", "--seed", "1", "--out", str(run), "--quiet", *extra])
        wall = time.perf_counter() - start
        doc = load_results(run)
    if status != 0:
        raise SystemExit(f"campaign against {url} ended with status {status}")
    elapsed = doc["campaign"]["fuzzing_s"]
    return doc["totals"]["cases"] / elapsed, {"cases": doc["totals"]["cases"], "fuzzing_s": elapsed, "wall_s": round(wall, 2),
                                             "confirmation_s": round(doc["campaign"]["elapsed_s"] - elapsed, 2),
                                             "anomalies": doc["totals"]["anomaly_classes"], "replies": doc["totals"]["replies"]}


def memory_run(url: str, cases: int) -> dict:
    """RSS of a long campaign sampled every second in a child process: flat means no per-case growth."""
    import psutil

    code = (
        "import sys,tempfile,pathlib;from otfuzz.cli import main;"
        "d=pathlib.Path(tempfile.mkdtemp())/'r';"
        f"sys.exit(main(['run','{url}','--cases','{cases}','--seed','3','--out',str(d),'--quiet','--no-confirm']))"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc, samples, start = psutil.Process(child.pid), [], time.monotonic()
    while child.poll() is None and time.monotonic() - start < 3600:
        try:
            samples.append((round(time.monotonic() - start), proc.memory_info().rss / 2**20))
        except psutil.NoSuchProcess:
            break
        time.sleep(1.0)
    child.wait(60)
    after_warmup = [rss for t, rss in samples if t >= 10] or [rss for _, rss in samples]
    tenth = max(1, len(after_warmup) // 10)
    return {"cases": cases, "seconds": round(time.monotonic() - start, 1), "exit": child.returncode,
            "rss_mib_first_10pct": round(sum(after_warmup[:tenth]) / tenth, 1),
            "rss_mib_last_10pct": round(sum(after_warmup[-tenth:]) / tenth, 1),
            "rss_mib_max": round(max(after_warmup), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--memory-cases", type=int, default=0, help="also run a campaign of this many cases and report peak RSS")
    args = parser.parse_args()
    results: dict[str, object] = {}

    port = free_port()
    responder = start_server([sys.executable, str(HERE / "responder.py"), "--port", str(port)], port)
    try:
        results["bare_loop_per_s"] = round(asyncio.run(bare_loop(port, args.seconds)), 1)
        rate, info = campaign(f"modbus://127.0.0.1:{port}", args.seconds, [])
        results["otfuzz_vs_responder_per_s"] = round(rate, 1)
        results["otfuzz_vs_responder"] = info
        results["ratio_to_bare_loop"] = round(rate / results["bare_loop_per_s"], 3)  # type: ignore[operator]
        # Boundary cases keep the framing valid, so the connection is reused as in the bare loop:
        # this isolates otfuzz's per-case cost from reconnects that malformed framing forces.
        rate, info = campaign(f"modbus://127.0.0.1:{port}", args.seconds, ["--groups", "boundary"])
        results["otfuzz_boundary_only_vs_responder_per_s"] = round(rate, 1)
        results["ratio_boundary_only_to_bare_loop"] = round(rate / results["bare_loop_per_s"], 3)  # type: ignore[operator]
        results["otfuzz_boundary_only_vs_responder"] = info
        if args.memory_cases:
            results["memory"] = memory_run(f"modbus://127.0.0.1:{port}", args.memory_cases)
    finally:
        stop_server(responder)

    port = free_port()
    pymodbus = start_server([sys.executable, "-m", "otfuzz.demo", "serve", "--port", str(port)], port)
    try:
        results["bare_loop_vs_pymodbus_per_s"] = round(asyncio.run(bare_loop(port, args.seconds)), 1)
        for label, extra in (("concurrency_1", []), ("concurrency_4", ["--concurrency", "4"]), ("concurrency_8", ["--concurrency", "8"])):
            rate, info = campaign(f"modbus://127.0.0.1:{port}", args.seconds, extra)
            results[f"otfuzz_vs_pymodbus_{label}_per_s"] = round(rate, 1)
            results[f"otfuzz_vs_pymodbus_{label}"] = info
    finally:
        stop_server(pymodbus)
    enip_rows(args.seconds, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
