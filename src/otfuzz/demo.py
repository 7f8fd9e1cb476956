"""The demo target: a real third-party Modbus/TCP server (pymodbus) with a known datastore.

`otfuzz demo` runs it in a child process (`python -m otfuzz.demo serve --port P`) so the
campaign treats it like any other target: over TCP, with otfuzz starting and supervising it via
`--target-cmd`, and stopping it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket

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
