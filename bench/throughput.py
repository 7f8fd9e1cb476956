"""Campaign throughput on loopback, a row per protocol: otfuzz at its defaults against a real
server, beside a bare request/response loop against the same server.

The bare loop is the simplest honest client: it opens a connection the way the protocol
requires (the protocol module's own session: handshake, sequence numbers, handles), then sends
the health probe's valid request, waits for its answer, and repeats. For Modbus there are two
targets: the project's minimal responder (otfuzz's own overhead) and pymodbus (a real server);
for DNP3 too: dnp3py and the project's silent outstation (bench/dnp3_responder.py).

Two ratios: cases per second to the loop's requests per second, and requests to requests. A
case of the default mix carries more than one request on average (a sequence carries several),
so the first can never reach 1; the second counts what went on the wire (the search summary's
`requests_sent`: case frames, a case re-sent alone after a pipelined window counting twice,
and sync requests).

Prints figures; asserts nothing (benchmarks are not tests). Every loop is bounded in time.

    .venv/bin/python bench/throughput.py [--seconds 10] [--only modbus,s7] [--memory-cases 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ROOT / "tests" / "targets"
sys.path.insert(0, str(ROOT / "tests"))

from targets.servers import free_port, start_server, stop_server  # noqa: E402

from otfuzz.cli import main as otfuzz_main  # noqa: E402
from otfuzz.protocols import protocol_for  # noqa: E402
from otfuzz.protocols.base import Protocol  # noqa: E402
from otfuzz.report.results import load_results  # noqa: E402
from otfuzz.transport.target import parse_target  # noqa: E402


class _Client(asyncio.Protocol):
    """Keeps every byte until it is read: a chunk that came while the loop was busy with the one
    before is not lost (an IEC 104 interrogation's ACT_CON among its data was, and the loop
    waited out the server's periodic data: 0.0 requests/s against c104)."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.data = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self, timeout: float) -> bytes:
        if not self.data:
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, timeout)
        data, self.data = bytes(self.data), bytearray()
        return data


async def bare_loop(protocol: Protocol, port: int, seconds: float) -> float:
    """Open as the protocol requires, then probe request, answer, repeat (requests per second)."""
    session = protocol.session()
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def exchange(frame: bytes) -> None:
        transport.write(session.prepare(frame))
        for _ in range(1000):
            session.feed(await client.read(5))
            out = session.take_output()
            if out:
                transport.write(out)
            if session.next_reply() is not None:
                return

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


