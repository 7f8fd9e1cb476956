"""A minimal asyncio Modbus/TCP responder: answers every request at once.

A plain read of holding registers gets zeros (so the health probe passes); everything else gets
an exception reply echoing the transaction id, unit id and function code. It does almost no
parsing, so the time a request costs is almost all the client's: the right target to measure
otfuzz's own overhead. Like a device's stack it frames requests by the MBAP length, so requests
sent back to back are answered one by one; bytes that do not frame (a length below 2 or above
254) are answered as one chunk. `--delay-ms D` answers each request D ms after it arrived, as a
device one network hop away would, requests in flight served side by side.

    python bench/responder.py --port 15502 [--delay-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

FALLBACK = bytes.fromhex("000000000003008101")


DELAY = 0.0  # seconds before each answer (--delay-ms)


class Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write = self.transport.write if not DELAY else self.later

    def later(self, data: bytes) -> None:
        asyncio.get_running_loop().call_later(DELAY, self.send, data)

    def send(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        while len(data) >= 6 and 2 <= (data[4] << 8 | data[5]) <= 254 and len(data) > 6 + (data[4] << 8 | data[5]):
            end = 6 + (data[4] << 8 | data[5])
            self.answer(data[:end])
            data = data[end:]
        self.answer(data)

    def answer(self, data: bytes) -> None:
        if len(data) == 12 and data[7] == 3 and 1 <= data[11] <= 125 and data[10] == 0:
            size = 2 * data[11]  # read holding registers: zeros, so the health probe is answered
            self.write(data[0:4] + (size + 3).to_bytes(2, "big") + data[6:8] + bytes([size]) + bytes(size))
        elif len(data) >= 8:
            self.write(data[0:2] + b"\x00\x00\x00\x03" + data[6:7] + bytes([data[7] | 0x80]) + b"\x01")
        elif len(data) >= 2:
            self.write(data[0:2] + FALLBACK[2:])
        else:
            self.write(FALLBACK)


async def serve(port: int, protocol: Callable[[], asyncio.Protocol] = Responder) -> None:
    """Serve `protocol` on 127.0.0.1:`port`; print READY once listening (bench/dnp3_responder.py too)."""
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer each request this much later (default 0)")
    args = parser.parse_args()
    DELAY = args.delay_ms / 1000.0
    asyncio.run(serve(args.port))
