"""A small Modbus/TCP server of our own, correct unless told to misbehave, to prove detection.

Without faults it is a minimal, fast, stateless responder (also used by the benchmarks): reads
of fc 1-4 return deterministic data (coil/input i is on when i is even, register i holds i),
writes 5/6/15/16 are validated and echoed without storing anything, 8/0 echoes, every other
function is refused with exception 0x01. Addresses 0..9999 exist (else exception 0x02) and
quantities outside the specification's limits get exception 0x03. It frames by the MBAP length,
drops frames whose protocol id is not 0 and closes the connection on an absurd length.

A fault `KIND:FC[:ADDR]` fires when a request with that function code (and starting address)
arrives; KIND is one of crash, hang, unresponsive, degrade, malformed, specviolation, reset,
slow (this reply alone comes --slow-ms late; other connections are not held up), ignore (this
request alone is never answered, as devices do with services they leave out; the rest is served).

A defect is a bug of the kind real devices have, reached through many different inputs, for
testing that a campaign reports it as one finding however it was reached:

- overflow-crash: any read (fc 1-4) whose address + quantity runs past 65535 raises an uncaught
  OverflowError: a Python traceback on stderr, exit status 70.
- count-abort: any write multiple (fc 15, 16) whose byte count disagrees with its quantity
  aborts like a C++ server whose vector access threw: "terminate called after throwing an
  instance of 'std::length_error'", then SIGABRT.
- truncated-write-hang: any write (fc 5, 6, 15, 16) shorter than its fixed fields blocks the
  server for --hang-seconds while it "waits for the rest" (every connection stalls).
- pair-crash: a read of holding registers with quantity 125 (the maximum) to unit 0 (the
  broadcast unit) overruns a buffer: SIGSEGV. Either alone is harmless: two fields at once.
- magic-crash: a write of the value 0xDEAD (a vendor's debug hook) to any register: an uncaught
  KeyError and exit 70. No boundary list holds 0xDEAD.
- state-crash: on a connection that wrote holding register A (fc 6 or 16) with a value other
  than what it holds, a read (fc 3) of A on the same connection dereferences a freed cache entry:
  SIGSEGV. Needs state an earlier request set on the same connection.
- connection-exhaustion: while more than --max-clients (default 40) connections are open at
  once, the server stops answering anyone for --hang-seconds.
- slow-read-hang: a partial MBAP header (fewer than 7 bytes) that stays incomplete for 0.5 s
  makes the server block reading the rest, for --hang-seconds.

    python tests/targets/faulty_modbus.py --port 15020 --fault crash:3:77 --fault hang:6 --defect overflow-crash
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import struct
import sys
import time
import traceback

KINDS = ("crash", "hang", "unresponsive", "degrade", "malformed", "specviolation", "reset", "slow", "ignore")
DEFECTS = ("overflow-crash", "count-abort", "truncated-write-hang", "pair-crash", "magic-crash", "state-crash",
           "connection-exhaustion", "slow-read-hang")
LIMITS = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}  # quantity maxima per fc
LAST_ADDRESS = 9999
BIT_PATTERN = (b"\x55" * 8192, b"\xaa" * 8192)  # coil i on when i is even, by start parity


class Server:
    """Fault configuration plus the state some faults switch on for every connection."""

    def __init__(self, faults: list[tuple[str, int, int | None]], hang_seconds: float, degrade_ms: float,
                 defects: list[str] = (), slow_ms: float = 400.0) -> None:  # type: ignore[assignment]
        self.faults: dict[int, list[tuple[str, int | None]]] = {}
        for kind, code, address in faults:
            self.faults.setdefault(code, []).append((kind, address))
        self.defects = set(defects)
        self.clients = 0
        self.max_clients = 40
        self.peak = 0
        self.peak_file: str | None = None
        self.blocked_until = 0.0
        self.hang_seconds = hang_seconds
        self.delay = degrade_ms / 1000.0
        self.slow = slow_ms / 1000.0
        self.unresponsive = False
        self.degraded = False


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.written: dict[int, int] = {}  # state-crash: registers this connection wrote
        self.partial: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        server.clients += 1
        if server.clients > server.peak:
            server.peak = server.clients
            if server.peak_file:
                with open(server.peak_file, "w") as out:
                    out.write(str(server.peak))
        if "connection-exhaustion" in server.defects and server.clients > server.max_clients:
            server.blocked_until = time.monotonic() + server.hang_seconds

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.clients -= 1
        if self.partial is not None:
            self.partial.cancel()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if self.partial is not None:
            self.partial.cancel()
            self.partial = None
        if "slow-read-hang" in self.server.defects and 0 < len(buf) < 7:
            self.partial = asyncio.get_running_loop().call_later(0.5, self.block_on_partial_header)
        while len(buf) >= 6:
            length = (buf[4] << 8) | buf[5]
            if length < 2 or length > 254:
                self.transport.close()
                buf.clear()
                return
            end = 6 + length
            if len(buf) < end:
                return
            frame = bytes(buf[:end])
            del buf[:end]
            if frame[2] == 0 and frame[3] == 0 and not self.handle(frame):
                return

    def block_on_partial_header(self) -> None:
        if 0 < len(self.buffer) < 7:
            time.sleep(self.server.hang_seconds)  # the bug: a blocking read for the rest of the header

    def handle(self, frame: bytes) -> bool:
        """Answer one request; False when the connection is gone."""
        if self.server.blocked_until > time.monotonic():
            return True  # exhausted: nobody gets an answer for a while
        if self.server.defects:
            self.check_state(frame)
            try:
                check_defects(self.server, frame)
            except (OverflowError, KeyError):
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(70)
        return self.answer(frame)

    def check_state(self, frame: bytes) -> None:
        """state-crash: remember this connection's register writes; a read of one crashes."""
        if "state-crash" not in self.server.defects or len(frame) < 12:
            return
        code = frame[7]
        address = int.from_bytes(frame[8:10], "big")
        if code == 6:
            value = int.from_bytes(frame[10:12], "big")
            if value != address:  # the datastore holds register i = i: a real change
                self.written[address] = value
        elif code == 16 and len(frame) >= 13:
            for i in range(int.from_bytes(frame[10:12], "big")):
                at = 13 + 2 * i
                if at + 2 <= len(frame) and int.from_bytes(frame[at : at + 2], "big") != address + i:
                    self.written[address + i] = 1
        elif code == 3:
            quantity = int.from_bytes(frame[10:12], "big")
            if any(address <= a < address + quantity for a in self.written):
                sys.stderr.write("faulty_modbus: state-crash: read of a register this connection wrote\n")
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGSEGV)

    def answer(self, frame: bytes) -> bool:
        server = self.server
        kind = None
        triggers = server.faults.get(frame[7])
        if triggers:
            for candidate, address in triggers:
                if address is None or frame[8:10] == address.to_bytes(2, "big"):
                    kind = candidate
                    break
        if kind == "crash":
            sys.stderr.write(f"faulty_modbus: crash triggered by fc={frame[7]}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
        elif kind == "hang":
            time.sleep(server.hang_seconds)
        elif kind == "unresponsive":
            server.unresponsive = True
        elif kind == "degrade":
            server.degraded = True
        elif kind == "reset":
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return False
        if server.unresponsive or kind == "ignore":
            return True
        reply = respond(frame, kind == "specviolation")
        if kind == "malformed":
            reply = corrupt(reply)
        if kind == "slow":
            asyncio.get_running_loop().call_later(server.slow, self.send, reply)
        elif server.degraded:
            asyncio.get_running_loop().call_later(server.delay, self.send, reply)
        else:
            self.transport.write(reply)
        return True

    def send(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)


def check_defects(server: Server, frame: bytes) -> None:
    """The planted defects: each fires on a whole class of inputs, not on one value."""
    code, pdu = frame[7], frame[7:]
    if "overflow-crash" in server.defects and code in (1, 2, 3, 4) and len(pdu) >= 5:
        address, quantity = struct.unpack_from(">HH", pdu, 1)
        check_range(address, quantity)
    if "count-abort" in server.defects and code in (15, 16) and len(pdu) >= 6:
        address, quantity, count = struct.unpack_from(">HHB", pdu, 1)
        if count != ((quantity + 7) // 8 if code == 15 else 2 * quantity):
            sys.stderr.write("terminate called after throwing an instance of 'std::length_error'\n"
                             f"  what():  vector::_M_range_check: __n (which is {count}) >= this->size()\n")
            sys.stderr.flush()
            os.abort()
    if "pair-crash" in server.defects and code == 3 and frame[6] == 0 and len(pdu) >= 5:
        if int.from_bytes(pdu[3:5], "big") == 125:
            sys.stderr.write("faulty_modbus: pair-crash: broadcast read of 125 registers\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
    if "magic-crash" in server.defects and code in (6, 16) and len(pdu) >= 5:
        values = [pdu[3:5]] if code == 6 else [pdu[6 + 2 * i : 8 + 2 * i] for i in range(max(0, (len(pdu) - 6) // 2))]
        if any(v == b"\xde\xad" for v in values):
            debug_hook(0xDEAD)
    if "truncated-write-hang" in server.defects and code in (5, 6, 15, 16) and len(pdu) < (5 if code in (5, 6) else 6):
        wait_for_rest_of_write(server.hang_seconds)


def debug_hook(value: int) -> None:
    hooks: dict[int, str] = {}
    raise OverflowError(hooks[value])  # the KeyError escapes: the vendor's debug hook is not installed


def check_range(address: int, quantity: int) -> None:
    end = address + quantity
    if end > 0x10000:
        raise OverflowError(f"register range {address}..{end - 1} does not fit 16 bits")


def wait_for_rest_of_write(seconds: float) -> None:
    time.sleep(seconds)  # the bug: a blocking wait inside the event loop


def respond(frame: bytes, lenient: bool) -> bytes:
    """The reply a correct server gives; `lenient` skips the quantity/value checks (fault)."""
    code = frame[7]
    pdu = frame[7:]
    n = len(pdu)
    if code in (1, 2, 3, 4):
        if n != 5:
            return exception(frame, 3)
        address, quantity = struct.unpack_from(">HH", pdu, 1)
        if not lenient and not 1 <= quantity <= LIMITS[code]:
            return exception(frame, 3)
        if address + quantity - 1 > LAST_ADDRESS:
            return exception(frame, 2)
        if code <= 2:
            count = (quantity + 7) // 8
            data = bytearray(BIT_PATTERN[address & 1][:count])
            if quantity % 8:
                data[-1] &= (1 << (quantity % 8)) - 1
        else:
            data = struct.pack(f">{quantity}H", *range(address, address + quantity))
        return reply(frame, bytes((code, len(data) & 0xFF)) + bytes(data))
    if code in (5, 6):
        if n != 5:
            return exception(frame, 3)
        address, value = struct.unpack_from(">HH", pdu, 1)
        if code == 5 and not lenient and value not in (0, 0xFF00):
            return exception(frame, 3)
        return frame if address <= LAST_ADDRESS else exception(frame, 2)
    if code in (15, 16):
        if n < 6:
            return exception(frame, 3)
        address, quantity, count = struct.unpack_from(">HHB", pdu, 1)
        need = (quantity + 7) // 8 if code == 15 else 2 * quantity
        if not lenient and (not 1 <= quantity <= LIMITS[code] or count != need or n != 6 + count):
            return exception(frame, 3)
        if address + quantity - 1 > LAST_ADDRESS:
            return exception(frame, 2)
        return reply(frame, pdu[:5])
    if code == 8 and pdu[1:3] == b"\x00\x00":
        return frame
    return exception(frame, 1)


def reply(frame: bytes, pdu: bytes) -> bytes:
    return frame[:4] + (len(pdu) + 1).to_bytes(2, "big") + frame[6:7] + pdu


def exception(frame: bytes, code: int) -> bytes:
    return reply(frame, bytes((frame[7] | 0x80, code)))


def corrupt(good: bytes) -> bytes:
    """Wrong transaction id, and the byte after the function code off by one: for reads that is
    a byte count disagreeing with the data after it."""
    bad = bytearray(good)
    bad[0:2] = ((int.from_bytes(good[0:2], "big") + 1) & 0xFFFF).to_bytes(2, "big")
    if len(bad) > 8:
        bad[8] = (bad[8] + 1) & 0xFF
    return bytes(bad)


def parse_fault(text: str) -> tuple[str, int, int | None]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in KINDS:
        raise argparse.ArgumentTypeError(f"fault '{text}': expected KIND:FC[:ADDR] with KIND one of {', '.join(KINDS)}")
    try:
        numbers = [int(p, 0) for p in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"fault '{text}': FC and ADDR must be numbers") from None
    return parts[0], numbers[0], numbers[1] if len(numbers) == 2 else None


async def serve(port: int, server: Server) -> None:
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), "127.0.0.1", port)
    print("READY", flush=True)
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", type=parse_fault, action="append", default=[], help="KIND:FC[:ADDR], repeatable")
    parser.add_argument("--defect", choices=DEFECTS, action="append", default=[], help="a planted defect, repeatable")
    parser.add_argument("--hang-seconds", type=float, default=3.0)
    parser.add_argument("--degrade-ms", type=float, default=300.0)
    parser.add_argument("--slow-ms", type=float, default=400.0)
    parser.add_argument("--max-clients", type=int, default=40, help="connection-exhaustion: connections served at once")
    parser.add_argument("--peak-file", help="write the most connections ever open at once to this file")
    args = parser.parse_args()
    # The crash fault is deliberate: no core file should litter the test run.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        server = Server(args.fault, args.hang_seconds, args.degrade_ms, args.defect, args.slow_ms)
        server.max_clients = args.max_clients
        server.peak_file = args.peak_file
        asyncio.run(serve(args.port, server))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
