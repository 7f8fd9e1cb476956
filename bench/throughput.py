"""Campaign throughput on loopback: otfuzz against pymodbus and against a minimal responder,
beside a bare asyncio request/response loop against the same responder; and otfuzz against
mosquitto (MQTT 3.1.1 and 5.0) beside a bare PUBLISH QoS 1 / PUBACK loop against it.

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


async def bare_loop(port: int, seconds: float) -> float:
    """The simplest honest request/response loop: write, await the reply, repeat."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        client.waiter = loop.create_future()
        transport.write(VALID)
        await client.waiter
        count += 1
    transport.close()
    return count / (time.perf_counter() - start)


async def bare_mqtt_loop(port: int, seconds: float, level: int) -> float:
    """CONNECT once, then PUBLISH at QoS 1 and await its PUBACK, identifiers 1, 2, 3...: the
    valid request of the MQTT health probe, without otfuzz."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    props = b"\x00" if level == 5 else b""
    client.waiter = loop.create_future()
    transport.write(bytes([0x10, 12 + len(props)]) + b"\x00\x04MQTT" + bytes([level, 2, 0, 60]) + props + b"\x00\x00")
    await client.waiter
    topic = b"bench/mqtt"
    count, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        body = len(topic).to_bytes(2, "big") + topic + (count % 65535 + 1).to_bytes(2, "big") + props + b"bench"
        client.waiter = loop.create_future()
        transport.write(bytes([0x32, len(body)]) + body)
        await client.waiter
        count += 1
    transport.close()
    return count / (time.perf_counter() - start)


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
    parser.add_argument("--only", choices=("all", "modbus", "mqtt"), default="all")
    args = parser.parse_args()
    results: dict[str, object] = {}
    if args.only in ("all", "mqtt"):
        results.update(mqtt_rows(args.seconds))
    if args.only == "mqtt":
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
    print(json.dumps(results, indent=2))


def mqtt_rows(seconds: float) -> dict[str, object]:
    """mosquitto (Debian, default configuration but a loopback listener and anonymous clients)."""
    from targets.mosquitto_broker import start_broker, version

    rows: dict[str, object] = {"mosquitto_version": version()}
    port = free_port()
    broker = start_broker(port)
    try:
        for level in (4, 5):
            bare = asyncio.run(bare_mqtt_loop(port, seconds, level))
            rows[f"bare_publish_loop_vs_mosquitto_v{level}_per_s"] = round(bare, 1)
            rate, info = campaign(f"mqtt://127.0.0.1:{port}?version={level}", seconds, [])
            rows[f"otfuzz_vs_mosquitto_v{level}_per_s"] = round(rate, 1)
            rows[f"otfuzz_vs_mosquitto_v{level}"] = info
            rows[f"ratio_mosquitto_v{level}_to_bare_loop"] = round(rate / bare, 3)
    finally:
        stop_server(broker)
    return rows


if __name__ == "__main__":
    main()
