"""A minimal asyncio DNP3 outstation that drops every malformed frame without a word.

The DNP3 counterpart of `responder.py`: it does almost no work, so the time a case costs is
almost all otfuzz's, and it is silent where a strict outstation is silent. A link frame with
a wrong header or block CRC, a length below 5, another destination than its address, a
secondary frame or a transport segment that is not FIR+FIN is dropped. A link status request
gets the link status, a link reset or test an ACK. An application request gets a response
from the outstation to the frame's source with the request's sequence number: a class 0 read
an empty one (so the health probe passes), any other read IIN2 "object unknown", a function
that is owed no response nothing, any other function IIN2 "function code not supported".
Bytes that do not start a frame are skipped up to the next 0x05 0x64, as a device's link layer
does. CRCs are dnp3py's, so the framing is not otfuzz's own.

    python bench/dnp3_responder.py --port 20001 [--address 1]
"""

from __future__ import annotations

import argparse
import asyncio

from dnp3.core.crc import compute_crc
from responder import serve  # (bench/ is the script's folder: on the path)

ADDRESS = 1
CLASS_0 = b"\x3c\x01\x06"
NO_RESPONSE = frozenset({0, 6, 8, 10, 12, 33})  # confirm, *_NR functions, freeze-at-time NR...
LINK_ANSWERS = {9: 0x0B, 0: 0x00, 2: 0x00}  # request link status -> status; reset, test -> ACK


def _crc(data: bytes) -> bytes:
    return compute_crc(data).to_bytes(2, "little")


def link_frame(control: int, destination: int, user_data: bytes = b"") -> bytes:
    header = bytes([0x05, 0x64, 5 + len(user_data), control]) + destination.to_bytes(2, "little") + ADDRESS.to_bytes(2, "little")
    out = header + _crc(header)
    for at in range(0, len(user_data), 16):
        block = user_data[at : at + 16]
        out += block + _crc(block)
    return out


class Outstation(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = bytearray()
        self.transport_seq = 0

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while True:
            start = buf.find(b"\x05\x64")
            if start < 0:
                del buf[: max(0, len(buf) - 1)]  # (a 0x05 at the end may start the next frame)
                return
            del buf[:start]
            if len(buf) < 10:
                return
            length = buf[2]
            if length < 5 or bytes(buf[8:10]) != _crc(bytes(buf[:8])):
                del buf[:2]  # a header that cannot be trusted: look for the next start
                continue
            user = length - 5
            size = 10 + user + 2 * ((user + 15) // 16)
            if len(buf) < size:
                return
            raw = bytes(buf[:size])
            del buf[:size]
            self.frame(raw, user)

    def frame(self, raw: bytes, user: int) -> None:
        control, destination, source = raw[3], int.from_bytes(raw[4:6], "little"), int.from_bytes(raw[6:8], "little")
        if destination != ADDRESS or not control & 0x40:
            return  # another outstation's, or not from a master
        data = bytearray()
        for at in range(10, len(raw), 18):
            block = raw[at : min(at + 16, len(raw) - 2)]
            if raw[at + len(block) : at + len(block) + 2] != _crc(block):
                return
            data += block
        function = control & 0x0F
        if function in LINK_ANSWERS:
            self.transport.write(link_frame(LINK_ANSWERS[function], source))
            return
        if function not in (3, 4) or len(data) < 3 or data[0] & 0xC0 != 0xC0:
            return  # not user data, or a segment this outstation does not reassemble
        if function == 3:
            self.transport.write(link_frame(0x00, source))  # ACK the confirmed user data
        app_control, code = data[1], data[2]
        if code in NO_RESPONSE or code >= 0x81:
            return
        if code == 1:
            iin2 = 0 if bytes(data[3:]) == CLASS_0 else 0x02  # object unknown
        else:
            iin2 = 0x01  # function code not supported
        octet = 0xC0 | self.transport_seq
        self.transport_seq = (self.transport_seq + 1) & 0x3F
        fragment = bytes([octet, 0xC0 | (app_control & 0x0F), 0x81, 0x00, iin2])
        self.transport.write(link_frame(0x44, source, fragment))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", type=int, default=1, help="the outstation's link address (default 1)")
    args = parser.parse_args()
    ADDRESS = args.address
    asyncio.run(serve(args.port, Outstation))
