"""`otfuzz demo`: a real third-party Modbus/TCP server (pymodbus) on loopback, a short campaign
against it, and the reports, so a new user sees the whole tool work in one command.

The server runs in a child process (`python -m otfuzz.demo serve --port P`) so the campaign
treats it like any other target: over TCP, with otfuzz starting and supervising it via
`--target-cmd`, and stopping it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import socket
import sys
from pathlib import Path

DEMO_SIZE = 1000
DEMO_IDENTITY = {"VendorName": "otfuzz-demo (pymodbus)", "ProductCode": "PM", "MajorMinorRevision": "3.16"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve(port: int, identity: dict[str, str] | None = None) -> None:
    """A pymodbus server with a known datastore: holding register i holds i and input register i
    holds 1000 + i (0..999); coils alternate from on, discrete inputs from off; any unit id."""
    from pymodbus.pdu.device import ModbusDeviceIdentification
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    size = DEMO_SIZE
    device = SimDevice(0, simdata=(
        [SimData(0, values=[i % 2 == 0 for i in range(size)], datatype=DataType.BITS)],
        [SimData(0, values=[i % 2 == 1 for i in range(size)], datatype=DataType.BITS)],
        [SimData(0, values=list(range(size)), datatype=DataType.REGISTERS)],
        [SimData(0, values=[1000 + i for i in range(size)], datatype=DataType.REGISTERS)],
    ))
    server = ModbusTcpServer(device, address=("127.0.0.1", port), identity=ModbusDeviceIdentification(info_name=identity or DEMO_IDENTITY))
    await server.serve_forever(background=True)
    print("READY", flush=True)
    await server.serving


def run_demo(out: Path, duration: float, seed: int) -> int:
    """Run the demo campaign into `out` and write every available report format."""
    from otfuzz.cli import _prepare_run_dir, _summary, run_campaign
    from otfuzz.engine.campaign import CampaignConfig

    port = free_port()
    command = f"{shlex.quote(sys.executable)} -m otfuzz.demo serve --port {port}"
    config = CampaignConfig(target=f"modbus://127.0.0.1:{port}", seed=seed, duration=duration, target_cmd=command,
                            confirm_time=30.0, operator="otfuzz demo", independence="demonstration (not an assessment)")
    _prepare_run_dir(out)
    print(f"demo: pymodbus server on 127.0.0.1:{port}, {duration:g} s campaign, seed {seed}, "
          "then up to 30 s to replay and minimise what it found", flush=True)
    status, _ = run_campaign(config, out, resume=False)
    print(_summary(out, status))
    from otfuzz.cli import build_parser

    args = build_parser().parse_args(["report", str(out), "--format", "json,html,pdf,junit,oscal",
                                      "--component-type", "software-application", "--sl-t", "1,1,1,1,1,1,1"])
    args.func(args)
    return 0 if status == "completed" else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m otfuzz.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the demo pymodbus server until killed")
    serve_cmd.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
