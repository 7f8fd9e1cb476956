"""A minimal asyncio Modbus/TCP responder: answers every chunk at once.

A plain read of holding registers gets zeros (so the health probe passes); everything else gets
an exception reply echoing the transaction id, unit id and function code. It does almost no
parsing, so the time a request costs is almost all the client's: the right target to measure
otfuzz's own overhead.

    python bench/responder.py --port 15502
"""

from __future__ import annotations

import argparse
import asyncio

FALLBACK = bytes.fromhex("000000000003008101")


class Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if len(data) == 12 and data[7] == 3 and 1 <= data[11] <= 125 and data[10] == 0:
            size = 2 * data[11]  # read holding registers: zeros, so the health probe is answered
            self.transport.write(data[0:4] + (size + 3).to_bytes(2, "big") + data[6:8] + bytes([size]) + bytes(size))
        elif len(data) >= 8:
            self.transport.write(data[0:2] + b"\x00\x00\x00\x03" + data[6:7] + bytes([data[7] | 0x80]) + b"\x01")
        elif len(data) >= 2:
            self.transport.write(data[0:2] + FALLBACK[2:])
        else:
            self.transport.write(FALLBACK)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
