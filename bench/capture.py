"""Capture import and conduit audit speed on a synthetic plant capture of a given size.

The capture is written with dpkt (tests/capture/recording.py): Modbus/TCP polling sessions of
the supervisory zone (hmi-1 reading and writing plc-filtration), enterprise reads through the
gateway, DNP3 class 0 polls of rtu-dosing and IEC 104 interrogations, each connection with a
handshake and FIN, a retransmitted segment every 50 segments and an out-of-order split every 70.
Requests are the protocol modules' own valid encodings with varying transaction ids, addresses
and sequence numbers; replies are short valid-looking frames. Addresses are the three-zone
example's, so the audit maps every flow to its zones.

Prints figures; asserts nothing (benchmarks are not tests). Nothing is sent on any network.

    .venv/bin/python bench/capture.py [--packets 10000] [--packets 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "capture"))
sys.path.insert(0, str(ROOT / "src"))

from recording import Connection, Faults, connection_packets, write_capture  # noqa: E402

from otfuzz.capture.audit import audit_capture  # noqa: E402
from otfuzz.capture.seeds import build_seeds, read_capture  # noqa: E402
from otfuzz.compliance.system import load_system  # noqa: E402
from otfuzz.protocols.dnp3 import DNP3  # noqa: E402
from otfuzz.protocols.iec104 import IEC104  # noqa: E402
from otfuzz.protocols.modbus import ModbusTCP  # noqa: E402

EXAMPLE = ROOT / "examples" / "three-zone" / "system.yaml"
PER_CONNECTION = 100  # request/reply pairs per connection


def plant_packets(target: int) -> list[tuple[float, bytes]]:
    modbus, dnp3, iec104 = ModbusTCP(), DNP3(), IEC104({"ca": "47"})
    mb = {t.name: t for t in modbus.templates()}
    dn = dnp3.templates()[0]
    gi = iec104.templates()[0]
    packets: list[tuple[float, bytes]] = []
    t, n = 1000.0, 0
    while len(packets) < target:
        kind = n % 4
        chunks: list[tuple[float, bool, bytes]] = []
        for i in range(PER_CONNECTION):
            tid = (i + 1) & 0xFFFF
            if kind in (0, 1):
                name = "write_single_register" if kind == 0 and i % 10 == 0 else "read_holding_registers"
                request = mb[name].encode(transaction_id=tid, address=(i * 7) % 1000)
                reply = request[:4] + b"\x00\x05" + request[6:8] + b"\x02\x00\x01" if name != "write_single_register" else request
            elif kind == 2:
                request = dn.encode()
                reply = dnp3.repair(request[:3] + bytes([0x44, request[6], request[7], request[4], request[5]]) + request[8:])
            else:
                request = gi.encode()
                reply = request[:8] + bytes([7]) + request[9:]
            chunks += [(t, True, request), (t + 0.0005, False, reply)]
            t += 0.001
        client, server = [(("10.10.1.20", 40000 + n % 20000), ("10.10.2.10", 502)),
                          (("10.10.0.20", 40000 + n % 20000), ("10.10.0.1", 1502)),
                          (("10.10.1.20", 40000 + n % 20000), ("10.10.2.20", 20000)),
                          (("10.10.1.20", 40000 + n % 20000), ("10.10.2.30", 2404))][kind]
        faults = Faults(retransmit={i for i in range(0, len(chunks), 50)}, reorder={i for i in range(7, len(chunks), 70)})
        packets += connection_packets(Connection(chunks), client, server, 1000 + n * 77_777, faults)
        n += 1
        t += 0.01
    return packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, action="append", help="capture sizes (default 10000 and 100000)")
    args = parser.parse_args()
    model = load_system(EXAMPLE)
    print(f"{'packets':>8} {'flows':>6} {'requests':>9} {'import s':>9} {'pkt/s':>8} {'audit s':>8} {'flagged':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.packets or [10_000, 100_000]:
            path = write_capture(Path(tmp) / f"plant-{size}.pcap", plant_packets(size))
            t0 = time.perf_counter()
            document = build_seeds(read_capture(path))
            t_import = time.perf_counter() - t0
            t0 = time.perf_counter()
            audit = audit_capture(read_capture(path), model)
            t_audit = time.perf_counter() - t0
            c = document["counts"]
            print(f"{c['packets']:>8} {c['flows']:>6} {c['requests']:>9} {t_import:>9.2f} {c['packets'] / t_import:>8.0f} "
                  f"{t_audit:>8.2f} {audit['summary']['flagged']:>8}")


if __name__ == "__main__":
    main()