async def bare_udp_loop(protocol: Protocol, port: int, seconds: float) -> float:
    """The datagram counterpart: one probe datagram, one answer, repeat (the same invoke id:
    the device answers each in turn)."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_DatagramClient, remote_addr=("127.0.0.1", port))
    request = protocol.probe().frame
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        client.waiter = loop.create_future()
        transport.sendto(request)
        await asyncio.wait_for(client.waiter, 2.0)
        count += 1
    transport.close()
    return count / (time.perf_counter() - start)


def campaign(url: str, seconds: float, extra: list[str]) -> tuple[float, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the figures only
            status = otfuzz_main(["run", url, "--duration", f"{seconds}s", "--seed", "1", "--out", str(run), "--quiet", *extra])
        wall = time.perf_counter() - start
        doc = load_results(run)
    if status != 0:
        raise SystemExit(f"campaign against {url} ended with status {status}")
    elapsed = doc["campaign"]["fuzzing_s"]
    sent = (doc.get("search") or {}).get("requests_sent") or {}
    return doc["totals"]["cases"] / elapsed, {
        "cases": doc["totals"]["cases"], "fuzzing_s": elapsed, "wall_s": round(wall, 2),
        # requests on the wire per second, as the bare loop counts them (a case may carry several)
        "requests_per_s": round((sent.get("case_frames", 0) + sent.get("sync", 0)) / elapsed, 1),
        "requests_sent": sent,
        "confirmation_s": round(doc["campaign"]["elapsed_s"] - elapsed, 2), "findings": doc["totals"]["findings"],
        "connection_s": (doc.get("search") or {}).get("connection_s", 0.0),
        "anomalies": doc["totals"]["anomaly_classes"], "replies": doc["totals"]["replies"]}


def memory_run(url: str, cases: int) -> dict[str, Any]:
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


def _server(argv: list[str], udp: bool = False) -> Callable[[], tuple[Any, int]]:
    def start() -> tuple[Any, int]:
        port = free_port(socket.SOCK_DGRAM) if udp else free_port()
        return start_server([sys.executable, *argv, "--port", str(port)], port, **({"tcp": False} if udp else {})), port
    return start


def _mosquitto() -> tuple[Any, int]:
    from targets.mosquitto_broker import start_broker

    port = free_port()
    return start_broker(port), port


def _s7_server() -> tuple[Any, int]:
    from targets.s7_server import start

    proc, port = start()
    return proc, port


# name -> (start the server, URL template, extra campaign variants)
ROWS: dict[str, tuple[Callable[[], tuple[Any, int]], str, dict[str, list[str]]]] = {
    "responder": (_server([str(HERE / "responder.py")]), "modbus://127.0.0.1:{port}", {"boundary_only": ["--groups", "boundary"]}),
    # a device one 2 ms hop away that serves requests in flight side by side: where pipelining pays
    "responder-2ms": (_server([str(HERE / "responder.py"), "--delay-ms", "2"]), "modbus://127.0.0.1:{port}",
                      {"no_pipeline": ["--no-pipeline"]}),
    "pymodbus": (_server(["-m", "otfuzz.demo", "serve"]), "modbus://127.0.0.1:{port}",
                 {"concurrency_4": ["--concurrency", "4"], "concurrency_8": ["--concurrency", "8"]}),
    "dnp3py": (_server([str(TARGETS / "dnp3_outstation.py")]), "dnp3://127.0.0.1:{port}?outstation=1&master=2", {}),
    # an outstation that drops every malformed frame without a word and does almost nothing else
    "dnp3-responder": (_server([str(HERE / "dnp3_responder.py")]), "dnp3://127.0.0.1:{port}?outstation=1&master=2",
                       {"no_pipeline": ["--no-pipeline"]}),
    "c104": (_server([str(TARGETS / "iec104_server.py")]), "iec104://127.0.0.1:{port}?ca=47", {}),
    "asyncua": (_server([str(TARGETS / "opcua_server.py")]),
                "opcua://127.0.0.1:{port}/otfuzz?node=ns=2;i=1001&object=ns=2;i=1000&method=ns=2;i=1010", {}),
    "snap7": (_s7_server, "s7://127.0.0.1:{port}", {"boundary_only": ["--groups", "boundary"]}),
    "cpppo": (_server([str(TARGETS / "enip_server.py")]), "enip://127.0.0.1:{port}", {}),
    "bacpypes3": (_server([str(TARGETS / "bacnet_device.py"), "--instance", "999"], udp=True), "bacnet://127.0.0.1:{port}?device=999", {}),
    "mosquitto-3.1.1": (_mosquitto, "mqtt://127.0.0.1:{port}?version=4", {}),
    "mosquitto-5": (_mosquitto, "mqtt://127.0.0.1:{port}?version=5", {}),
}


def row(name: str, seconds: float, memory_cases: int = 0) -> dict[str, Any]:
    start, url_template, variants = ROWS[name]
    proc, port = start()
    url = url_template.format(port=port)
    try:
        protocol = protocol_for(parse_target(url))
        loop = bare_udp_loop if protocol.transport == "udp" else bare_loop
        bare = asyncio.run(loop(protocol, port, seconds))
        out: dict[str, Any] = {"url": url, "bare_loop_per_s": round(bare, 1)}
        try:
            rate, info = campaign(url, seconds, [])
        except SystemExit as exc:  # a target that crashed for good (nothing restarts it here): the row says so
            out["otfuzz_error"] = str(exc)
            return out
        out.update({"otfuzz_per_s": round(rate, 1), "ratio_to_bare_loop": round(rate / bare, 3),
                    "requests_ratio_to_bare_loop": round(info["requests_per_s"] / bare, 3), "otfuzz": info})
        for label, extra in variants.items():
            try:
                rate, info = campaign(url, seconds, extra)
            except SystemExit as exc:
                out[f"otfuzz_{label}_error"] = str(exc)
                continue
            out[f"otfuzz_{label}_per_s"] = round(rate, 1)
            out[f"ratio_{label}_to_bare_loop"] = round(rate / bare, 3)
        if memory_cases:
            out["memory"] = memory_run(url, memory_cases)
    finally:
        stop_server(proc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each loop and campaign (default 10)")
    parser.add_argument("--only", help=f"comma-separated rows (default all: {','.join(ROWS)})")
    parser.add_argument("--memory-cases", type=int, default=0,
                        help="also run a campaign of this many cases against the responder and report RSS over time")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row {unknown[0]} (rows: {', '.join(ROWS)})")
    results = {name: row(name, args.seconds, args.memory_cases if name == "responder" else 0) for name in names}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
