"""A Modbus/TCP server of our own that degrades under load in a known way, to prove the stress verdicts.

Reads of holding registers (fc 3) answer register i = i for addresses 0..9999; every other
function gets exception 0x01. The known degradation:

- While it receives at most `--capacity` requests a second (over all connections, measured over
  the last second), it answers everything at once.
- Above that it is overloaded and answers nothing at all, not even the essential function,
  until the rate has stayed at or below capacity for `--recovery` seconds.
- With `--leak` it keeps one open descriptor for every connection it ever accepted (a resource
  leak that shows as a trend in the resource monitor).

A healthy server is the same program with a capacity far above the load. Prints READY once
listening and serves until killed.

    python tests/targets/degrading_server.py --port 15020 --capacity 100 --recovery 1.5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import time

BUCKET = 0.1  # seconds per rate bucket; ten buckets make the one-second window


class Overload:
    """The load model: a sliding one-second request count and the overloaded state."""

    def __init__(self, capacity: float, recovery: float) -> None:
        self.capacity = capacity
        self.recovery = recovery
        self.buckets = [0] * 10
        self.current = int(time.monotonic() / BUCKET)
        self.overloaded = False
        self.calm_since: float | None = None

    def _advance(self, now: float) -> None:
        index = int(now / BUCKET)
        for b in range(self.current + 1, min(index, self.current + 10) + 1):
            self.buckets[b % 10] = 0
        self.current = max(self.current, index)

    def rate(self, now: float) -> int:
        self._advance(now)
        return sum(self.buckets)

    def admit(self) -> bool:
        """Count one request; True when the server answers it."""
        now = time.monotonic()
        self._advance(now)
        self.buckets[self.current % 10] += 1
        return not self.update(now)

    def update(self, now: float) -> bool:
        """Move the state machine on; True while overloaded."""
        rate = self.rate(now)
        if rate > self.capacity:
            self.overloaded = True
            self.calm_since = None
        elif self.overloaded:
            if self.calm_since is None:
                self.calm_since = now
            elif now - self.calm_since >= self.recovery:
                self.overloaded = False
                self.calm_since = None
        return self.overloaded


class ModbusServer(asyncio.Protocol):
    def __init__(self, model: Overload, leaks: list[int] | None) -> None:
        self.model = model
        self.leaks = leaks
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.leaks is not None:
            self.leaks.append(os.open(os.devnull, os.O_RDONLY))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = bytearray()
        while len(self.buffer) >= 7:
            length = struct.unpack_from(">H", self.buffer, 4)[0]
            if length < 2 or length > 254:
                assert self.transport is not None
                self.transport.close()
                return
            end = 6 + length
            if len(self.buffer) < end:
                break
            frame = bytes(self.buffer[:end])
            del self.buffer[:end]
            if self.model.admit():
                out += answer(frame)
        if out and self.transport is not None:
            self.transport.write(bytes(out))


def answer(frame: bytes) -> bytes:
    tid, _, _, unit, fc = struct.unpack_from(">HHHBB", frame)
    if fc == 3 and len(frame) == 12:
        address, quantity = struct.unpack_from(">HH", frame, 8)
        if not 1 <= quantity <= 125:
            return struct.pack(">HHHBBB", tid, 0, 3, unit, 0x83, 3)
        if address + quantity > 10000:
            return struct.pack(">HHHBBB", tid, 0, 3, unit, 0x83, 2)
        values = struct.pack(f">{quantity}H", *range(address, address + quantity))
        return struct.pack(">HHHBBB", tid, 0, 3 + len(values), unit, 3, len(values)) + values
    return struct.pack(">HHHBBB", tid, 0, 3, unit, fc | 0x80 if fc < 0x80 else 0x80, 1)


async def serve(port: int, capacity: float, recovery: float, leak: bool) -> None:
    model = Overload(capacity, recovery)
    leaks: list[int] | None = [] if leak else None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ModbusServer(model, leaks), "127.0.0.1", port, backlog=1024)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--capacity", type=float, default=1e9, help="requests/s it can take (default: unlimited)")
    parser.add_argument("--recovery", type=float, default=0.0, help="seconds of calm it needs to answer again")
    parser.add_argument("--leak", action="store_true", help="leak one descriptor per accepted connection")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.capacity, args.recovery, args.leak))


if __name__ == "__main__":
    main()
