"""A pymodbus 3.16 Modbus/TCP server on 127.0.0.1 with a known datastore, for integration tests.

Third-party code is the point: the protocol module is proven against an implementation we did
not write. It is the demo's server (otfuzz.demo.serve) with a test identity. Holding register i holds i and input register i holds 1000 + i (addresses 0..999);
coils alternate starting with True, discrete inputs alternate starting with False. Any unit id
is answered. Prints READY once listening and serves until killed.

    python tests/targets/pymodbus_server.py --port 15020
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from otfuzz.demo import serve

IDENTITY = {"VendorName": "otfuzz-test", "ProductCode": "PM", "MajorMinorRevision": "3.16.1"}


def main(identity: dict[str, str] | None = None, description: str = __doc__) -> None:
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(serve(args.port, identity or IDENTITY))


if __name__ == "__main__":
    main()
