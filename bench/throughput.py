"""Campaign throughput on loopback: otfuzz against pymodbus, against a minimal responder,
against asyncua (OPC UA) and against a bacpypes3 BACnet/IP device, each beside a bare
request/response loop (asyncio TCP, or UDP for BACnet) against the same server.

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


async def bare_loop(port: int, seconds: float, valid: bytes = VALID, opening: tuple[bytes, ...] = ()) -> float:
    """The simplest honest request/response loop: write, await the reply, repeat (after the
    protocol's opening frames, each answered once)."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for frame in opening:
        client.waiter = loop.create_future()
        transport.write(frame)
        await asyncio.wait_for(client.waiter, 5)
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        client.waiter = loop.create_future()
        transport.write(valid)
        await client.waiter
        count += 1
    transport.close()
    return count / (time.perf_counter() - start)


async def bare_opcua_loop(port: int, seconds: float) -> float:
    """The same honest loop for OPC UA: one opened session (HEL, OPN, CreateSession,
    ActivateSession), then Read of ServerStatus.State, each patched with sequence number and
    handle by the module's session, waiting for each answer."""
    from otfuzz.protocols.opcua import OPCUA

    protocol = OPCUA({}, "/otfuzz")
    protocol.address("127.0.0.1", port)
    session = protocol.session()
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def exchange(frame: bytes) -> None:
        client.waiter = loop.create_future()
        transport.write(session.prepare(frame))
        for _ in range(1000):
            data = await client.waiter
            session.feed(data)
            if session.next_reply() is not None:
                return
            client.waiter = loop.create_future()

    for frame in session.opening():
        await exchange(frame)
    probe = protocol.probe().frame
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        await exchange(probe)
        count += 1
    transport.close()
    return count / (time.perf_counter() - start)


class _DatagramClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def bare_udp_loop(port: int, request: bytes, seconds: float) -> float:
    """The UDP counterpart: send one datagram, await one back, repeat (the same request, so the
    same invoke id: the device answers each in turn)."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_DatagramClient, remote_addr=("127.0.0.1", port))
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        client.waiter = loop.create_future()
        transport.sendto(request)
        await asyncio.wait_for(client.waiter, 2.0)
        count += 1
    transport.close()
    return count / (time.perf_counter() - start)


def bacnet(seconds: float) -> dict:
    """otfuzz at defaults against the bacpypes3 test device, beside the bare loop of its probe."""
    from otfuzz.protocols.bacnet import BACnetIP

    port = free_port(socket.SOCK_DGRAM)
    device = start_server([sys.executable, str(ROOT / "tests" / "targets" / "bacnet_device.py"), "--port", str(port),
                           "--instance", "999"], port, tcp=False)
    out: dict[str, object] = {}
    try:
        probe = BACnetIP({"device": "999"}).probe().frame
        out["bare_udp_loop_vs_bacpypes3_per_s"] = round(asyncio.run(bare_udp_loop(port, probe, seconds)), 1)
        rate, info = campaign(f"bacnet://127.0.0.1:{port}?device=999", seconds, [])
        out["otfuzz_vs_bacpypes3_per_s"] = round(rate, 1)
        out["otfuzz_vs_bacpypes3"] = info
        out["ratio_bacnet_to_bare_udp_loop"] = round(rate / out["bare_udp_loop_vs_bacpypes3_per_s"], 3)  # type: ignore[operator]
    finally:
        stop_server(device)
    return out


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


def s7_row(seconds: float) -> dict[str, object]:
    """S7comm against python-snap7's server: a bare Read Var loop (after CR and Setup
    Communication) beside an otfuzz campaign at defaults."""
    from targets.s7_server import start

    from otfuzz.protocols.s7 import S7Comm

    protocol = S7Comm()
    proc, port = start()
    try:
        bare = asyncio.run(bare_loop(port, seconds, protocol.probe().frame, tuple(protocol.session().opening())))
        rate, info = campaign(f"s7://127.0.0.1:{port}", seconds, [])
        # boundary cases keep TPKT/COTP framing valid, so the connection is mostly reused
        boundary, boundary_info = campaign(f"s7://127.0.0.1:{port}", seconds, ["--groups", "boundary"])
    finally:
        stop_server(proc)
    return {"bare_loop_vs_snap7_per_s": round(bare, 1), "otfuzz_vs_snap7_per_s": round(rate, 1),
            "ratio_to_bare_loop": round(rate / bare, 3), "otfuzz_vs_snap7": info,
            "otfuzz_boundary_only_vs_snap7_per_s": round(boundary, 1), "otfuzz_boundary_only_vs_snap7": boundary_info}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--memory-cases", type=int, default=0, help="also run a campaign of this many cases and report peak RSS")
    parser.add_argument("--only", choices=["modbus", "s7"], help="run only this protocol's rows")
    args = parser.parse_args()
    results: dict[str, object] = {}
    if args.only != "modbus":
        results["s7"] = s7_row(args.seconds)
    if args.only == "s7":
        print(json.dumps(results, indent=2))
        return

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
    port = free_port()
    opcua = start_server([sys.executable, str(ROOT / "tests" / "targets" / "opcua_server.py"), "--port", str(port)], port)
    try:
        results["bare_loop_vs_asyncua_opcua_per_s"] = round(asyncio.run(bare_opcua_loop(port, args.seconds)), 1)
        rate, info = campaign(f"opcua://127.0.0.1:{port}/otfuzz?node=ns=2;i=1001&object=ns=2;i=1000&method=ns=2;i=1010",
                              args.seconds, [])
        results["otfuzz_vs_asyncua_opcua_per_s"] = round(rate, 1)
        results["otfuzz_vs_asyncua_opcua"] = info
    finally:
        stop_server(opcua)
    results.update(bacnet(args.seconds))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
