"""A pymodbus 3.16 Modbus/TCP server on 127.0.0.1 with a known datastore, for integration tests.

Third-party code is the point: the protocol module is proven against an implementation we did
not write. Holding register i holds i and input register i holds 1000 + i (addresses 0..999);
coils alternate starting with True, discrete inputs alternate starting with False. Any unit id
is answered. Prints READY once listening and serves until killed.

    python tests/targets/pymodbus_server.py --port 15020
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SIZE = 1000
IDENTITY = {"VendorName": "otfuzz-test", "ProductCode": "PM", "MajorMinorRevision": "3.16.1"}


def build_device() -> SimDevice:
    """Four separate blocks so coils/inputs are addressed bit by bit, as on a real PLC."""
    coils = [SimData(0, values=[i % 2 == 0 for i in range(SIZE)], datatype=DataType.BITS)]
    inputs = [SimData(0, values=[i % 2 == 1 for i in range(SIZE)], datatype=DataType.BITS)]
    holding = [SimData(0, values=list(range(SIZE)), datatype=DataType.REGISTERS)]
    input_regs = [SimData(0, values=[1000 + i for i in range(SIZE)], datatype=DataType.REGISTERS)]
    # id 0 answers every unit id that is not declared on its own.
    return SimDevice(0, simdata=(coils, inputs, holding, input_regs))


async def serve(port: int) -> None:
    server = ModbusTcpServer(
        build_device(),
        address=("127.0.0.1", port),
        identity=ModbusDeviceIdentification(info_name=IDENTITY),
    )
    await server.serve_forever(background=True)
    print("READY", flush=True)
    await server.serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
